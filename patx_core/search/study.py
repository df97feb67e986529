"""A variant's ``[NAME.search]`` as a resumable Optuna study whose trials never see the test split.

What a trial sees: the candles before the variant's val split ends, and nothing else. The
calendar cutoffs are the judged variant's own (:func:`search_windows`), so the search's val is
exactly the val of the materialization that later judges the winner on test once; the
features, labels and scaler are then rebuilt from the candles before val ends, so a test candle
can move neither a trial's inputs nor its objective (a test pins this with two datasets that
differ only after val).

How it runs: ask-and-tell on a ``JournalFileBackend`` (``study.journal``), ``parallel`` trials
per round; trials of one architecture train together in one :func:`~patx_core.model.fused.train_many`
run. The pruner reads each epoch's val loss (the one val figure every epoch produces; negated when
the objective is maximized, so the pruner's direction is the study's); a fused run stops early
only when all its trials are pruned, since each shares the others' steps. A study killed
mid-round resumes: under the cell's search lock no other process can be running a trial, so a
trial left RUNNING is told FAIL and the study goes on to the asked number of finished (complete
or pruned) trials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import polars as pl

from patx_core.evaluation.formatting import num
from patx_core.data.windows import WindowedData
from patx_core.settings.config import VariantConfig
from patx_core.settings.grid import GridCell
from patx_core.settings.search import SearchConfig, SearchParam, apply_params
from patx_core.storage.locks import exclusive

if TYPE_CHECKING:
    from patx_core.search.outputs import SearchReport

log = logging.getLogger(__name__)

#: How long a search waits for another search of the same cell before giving up: a whole study
#: (hours on CPU), since two searches of one cell take turns rather than fail.
SEARCH_LOCK_TIMEOUT_S = 24 * 3600.0
#: States of a trial that count toward ``trials`` (Optuna's names).
FINISHED_STATES = ("COMPLETE", "PRUNED")


class _AllPruned(Exception):
    """Raised from the epoch callback to stop a fused run once every trial in it is pruned."""


@dataclass(frozen=True)
class TrialOutcome:
    """One finished trial, as ``trials.parquet`` records it."""

    number: int
    params: dict[str, Any]
    state: str  # COMPLETE, PRUNED or FAIL
    objective: float | None
    best_epoch: int | None
    seconds: float | None
    error: str | None = None


def search_windows(raw: pl.DataFrame, variant: VariantConfig) -> WindowedData:
    """Train and val windows of ``variant`` built only from the candles before its val split ends.

    The cutoffs are those :func:`~patx_core.data.splits.split_dataset` gives the variant on
    ``raw``: the judged run's own, so the search's val is exactly its val. They depend only on
    which timestamps have features and a label, never on a value. Everything a trial trains or
    is scored on is then recomputed from the candles before val ends, so no test candle's
    price, feature or label reaches it.
    """
    from patx_core.data.splits import build_feature_table, split_at_cutoffs, split_dataset

    if variant.split.test <= 0:
        raise ValueError(f"variant {variant.name!r} has no test split (split.test = 0): its gate is judged on val, "
                         "the split a search selects on; give it a test split before searching it")
    cutoffs = split_dataset(build_feature_table(raw, variant.data, variant.labels), variant.split,
                            variant.labels, variant.data).cutoffs
    val_end = cutoffs["val"][1]
    before = raw.filter(pl.col("timestamp") < val_end)
    table = build_feature_table(before, variant.data, variant.labels)
    ds = split_at_cutoffs(table, {"train": cutoffs["train"], "val": cutoffs["val"]}, variant.labels, variant.data)
    return ds.to_windows()


def objective_value(objective: str, variant: VariantConfig, model: Any, data: WindowedData,
                    history: dict[str, Any]) -> float:
    """A trained trial's objective on val: ROC-AUC, the best epoch's loss, or the Wilson lower
    bound of precision at the point the val threshold rule picks (its diagnostic point when the
    rule abstains, so an abstaining trial still ranks by how close it came)."""
    from patx_core.evaluation.metrics import classification_metrics
    from patx_core.evaluation.threshold import select_threshold
    from patx_core.model.inference import predict_proba

    if objective == "val_loss":
        return float(history["val_loss"][history["best_epoch"] - 1])
    y = data.split_labels("val")
    p = predict_proba(model, data, "val", batch_size=variant.train.eval_batch_size)
    if objective == "val_roc_auc":
        auc = classification_metrics(y, p, None, confidence=variant.eval.confidence)["roc_auc"]
        return float("nan") if auc is None else float(auc)
    choice = select_threshold(y, p, variant.eval)
    lower = choice.val_precision_lower if not choice.abstains else choice.diagnostic.val_precision_lower  # type: ignore[union-attr]
    return float(lower)


def open_study(journal: Any, name: str, search: SearchConfig) -> Any:
    """The study in ``journal`` (created on first use), with the search's sampler and pruner."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal.parent.mkdir(parents=True, exist_ok=True)
    sampler = (optuna.samplers.TPESampler(seed=search.seed) if search.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=search.seed))
    pruner = optuna.pruners.MedianPruner() if search.pruner == "median" else optuna.pruners.NopPruner()
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(storage=storage, study_name=name, direction=search.direction, sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def finished_count(study: Any) -> int:
    return sum(t.state.name in FINISHED_STATES for t in study.get_trials(deepcopy=False))


def _fail_orphans(study: Any) -> None:
    """Tell FAIL every trial left RUNNING by a killed search (the caller holds the cell's lock)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning("search %s: trial #%d was left running by a search that was stopped; marked FAIL",
                    study.study_name, t.number)
        study.tell(t.number, state=TrialState.FAIL)


def study_fingerprint(cell: GridCell) -> dict[str, Any]:
    """What a study's trials depend on: the variant (its search space and rules included, not how
    many trials or how many at once) and the dataset's input digest, as plain JSON values."""
    from patx_core.data.universe import source_digest

    values = cell.variant.to_dict()
    search = dict(values.pop("search"))
    for key in ("trials", "parallel"):  # asking for more trials, or more at once, continues the same study
        search.pop(key, None)
    return json.loads(json.dumps({**values, "search": search, "input_sha256": source_digest(cell.input_files())}))


