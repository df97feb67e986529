"""Walk-forward folds: isolation from later prices, the gate on signal vs noise, concurrency."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from patx_core.settings.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, VariantConfig, WalkForwardConfig
from patx_core.data.splits import build_feature_table
from patx_core.data.contract import validate_raw
from patx_core.evaluation.walk_forward import SIGNAL_MARGIN, WalkForwardResult, fold_table, plan_folds, run_walk_forward
from tests.synthetic import noise_candles, planted_candles

# A tiny model: the isolation and concurrency tests need fold-exact numbers, not a good model.
TINY = VariantConfig(
    name="wf_tiny",
    data=DataConfig(feature_set="relative", window_size=16),
    model=ModelConfig(window_size=16, d_model=16, n_heads=2, n_layers=1, d_ff=32, head_hidden=8),
    train=TrainConfig(max_epochs=3, patience=2, lr=3e-3, batch_size=64, device="cpu"),
    walk_forward=WalkForwardConfig(folds=3, test_candles=150),
)
# The relative_smoke recipe: enough to learn the planted pattern within a fold.
LEARNER = VariantConfig(
    name="wf_learner",
    data=DataConfig(feature_set="relative", window_size=32),
    model=ModelConfig(window_size=32, d_model=32, n_heads=4, n_layers=1, d_ff=64, head_hidden=16),
    train=TrainConfig(max_epochs=12, patience=3, lr=3e-3, batch_size=64, device="cpu"),
    eval=EvalConfig(min_signals=10),
    walk_forward=WalkForwardConfig(folds=3),
)


def _table(raw: pl.DataFrame, variant: VariantConfig) -> pl.DataFrame:
    return build_feature_table(validate_raw(raw), variant.data, variant.labels)


def _comparable(result: WalkForwardResult) -> list[str]:
    """Each fold's row (minus its wall time) and fingerprints, as canonical JSON."""
    out = []
    for r in result.results:
        row = {k: v for k, v in r.row.items() if k != "seconds"}
        out.append(json.dumps({"row": row, "fingerprint": r.fingerprint}, sort_keys=True, default=str))
    return out


def _reprice_after(raw: pl.DataFrame, date, seed: int = 9) -> pl.DataFrame:
    """Every candle from ``date`` on scaled by 1.5 and its own noise factor (OHLC stay consistent:
    the four prices of a candle share the factor)."""
    after = (raw["timestamp"] >= date).to_numpy()
    factor = np.where(after, 1.5 * np.exp(0.02 * np.random.default_rng(seed).standard_normal(raw.height)), 1.0)
    return raw.with_columns(pl.col(c) * factor for c in ("open", "high", "low", "close"))


def test_folds_ending_before_a_price_change_are_byte_identical() -> None:
    raw = planted_candles(1500, seed=3)
    table = _table(raw, TINY)
    plans = plan_folds(table, TINY)
    assert len(plans) == 3
    changed_from = plans[1].test_end  # folds 0 and 1 end before it, fold 2 trades after it
    changed = _table(_reprice_after(raw, changed_from), TINY)
    # The change reaches labels before the date (their horizon crosses it): the purge must hold.
    before = pl.col("timestamp") < changed_from
    assert not table.filter(before)["trade_return"].equals(changed.filter(before)["trade_return"])
    assert plan_folds(changed, TINY) == plans

    a = _comparable(run_walk_forward(table, TINY, concurrency="sequential"))
    b = _comparable(run_walk_forward(changed, TINY, concurrency="sequential"))
    assert a[:2] == b[:2]
    assert a[2] != b[2]  # the change is visible where it should be


def test_fold_table_keeps_no_label_whose_horizon_reaches_the_test_end() -> None:
    table = _table(planted_candles(1500, seed=3), TINY)
    plan = plan_folds(table, TINY)[0]
    cut = fold_table(table, plan, TINY.labels.horizon)
    assert cut["timestamp"].max() < plan.test_end
    labelled = cut.filter(pl.col("label").is_not_null())
    exit_ts = table["timestamp"].gather(labelled["exit_index"])
    assert (exit_ts < plan.test_end).all()
    # exactly the last horizon rows lost their labels (single series: one row per candle)
    h = TINY.labels.horizon
    assert cut["label"].tail(h).is_null().all() and cut["label"][-h - 1] is not None
    assert table.filter(pl.col("timestamp") < plan.test_end)["label"].tail(h).is_not_null().all()


