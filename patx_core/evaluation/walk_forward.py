"""Walk-forward: how the nightly retrain would have done, had it run at past dates.

Fold ``k`` stands at a calendar cutoff shared by every symbol. It applies the variant's own rules
to the data before that cutoff (its *history*) and then trades the next ``test_candles`` calendar
candles (its *test period*) with the model, scaler and threshold it fixed:

    history [train │ val] ── purge ──▶ test period ── purge ──▶ (next fold's test period)

- The history is split into train and val in the variant's ``split.train : split.val``
  proportions (by :func:`~patx_core.data.splits.calendar_cutoffs`, no test inside the history), with
  the usual purge at the val start; the scaler is fitted on the fold's train rows, the model is
  trained with early stopping on its val rows, and the threshold, signals and gate are the
  nightly evaluation's own (:func:`~patx_core.evaluation.gate.judge`, on the fold's val and test
  predictions). A threshold that is unreachable on val abstains: the fold takes no signal and its
  gate fails.
- Purged at the boundaries: no history sample's label horizon reaches the test start, and no test
  sample's horizon reaches past the test end. A fold therefore uses only prices before its test
  end, and the folds' test periods, traded back to back, stitch into one out-of-sample record
  (no trade of one fold is still open when the next begins).

Isolation by construction: each fold works on :func:`fold_table` — the feature table cut at the
fold's test end, with the labels and trade outcomes nulled wherever they would need a later
price. Features are causal, so nothing from after a fold's test period exists in what its
training, scaler, threshold or backtest see; the no-look-ahead test changes every price after a
date and checks that earlier folds come out byte-identical.

Test length: ``walk_forward.test_candles = None`` derives it (:func:`plan_folds`) so that a model
that flags half of the positives still reaches ``eval.min_signals``; ``walk_forward.folds`` is an
upper bound, and fewer folds are planned when fewer such periods fit after ``min_history``.

Concurrency: folds are independent. :func:`fold_groups` cuts the plan into contiguous groups,
:func:`run_fold_group` trains one group (its models fused into one training step), and
:func:`stitch_folds` joins the groups' results in fold order, so an orchestrator can run each
group as its own step on its own machine (the Dagster ``walk_forward`` asset does: one step per
group). Each fold is seeded with the variant's own ``train.seed`` (what the nightly retrain at
that date would have used); a fold's numbers depend on its plan, the data, the device, the torch
thread count of the process it runs in and the group it trains in: fused and one-by-one training
differ only by float rounding (each fused model sees its own data, batch order and dropout
masks), which training can amplify on real data, so the same grouping gives the same numbers.

Rendering is :mod:`patx_core.evaluation.walk_forward_report`. What stays here (planning, the fold
table, training, judging and stitching) is one chain of leak-free rules read top to bottom, kept
in one module on purpose: a rule split from the next would be checked apart from what it guards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import polars as pl

from patx_core.evaluation.backtest import RandomBaseline, portfolio
from patx_core.evaluation.gate import judge
from patx_core.settings.config import SplitConfig, VariantConfig
from patx_core.data.splits import OUTCOME_COLUMNS, processed_mask, calendar_cutoffs, split_at_cutoffs
from patx_core.evaluation.record import SplitPredictions, symbol_backtests
from patx_core.evaluation.risk import risk
from patx_core.data.features import feature_columns
from patx_core.evaluation.metrics import wilson_interval
from patx_core.storage.jsonsafe import iso, json_safe
from patx_core.data.universe import SYMBOL

if TYPE_CHECKING:  # torch loads only in the functions that train or predict, so planning, stitching
    import torch  # and reading fold files (the IO manager, every CLI) start without it

__all__ = ["FoldPlan", "FoldResult", "WalkForwardResult", "fold_groups", "fold_table", "plan_folds", "run_fold",
           "run_fold_group", "run_walk_forward", "stitch_folds", "SIGNAL_MARGIN"]

log = logging.getLogger(__name__)

#: A test period should hold this many times ``eval.min_signals`` positives: a model at the
#: precision target rarely flags every positive, so a period with barely ``min_signals``
#: positives would fail the gate for lack of signals rather than for lack of skill.
SIGNAL_MARGIN = 2.0



# ---------------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class FoldPlan:
    """One fold's calendar: half-open ``[history_start, val_start)`` train, ``[val_start,
    test_start)`` val, ``[test_start, test_end)`` test (``test_end`` None: to the end of the data).
    ``*_last`` are the last candles inside, for reports."""

    index: int
    history_start: datetime
    val_start: datetime
    test_start: datetime
    test_end: datetime | None
    history_last: datetime
    test_last: datetime

    def cutoffs(self) -> dict[str, tuple[datetime, datetime | None]]:
        return {"train": (self.history_start, self.val_start), "val": (self.val_start, self.test_start),
                "test": (self.test_start, self.test_end)}


def _calendar(features: pl.DataFrame, variant: VariantConfig) -> pl.Series:
    """Sorted distinct timestamps of the processed rows (every feature and a label), all symbols."""
    keep = processed_mask(features, feature_columns(variant.data.feature_set))
    return features.filter(keep).get_column("timestamp").unique().sort()


def derived_test_candles(features: pl.DataFrame, variant: VariantConfig, calendar: pl.Series,
                         first_test: int) -> int:
    """Calendar candles a test period needs to hold ``SIGNAL_MARGIN * min_signals`` positives.

    ``ceil(SIGNAL_MARGIN * min_signals / (base_rate * samples_per_candle)) + horizon``: the base
    rate and the samples per calendar candle (≈ symbols) are measured on the processed rows whose
    label horizon ends before the first possible test start — data every fold has — and the
    ``horizon`` candles at a test period's end hold no sample (purged).
    """
    horizon = variant.labels.horizon
    cut_index = max(first_test - horizon, 1)
    cut = calendar[cut_index]
    keep = processed_mask(features, feature_columns(variant.data.feature_set))
    early = features.filter(keep & (pl.col("timestamp") < cut))
    positives = int(early.get_column("label").sum() or 0)
    if early.height == 0 or positives == 0:
        raise ValueError(f"walk_forward: no positive label in the first {cut_index} calendar candles "
                         f"(walk_forward.min_history={variant.walk_forward.min_history}); set "
                         f"walk_forward.test_candles explicitly or change the labels")
    base_rate = positives / early.height
    per_candle = early.height / cut_index
    need = SIGNAL_MARGIN * variant.eval.min_signals / (base_rate * per_candle)
    return int(math.ceil(need)) + horizon


def plan_folds(features: pl.DataFrame, variant: VariantConfig) -> list[FoldPlan]:
    """The folds of ``variant.walk_forward`` on the feature table's shared calendar.

    With ``n`` calendar candles, the first ``ceil(n * min_history)`` are history only; the rest,
    the *tail*, holds the test periods back to back, ending at the last candle. ``test_candles``
    set: ``min(folds, tail // test_candles)`` folds of that length. ``test_candles`` None: the
    shortest useful length ``L`` (:func:`derived_test_candles`) decides how many fit,
    ``min(folds, tail // L)``, and those folds share the whole tail equally (``tail // n_folds``
    candles each; the first fold's history absorbs the remainder). Rolling mode keeps the last
    ``train_candles`` calendar candles before each test start (default: the first fold's
    history length, so every fold trains on as long a stretch as the first).

    E.g. the bundled NASDAQ daily sample (~4,800 processed candles, base rate ~0.3,
    ``min_signals`` 30): ``L`` ≈ 210, the tail of ~2,400 candles fits 11 such periods, so the
    default 6 folds each test ~400 candles (about 1.6 years).
    """
    wf = variant.walk_forward
    calendar = _calendar(features, variant)
    n = calendar.len()
    first_test = int(math.ceil(n * wf.min_history))
    tail = n - first_test
    if wf.test_candles is not None:
        length = wf.test_candles
        n_folds = min(wf.folds, tail // length)
    else:
        shortest = derived_test_candles(features, variant, calendar, first_test)
        n_folds = min(wf.folds, tail // shortest)
        length = tail // n_folds if n_folds else shortest
    if n_folds == 0:
        raise ValueError(f"walk_forward: no fold fits: {n} calendar candles, {first_test} of them history "
                         f"(walk_forward.min_history={wf.min_history}), leave {tail} for test periods of "
                         f"{length} candles; lower walk_forward.test_candles / min_history or use more data")
    share = variant.split.train / (variant.split.train + variant.split.val)
    history_split = SplitConfig(train=share, val=1.0 - share, test=0.0)
    first_start = n - n_folds * length
    train_candles = wf.train_candles or first_start
    plans = []
    for k in range(n_folds):
        s = first_start + k * length
        e = s + length
        h = 0 if wf.mode == "expanding" else max(0, s - train_candles)
        history = calendar[h:s]
        cut = calendar_cutoffs(history, history_split)
        plans.append(FoldPlan(index=k, history_start=calendar[h], val_start=cut["val"][0],
                              test_start=calendar[s], test_end=calendar[e] if e < n else None,
                              history_last=calendar[s - 1], test_last=calendar[min(e, n) - 1]))
    log.info("walk-forward %s: %d fold(s) of %d test candles on %d calendar candles (%s)",
             variant.name, n_folds, length, n, wf.mode)
    return plans


def fold_table(features: pl.DataFrame, plan: FoldPlan, horizon: int) -> pl.DataFrame:
    """The feature table as a fold may see it: rows before its test end, and no label or trade
    outcome whose horizon (row + ``horizon`` in its own symbol) reaches the test end.

    Rows are cut at the end only, so table rows keep their indices (``exit_index`` stays valid).
    """
    if plan.test_end is None:
        return features
    by = [SYMBOL] if SYMBOL in features.columns else []
    label_end = pl.col("timestamp").shift(-horizon)
    label_end = label_end.over(by) if by else label_end
    inside = label_end.is_not_null() & (label_end < plan.test_end)
    outcome = [c for c in ("label", *OUTCOME_COLUMNS) if c in features.columns]
    return (features.filter(pl.col("timestamp") < plan.test_end)
            .with_columns(inside.alias("_inside"))
            .with_columns(pl.when(pl.col("_inside")).then(pl.col(c)).alias(c) for c in outcome)
            .drop("_inside"))


# --------------------------------------------------------------------------------- one fold

@dataclass(frozen=True)
class FoldResult:
    """One fold's report row (``row``) and what stitching and the tests need."""

    row: dict[str, Any]
    equity: pl.DataFrame  # timestamp, strategy, buy_and_hold of the test period (1.0 at its start)
    random: RandomBaseline
    true_positives: int
    n_samples: int
    n_positives: int
    fingerprint: dict[str, str]  # sha256 of the model weights, val and test probabilities
    seconds: float
    periods_per_year: float  # the fold backtest's, to annualize the stitched record


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _weights_sha(model: torch.nn.Module) -> str:
    return _sha(*(v.detach().cpu().numpy() for v in model.state_dict().values()))


@dataclass(frozen=True)
class _FoldData:
    """What a fold trains and trades on: its table, purged splits and windows."""

    plan: FoldPlan
    table: pl.DataFrame
    ds: Any  # patx_core.data.splits.SplitDataset
    windows: Any  # patx_core.data.windows.WindowedData


def _fold_data(features: pl.DataFrame, plan: FoldPlan, variant: VariantConfig) -> _FoldData:
    table = fold_table(features, plan, variant.labels.horizon)
    ds = split_at_cutoffs(table, plan.cutoffs(), variant.labels, variant.data)
    return _FoldData(plan=plan, table=table, ds=ds, windows=ds.to_windows())


def run_fold(features: pl.DataFrame, plan: FoldPlan, variant: VariantConfig, *, device: str = "cpu") -> FoldResult:
    """Train, threshold, trade and judge one fold (see the module docstring for the rules)."""
    from patx_core.model.trainer import Trainer

    start = time.perf_counter()
    fold = _fold_data(features, plan, variant)
    if variant.train.ensemble:
        [(model, history)] = _train_candidates(variant, device, [fold])
        return _judge_fold(fold, variant, model, history, time.perf_counter() - start)
    trainer = Trainer(variant.model, dataclasses.replace(variant.train, device=device), fold.windows)
    history = trainer.train()
    return _judge_fold(fold, variant, trainer.model, history, time.perf_counter() - start)


def _train_candidates(variant: VariantConfig, device: str, folds: list["_FoldData"], *,
                      on_epoch_end: Callable[[int, int, dict[str, float]], None] | None = None
                      ) -> list[tuple[torch.nn.Module, dict[str, Any]]]:
    """Each fold's candidate as the nightly retrain builds it: the seed ensemble when
    ``train.ensemble`` (every fold's every seed in one fused run; the history is the first
    seed's), else the model of ``train.seed``. ``on_epoch_end(model index, epoch, metrics)`` as
    :func:`~patx_core.model.fused.train_many` calls it (fold-major, then seed)."""
    from patx_core.model.ensemble import SeedEnsemble, train_seeds
    from patx_core.model.fused import train_many

    config = dataclasses.replace(variant.train, device=device)
    windows = [f.windows for f in folds]
    if config.ensemble:
        return [(SeedEnsemble.from_members(variant.model, [m for m, _ in members]), members[0][1])
                for members in train_seeds(variant.model, config, windows, on_epoch_end=on_epoch_end)]
    return train_many(variant.model, [config] * len(folds), windows, on_epoch_end=on_epoch_end)


def run_fold_group(features: pl.DataFrame, plans: list[FoldPlan], variant: VariantConfig, *,
                   device: str = "cpu",
                   on_fold_end: Callable[[dict[str, Any]], None] | None = None) -> list[FoldResult]:
    """Every fold of one group, their models trained together in one fused step
    (:func:`~patx_core.model.fused.train_many`); threshold, gate and backtest per fold as
    :func:`run_fold` does. Each fold keeps its own data, batch stream, early stopping and seed
    (the variant's ``train.seed``), so it trains as :func:`run_fold` would, up to float rounding
    (which long runs on real data can amplify; see :mod:`patx_core.model.fused`).
    ``on_fold_end(row)`` after each fold.

    A row's ``seconds`` is the fold's own data preparation and judging plus an equal share of the
    group's fused training time.
    """
    from patx_core.model.progress import Heartbeat, ModelsProgress

    start = time.perf_counter()
    folds = [_fold_data(features, plan, variant) for plan in plans]
    seeds = variant.train.seed_list if variant.train.ensemble else (variant.train.seed,)
    names = [f"fold {p.index}" + (f" seed {s}" if len(seeds) > 1 else "") for p in plans for s in seeds]
    progress = ModelsProgress(f"walk-forward {variant.name}", names, variant.train.max_epochs)
    with Heartbeat(progress.line):
        trained = _train_candidates(variant, device, folds, on_epoch_end=progress.on_epoch_end)
    share = (time.perf_counter() - start) / max(1, len(folds))
    results = []
    for fold, (model, history) in zip(folds, trained):
        judged = time.perf_counter()
        result = _judge_fold(fold, variant, model, history, share)
        result.row["seconds"] += time.perf_counter() - judged
        results.append(dataclasses.replace(result, seconds=result.row["seconds"]))
        if on_fold_end is not None:
            on_fold_end(result.row)
    return results


def _judge_fold(fold: _FoldData, variant: VariantConfig, model: torch.nn.Module, history: dict[str, Any],
                seconds: float) -> FoldResult:
    """Threshold on val, signals, metrics, gate and backtest on test of one trained fold."""
    from patx_core.model.inference import predict_proba

    start = time.perf_counter()
    plan, table, ds, windows = fold.plan, fold.table, fold.ds, fold.windows
    p_val = predict_proba(model, windows, "val")
    p_test = predict_proba(model, windows, "test")
    val_y = windows.split_labels("val").astype(np.int8)
    test = SplitPredictions(samples=ds.frame[ds.sample_rows("test")], prob=p_test)

    # The nightly evaluation's gate: unreachable on val = abstain, no signal, gate failed.
    verdict = judge(val_y, p_val, test.y, p_test, variant.eval, split="test")
    choice, metrics, gate = verdict.choice, verdict.metrics, verdict.gate
    price_cols = [c for c in (SYMBOL, "timestamp", "entry_price") if c in table.columns]
    bt = portfolio(symbol_backtests(test, verdict.signal, table.select(price_cols), variant.backtest))
    row = {
        "fold": plan.index,
        "train_start": iso(plan.history_start), "val_start": iso(plan.val_start),
        "train_end": iso(plan.history_last),
        "test_start": iso(plan.test_start), "test_end": iso(plan.test_last),
        "threshold": choice.threshold, "threshold_reachable": bool(choice.reachable),
        "n_samples": metrics["n_samples"], "n_signals": metrics["n_signals"],
        "precision": metrics["precision"], "precision_ci95": metrics["precision_ci95"],
        "base_rate": metrics["base_rate"], "gate_passed": bool(gate["passed"]), "gate_reason": gate["reason"],
        "roc_auc": metrics["roc_auc"], "trades": bt.trades,
        "strategy_return": bt.total_return, "buy_and_hold_return": bt.buy_and_hold_return,
        "random_entry_percentile": bt.strategy_percentile,
        "train_samples": int(windows.n_sequences("train")), "val_samples": int(windows.n_sequences("val")),
        "epochs": history["epochs_run"], "best_epoch": history["best_epoch"],
    }
    seconds += time.perf_counter() - start
    row["seconds"] = seconds
    log.info("walk-forward fold %d (%s → %s): %s", plan.index, row["test_start"], row["test_end"], gate["reason"])
    return FoldResult(row=row, equity=bt.equity.select("timestamp", "strategy", "buy_and_hold"), random=bt.random,
                      true_positives=int(metrics["true_positives"]), n_samples=int(metrics["n_samples"]),
                      n_positives=int(metrics["n_positives"]),
                      fingerprint={"weights": _weights_sha(model), "val_prob": _sha(p_val), "test_prob": _sha(p_test)},
                      seconds=seconds, periods_per_year=bt.periods_per_year)


# ------------------------------------------------------------------------------- all folds

@dataclass(frozen=True)
class WalkForwardResult:
    """``folds`` rows and ``summary`` (walk_forward.json), the stitched equity curve, and each
    fold's full result."""

    folds: list[dict[str, Any]]
    summary: dict[str, Any]
    equity: pl.DataFrame  # timestamp, strategy, buy_and_hold, fold: the stitched test periods
    results: list[FoldResult] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return json_safe({"folds": self.folds, "summary": self.summary})


def stitch_folds(results: list[FoldResult], variant: VariantConfig, *, concurrency: str, workers: int,
                 seconds: float) -> WalkForwardResult:
    """Pool the folds' signals and compound their test periods in time order.

    ``results`` may come from any number of groups in any order; they are put in fold order here.
    ``concurrency`` (how the folds ran), ``workers`` (how many fold groups) and ``seconds`` (wall
    time) are recorded in the summary as given.
    """
    results = sorted(results, key=lambda r: r.row["fold"])
    if [r.row["fold"] for r in results] != list(range(len(results))):
        raise ValueError(f"stitch_folds: folds {[r.row['fold'] for r in results]} are not 0..{len(results) - 1} "
                         "exactly once each (a fold group is missing or was run twice)")
    rows = [r.row for r in results]
    n_signals = sum(r.row["n_signals"] for r in results)
    tp = sum(r.true_positives for r in results)
    passed = sum(r.row["gate_passed"] for r in results)
    equity = stitched_equity(results)
    ppy = float(np.median([r.periods_per_year for r in results]))
    strategy_return = risk(equity["strategy"].to_numpy(), equity["timestamp"], ppy).total_return
    buy_and_hold_return = risk(equity["buy_and_hold"].to_numpy(), equity["timestamp"], ppy).total_return
    # Random draw k of the stitched record = draw k of every fold, compounded: a random trader
    # with the strategy's trade count in each test period.
    stitched = RandomBaseline.combine([r.random for r in results], "compound")
    trades = sum(r.row["trades"] for r in results)
    wf = variant.walk_forward
    rate = passed / len(results)
    summary = {
        "n_folds": len(results), "mode": wf.mode, "folds_requested": wf.folds,
        "gate_passed_folds": int(passed), "gate_pass_rate": rate, "min_pass_rate": wf.min_pass_rate,
        "stable": rate >= wf.min_pass_rate,
        "precision": tp / n_signals if n_signals else None,
        "precision_ci95": list(wilson_interval(tp, n_signals, variant.eval.confidence)),
        "n_signals": int(n_signals), "true_positives": int(tp),
        "n_samples": sum(r.n_samples for r in results),
        "base_rate": sum(r.n_positives for r in results) / max(1, sum(r.n_samples for r in results)),
        "trades": int(trades), "strategy_return": strategy_return,
        "buy_and_hold_return": buy_and_hold_return,
        "random_entry_percentile": stitched.percentile_of(strategy_return) if trades else None,
        "target_precision": variant.eval.target_precision, "min_signals": variant.eval.min_signals,
        "test_start": rows[0]["test_start"], "test_end": rows[-1]["test_end"],
        "concurrency": concurrency, "workers": workers, "seconds": seconds,
    }
    return WalkForwardResult(folds=rows, summary=summary, equity=equity, results=results)


def stitched_equity(results: list[FoldResult]) -> pl.DataFrame:
    """The folds' test-period curves in time order, each scaled to start where the last one ended
    (timestamp, strategy, buy_and_hold, fold)."""
    curves, scale_s, scale_b = [], 1.0, 1.0
    for r in results:
        eq = r.equity
        curves.append(eq.select("timestamp", pl.col("strategy") * scale_s, pl.col("buy_and_hold") * scale_b,
                                pl.lit(r.row["fold"]).alias("fold")))
        scale_s, scale_b = scale_s * (1.0 + r.row["strategy_return"]), scale_b * (1.0 + r.row["buy_and_hold_return"])
    return pl.concat(curves)


def fold_groups(plans: list[FoldPlan], n_groups: int) -> list[list[FoldPlan]]:
    """``plans`` cut into ``min(n_groups, len(plans))`` contiguous groups whose sizes differ by at
    most one (the first groups take the remainder), e.g. 6 folds in 4 groups: 2, 2, 1, 1."""
    if n_groups < 1:
        raise ValueError(f"fold_groups: n_groups must be >= 1, got {n_groups}")
    n = min(n_groups, len(plans))
    size, extra = divmod(len(plans), n) if n else (0, 0)
    groups, start = [], 0
    for g in range(n):
        end = start + size + (1 if g < extra else 0)
        groups.append(plans[start:end])
        start = end
    return groups


def run_walk_forward(features: pl.DataFrame, variant: VariantConfig, *, device: str | None = None,
                     groups: int = 1,
                     on_fold_end: Callable[[dict[str, Any]], None] | None = None) -> WalkForwardResult:
    """Every fold of ``variant.walk_forward`` on ``features`` (a :func:`build_feature_table` table),
    in this process: planned, cut into ``groups`` fold groups (default one: every fold trained
    fused), each group run, then stitched.

    ``device`` defaults to the variant's ``train.device``. To spread the groups over processes or
    machines, run :func:`run_fold_group` per group wherever it should run and pass every result to
    :func:`stitch_folds` (the Dagster ``walk_forward`` asset does that, one step per group).
    """
    from patx_core.model.trainer import resolve_device

    started = time.perf_counter()
    plans = plan_folds(features, variant)
    dev = str(resolve_device(device or variant.train.device))
    cut = fold_groups(plans, groups)
    log.info("walk-forward %s: %d fold(s) in %d group(s) on %s", variant.name, len(plans), len(cut), dev)
    results = [r for group in cut for r in run_fold_group(features, group, variant, device=dev,
                                                          on_fold_end=on_fold_end)]
    return stitch_folds(results, variant, concurrency="sequential", workers=len(cut),
                        seconds=time.perf_counter() - started)