def _require_same_study(study: Any, cell: GridCell) -> None:
    """Refuse to resume a study begun for another configuration or other data: its trials would be
    ranked against trials of a different problem."""
    now = study_fingerprint(cell)
    before = study.user_attrs.get("fingerprint")
    if before is None:
        study.set_user_attr("fingerprint", now)
        return
    changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    if changed:
        raise ValueError(f"{cell.paths.search_journal} holds a search of {cell.key} under other settings "
                         f"(changed: {', '.join(changed)}); move {cell.paths.search_dir} away to start a new "
                         "search, or restore the settings to resume it")


def _suggest(trial: Any, p: SearchParam) -> Any:
    if p.choices is not None:
        return trial.suggest_categorical(p.name, list(p.choices))
    if isinstance(p.low, int) and isinstance(p.high, int):
        return trial.suggest_int(p.name, p.low, p.high, log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)  # type: ignore[arg-type]


def run_search(cell: GridCell, *, trials: int | None = None,
               on_trial: Callable[[TrialOutcome], None] | None = None) -> "SearchReport":
    """Run the cell's study until it holds ``trials`` (default ``search.trials``) finished trials,
    then write its outputs (:func:`~patx_core.search.outputs.write_search_outputs`).

    Holds the cell's search lock throughout, so a second search of the same cell waits its turn
    and then finds the study already finished. Raises ``ValueError`` when the variant has no search.
    """
    from patx_core.search.outputs import write_search_outputs

    variant = cell.variant
    search = variant.search
    if search is None:
        raise ValueError(f"variant {variant.name!r} has no [{variant.name}.search] table to search "
                         "(README: \"Search without fooling yourself\")")
    target = trials if trials is not None else search.trials
    if target < 1:
        raise ValueError(f"--trials must be a positive integer, got {target}")
    paths = cell.paths
    with exclusive(paths.search_lock, timeout_s=SEARCH_LOCK_TIMEOUT_S, what=f"{cell.key} search",
                   busy=lambda t: RuntimeError(f"{cell.key}: another search has held {paths.search_lock} for over "
                                               f"{t:g} s; run again when it has finished")):
        study = open_study(paths.search_journal, variant.name, search)
        _require_same_study(study, cell)
        _fail_orphans(study)
        if finished_count(study) >= target:
            log.info("search %s: the study already holds %d finished trials", cell.key, finished_count(study))
        else:
            _run_trials(study, variant, _read_candles(cell), target, on_trial)
        return write_search_outputs(study, cell)