@pytest.mark.slow
def test_planted_pattern_passes_in_most_folds_and_noise_in_none() -> None:
    planted = run_walk_forward(_table(planted_candles(2400, seed=1), LEARNER), LEARNER, concurrency="sequential")
    noise = run_walk_forward(_table(noise_candles(2400, seed=1), LEARNER), LEARNER, concurrency="sequential")
    assert planted.summary["n_folds"] == noise.summary["n_folds"] == 3
    assert planted.summary["gate_pass_rate"] >= 2 / 3, [f["gate_reason"] for f in planted.folds]
    assert noise.summary["gate_passed_folds"] == 0, [f["gate_reason"] for f in noise.folds]
    assert planted.summary["strategy_return"] > planted.summary["buy_and_hold_return"]


@pytest.mark.slow
def test_concurrent_folds_give_the_sequential_numbers() -> None:
    table = _table(planted_candles(1500, seed=3), TINY)
    variant = dataclasses.replace(TINY, walk_forward=WalkForwardConfig(folds=2, test_candles=200))
    sequential = run_walk_forward(table, variant, concurrency="sequential")
    concurrent = run_walk_forward(table, variant, concurrency="processes", workers=2)
    assert concurrent.summary["concurrency"] == "processes" and concurrent.summary["workers"] == 2
    assert _comparable(concurrent) == _comparable(sequential)
    growth = np.prod([1 + f["strategy_return"] for f in concurrent.folds]) - 1
    assert concurrent.summary["strategy_return"] == pytest.approx(growth)
    assert concurrent.equity["fold"].unique().to_list() == [0, 1]
    drop = ("concurrency", "workers", "seconds")
    assert {k: v for k, v in concurrent.summary.items() if k not in drop} == \
           {k: v for k, v in sequential.summary.items() if k not in drop}


def test_derived_test_length_holds_enough_positives_and_ignores_later_prices() -> None:
    raw = planted_candles(2400, seed=1)
    table = _table(raw, LEARNER)
    plans = plan_folds(table, LEARNER)
    assert len(plans) == LEARNER.walk_forward.folds
    test_days = [(p.test_start, p.test_last) for p in plans]
    # consecutive, equal test periods ending at the last labelled candle
    assert all(a[1] < b[0] for a, b in zip(test_days, test_days[1:]))
    assert plans[-1].test_end is None
    first = table.filter(pl.col("timestamp") >= plans[0].test_start)
    samples_in_fold = first.filter(pl.col("timestamp") < plans[0].test_end)
    positives = int(samples_in_fold["label"].sum())
    assert positives >= SIGNAL_MARGIN * LEARNER.eval.min_signals
    # planning reads the calendar and early labels only
    assert plan_folds(_table(_reprice_after(raw, plans[0].test_start), LEARNER), LEARNER) == plans


def test_rolling_mode_trains_on_a_fixed_length_history() -> None:
    table = _table(planted_candles(1500, seed=3), TINY)
    rolling = dataclasses.replace(TINY, walk_forward=WalkForwardConfig(folds=3, test_candles=150, mode="rolling",
                                                                       train_candles=400))
    plans = plan_folds(table, rolling)
    calendar = table["timestamp"]
    for p in plans:
        assert p.val_start > p.history_start
        span = calendar.filter((calendar >= p.history_start) & (calendar < p.test_start)).len()
        assert span == 400
    expanding = plan_folds(table, TINY)
    assert len({p.history_start for p in expanding}) == 1


def test_too_little_data_for_a_fold_names_the_settings() -> None:
    table = _table(planted_candles(1500, seed=3), TINY)
    big = dataclasses.replace(TINY, walk_forward=WalkForwardConfig(test_candles=5000))
    with pytest.raises(ValueError, match="test_candles"):
        plan_folds(table, big)


def test_walk_forward_section_of_a_variant_file() -> None:
    v = VariantConfig.from_dict("x", {"walk_forward": {"folds": 4, "mode": "rolling", "train_candles": 500}})
    assert v.walk_forward == WalkForwardConfig(folds=4, mode="rolling", train_candles=500)
    assert VariantConfig.from_dict("x", {}).walk_forward == WalkForwardConfig()
    with pytest.raises(ValueError, match="unknown field"):
        VariantConfig.from_dict("x", {"walk_forward": {"fold": 4}})
    with pytest.raises(ValueError, match="WalkForwardConfig.mode"):
        WalkForwardConfig(mode="sliding")
    with pytest.raises(ValueError, match="WalkForwardConfig.train_candles"):
        WalkForwardConfig(train_candles=100)
    with pytest.raises(ValueError, match="WalkForwardConfig.min_pass_rate"):
        WalkForwardConfig(min_pass_rate=1.5)