def _read_candles(cell: GridCell) -> pl.DataFrame:
    from patx_core.data.contract import describe_row_requirement, required_rows
    from patx_core.data.universe import read_universe

    v = cell.variant
    settings = (v.data, v.labels, v.split)
    files = cell.input_files()
    universe = read_universe(files, min_rows=required_rows(*settings), symbol=cell.dataset.symbol or None,
                             min_rows_for=f"variant {v.name!r}: {describe_row_requirement(*settings)}")
    return universe.frame


def _run_trials(study: Any, variant: VariantConfig, raw: pl.DataFrame, target: int,
                on_trial: Callable[[TrialOutcome], None] | None) -> int:
    from optuna.trial import TrialState

    from patx_core.model.trainer import resolve_device

    search = variant.search
    assert search is not None
    parallel = search.resolved_parallel(resolve_device(variant.train.device).type)
    windows: dict[tuple[Any, Any], WindowedData] = {}  # trials that share data and labels share windows
    ran = failed = 0
    while (done := finished_count(study)) < target:
        asked = [study.ask() for _ in range(min(parallel, target - done))]
        ready = []
        for trial in asked:
            params = {p.name: _suggest(trial, p) for p in search.space}
            try:
                tuned = apply_params(variant, params)
                key = (tuned.data, tuned.labels)
                if key not in windows:
                    windows[key] = search_windows(raw, tuned)
                ready.append((trial, tuned, windows[key]))
            except ValueError as exc:  # e.g. a searched window longer than the data
                outcome = _tell(study, trial, TrialState.FAIL, None, None, None, str(exc))
                failed += 1
                _report(outcome, on_trial)
        for group in _by_architecture(ready):
            for outcome in _train_group(study, group, search):
                failed += outcome.state == "FAIL"
                _report(outcome, on_trial)
        ran += len(asked)
        if failed >= target and not finished_count(study):
            raise RuntimeError(f"search {study.study_name}: {failed} trials failed and none finished; the last: "
                               f"{_last_error(study)}")
    return ran


def _report(outcome: TrialOutcome, on_trial: Callable[[TrialOutcome], None] | None) -> None:
    value = num(outcome.objective, 4)
    log.info("trial #%d %s: objective %s (best epoch %s, %s s) %s%s", outcome.number, outcome.state, value,
             outcome.best_epoch, None if outcome.seconds is None else round(outcome.seconds, 1), outcome.params,
             f": {outcome.error}" if outcome.error else "")
    if on_trial is not None:
        on_trial(outcome)


def _last_error(study: Any) -> str:
    errors = [t.user_attrs.get("error") for t in study.get_trials(deepcopy=False) if t.user_attrs.get("error")]
    return errors[-1] if errors else "unknown"


def _by_architecture(ready: list[tuple[Any, VariantConfig, WindowedData]]) -> list[list[tuple[Any, VariantConfig,
                                                                                               WindowedData]]]:
    """Trials that can share one fused run: same model shape and the fields ``train_many`` shares."""
    from patx_core.model.fused import SHARED_FIELDS

    groups: dict[tuple[Any, ...], list[tuple[Any, VariantConfig, WindowedData]]] = {}
    for item in ready:
        tuned = item[1]
        groups.setdefault((tuned.model, *(getattr(tuned.train, f) for f in SHARED_FIELDS)), []).append(item)
    return list(groups.values())


def _train_group(study: Any, group: list[tuple[Any, VariantConfig, WindowedData]],
                 search: SearchConfig) -> list[TrialOutcome]:
    from optuna.trial import TrialState

    from patx_core.model.fused import train_many
    from patx_core.model.trainer import NonFiniteLossError

    trials = [t for t, _, _ in group]
    # A trial trains the variant's first seed: the tuned variant's own seed study or ensemble is
    # what the judging materialization trains, once.
    configs = [dataclasses.replace(v.train, seeds=(), seed=v.train.seed_list[0], ensemble=False) for _, v, _ in group]
    sign = 1.0 if search.direction == "minimize" else -1.0
    pruned_at: dict[int, int] = {}

    def on_epoch_end(k: int, epoch: int, metrics: dict[str, float]) -> None:
        if k in pruned_at or search.pruner == "none":
            return
        trials[k].report(sign * metrics["val_loss"], epoch)
        if trials[k].should_prune():
            pruned_at[k] = epoch
            if len(pruned_at) == len(trials):
                raise _AllPruned

    started = time.perf_counter()
    try:
        trained = train_many(group[0][1].model, configs, [d for _, _, d in group], on_epoch_end=on_epoch_end)
    except _AllPruned:
        seconds = time.perf_counter() - started
        return [_tell(study, t, TrialState.PRUNED, None, pruned_at[k], seconds) for k, t in enumerate(trials)]
    except (NonFiniteLossError, ValueError, RuntimeError) as exc:
        return [_tell(study, t, TrialState.FAIL, None, None, None, f"{type(exc).__name__}: {exc}") for t in trials]
    outcomes = []
    for k, ((trial, tuned, data), (model, history)) in enumerate(zip(group, trained)):
        if k in pruned_at:
            outcomes.append(_tell(study, trial, TrialState.PRUNED, None, history["best_epoch"], history["seconds"]))
            continue
        value = objective_value(search.objective, tuned, model, data, history)
        if not math.isfinite(value):
            outcomes.append(_tell(study, trial, TrialState.FAIL, None, history["best_epoch"], history["seconds"],
                                  f"{search.objective} is undefined (val holds one class)"))
            continue
        outcomes.append(_tell(study, trial, TrialState.COMPLETE, value, history["best_epoch"], history["seconds"]))
    return outcomes


def _tell(study: Any, trial: Any, state: Any, value: float | None, best_epoch: int | None, seconds: float | None,
          error: str | None = None) -> TrialOutcome:
    for key, attr in (("best_epoch", best_epoch), ("seconds", seconds), ("error", error)):
        if attr is not None:
            trial.set_user_attr(key, attr)
    study.tell(trial, value if state.name == "COMPLETE" else None, state=state)
    return TrialOutcome(number=trial.number, params=dict(trial.params), state=state.name,
                        objective=value, best_epoch=best_epoch, seconds=seconds, error=error)


def trial_outcomes(study: Any) -> list[TrialOutcome]:
    """Every trial of the study that has ended, in trial order."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in (*FINISHED_STATES, "FAIL"):
            continue
        value = t.value if t.state.name == "COMPLETE" else None
        out.append(TrialOutcome(number=t.number, params=dict(t.params), state=t.state.name, objective=value,
                                best_epoch=t.user_attrs.get("best_epoch"), seconds=t.user_attrs.get("seconds"),
                                error=t.user_attrs.get("error")))
    return out


def best_outcome(study: Any) -> TrialOutcome | None:
    """The best complete trial (lowest number among ties), or None when none completed."""
    done = [o for o in trial_outcomes(study) if o.state == "COMPLETE"]
    if not done:
        return None
    maximize = study.direction.name == "MAXIMIZE"
    return min(done, key=lambda o: (-o.objective if maximize else o.objective, o.number))  # type: ignore[operator]