def test_step_writes_the_report_and_the_stability_check(tmp_path) -> None:
    from patx_core import pipeline
    from patx_core.settings.datasets import DatasetConfig
    from patx_core.settings.grid import GridCell
    from patx_core.storage.paths import DatasetPaths

    # one fold runs in this process (no worker start-up); the stitching is pinned by the concurrency test
    variant = dataclasses.replace(TINY, walk_forward=WalkForwardConfig(folds=1, test_candles=200, min_pass_rate=0.0))
    cell = GridCell(dataset=DatasetConfig(name="synthetic", source=str(tmp_path / "candles.parquet")), variant=variant,
                    dataset_paths=DatasetPaths.for_dataset("synthetic", tmp_path))
    step = pipeline.walk_forward(_table(planted_candles(1500, seed=3), variant), cell)
    body = json.loads((cell.paths.report_dir / "walk_forward.json").read_text())
    fold_keys = {"train_start", "train_end", "test_start", "test_end", "threshold", "n_signals", "precision",
                 "precision_ci95", "base_rate", "gate_passed", "roc_auc", "strategy_return", "buy_and_hold_return"}
    assert len(body["folds"]) == 1 and all(fold_keys <= set(f) for f in body["folds"])
    assert {"n_folds", "gate_pass_rate", "precision", "precision_ci95", "n_signals", "base_rate", "strategy_return",
            "buy_and_hold_return", "random_entry_percentile"} <= set(body["summary"])
    md = (cell.paths.report_dir / "walk_forward.md").read_text()
    assert "walk_forward_precision.png" in md and (cell.paths.report_dir / "walk_forward_equity.png").exists()
    assert "data:image/png;base64," in step.markdown
    [check] = step.checks
    assert check.name == "walk_forward_gate_stable" and check.passed  # min_pass_rate 0: always stable


def test_auto_concurrency_trains_side_by_side_only_where_it_pays(monkeypatch):
    import torch

    from patx_core.evaluation import walk_forward as wf
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(wf, "_cores", lambda: 2)
    assert wf._resolve_workers("auto", cpu, 6, None) == 1  # measured: no faster on 2 cores
    assert wf._resolve_workers("processes", cpu, 6, None) == 2
    assert wf._resolve_workers("auto", gpu, 6, None) == 2
    monkeypatch.setattr(wf, "_cores", lambda: 16)
    assert wf._resolve_workers("auto", cpu, 6, None) == 6
    assert wf._resolve_workers("auto", gpu, 12, None) == 8
    assert wf._resolve_workers("sequential", gpu, 12, None) == 1


def test_a_fold_workers_warning_goes_through_the_parents_logging(caplog):
    """A spawned worker has no handler: without forwarding, its warning is a raw stderr line
    outside any log format (as a bare ``select_threshold: …`` was)."""
    import logging

    from patx_core.evaluation.walk_forward import fold_pool

    caplog.set_level(logging.INFO, logger="patx_core")
    with fold_pool(1) as pool:
        pool.submit(logging.getLogger("patx_core.evaluation.metrics").warning, "select_threshold: %s", "abstains").result()
        pool.submit(logging.getLogger("patx_core.model.trainer").info, "Epoch [1/2]").result()
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert ("patx_core.evaluation.metrics", "WARNING", "select_threshold: abstains") in records
    assert not any(m == "Epoch [1/2]" for _, _, m in records), "the folds' INFO lines stay in the worker"


def test_the_fold_precision_plot_explains_its_dotted_no_signal_lines_once_in_the_legend():
    from patx_core.evaluation.figures import plot_fold_precision

    fold = {"gate_passed": False, "precision": None, "precision_ci95": [0.0, 1.0], "n_signals": 0,
            "base_rate": 0.3, "fold": 1, "test_start": "2015-01-01"}
    hit = {**fold, "precision": 0.8, "precision_ci95": [0.6, 0.9], "n_signals": 30, "gate_passed": True, "fold": 3}
    fig = plot_fold_precision([fold, {**fold, "fold": 2}, hit], target=0.7)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels.count("no signal (precision undefined, interval [0, 1])") == 1
    assert "target 0.7" in labels and "base rate" in labels
