"""Honesty rules that a plausible bug could break while every other test stays green.

Each test is named after its rule and builds data on which the rule, and only the rule, decides
the outcome: the threshold's minimum signal count, model selection on val, the stale-checkpoint
guard, the random baseline's costs, the causal window, entry at the close, and chronological
splits.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from patx_core import pipeline
from patx_core.evaluation.backtest import backtest
from patx_core.settings.config import (BacktestConfig, DataConfig, EvalConfig, LabelConfig, ModelConfig, SplitConfig,
                              TrainConfig, VariantConfig)
from patx_core.data.splits import build_feature_table, split_dataset
from patx_core.data.labels import triple_barrier
from patx_core.evaluation.metrics import wilson_interval
from patx_core.evaluation.threshold import select_threshold
from patx_core.settings.grid import GridCell
from patx_core.model.device_step import DeviceWindows
from patx_core.model.trainer import Trainer
from patx_core.data.contract import validate_raw
from patx_core.data.windows import WindowedData
from tests.cells import make_cell
from tests.conftest import make_candles
from tests.synthetic import planted_candles

W = 8
TINY = ModelConfig(window_size=W, d_model=16, n_heads=2, n_layers=1, d_ff=32, head_hidden=8)
COLUMNS = tuple(f"f{i}" for i in range(14))


# ------------------------------------------------------------------- threshold: min_signals


def _dozen_then_noise() -> tuple[np.ndarray, np.ndarray]:
    """Descending val scores: the top 12 are all positive, the 188 below are noise at a ~0.3 base rate.

    12/12 clears a 0.7 Wilson lower bound (0.76) and no deeper cut does, so the answer turns on
    whether 12 signals are enough.
    """
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(12), (rng.random(188) < 0.3).astype(float)]
    return y, np.linspace(0.99, 0.01, y.size)


def test_select_threshold_honours_min_signals() -> None:
    y, p = _dozen_then_noise()
    # The data does what the test needs: only the cuts at <= 12 signals clear the target.
    clearing = [n for n in range(1, y.size + 1) if wilson_interval(int(y[:n].sum()), n)[0] >= 0.7]
    assert max(clearing) == 12

    enough = select_threshold(y, p, EvalConfig(target_precision=0.7, min_signals=12))
    assert enough.reachable and enough.n_signals == 12 and enough.threshold == pytest.approx(p[11])

    # Same scores, a higher minimum: the top dozen no longer counts, and nothing else reaches 0.7.
    strict = select_threshold(y, p, EvalConfig(target_precision=0.7, min_signals=30))
    assert not strict.reachable, f"chose {strict.n_signals} signals with min_signals=30: {strict.explanation}"
    assert strict.rule == "abstain" and strict.threshold is None and ">= 30 signals" in strict.explanation


# ------------------------------------------------------------ early stopping: val, never test


def _train_val_test(*, flip_test: bool) -> WindowedData:
    """Learnable labels on train and val (is feature 0 positive on average over the window?);
    test's labels follow the same rule or, with ``flip_test``, its inverse."""
    rng = np.random.default_rng(0)
    n = 400
    matrix = rng.standard_normal((n, 14)).astype(np.float32)
    ends = np.arange(W - 1, n, dtype=np.int64)
    labels = np.full(n, np.nan, dtype=np.float32)
    labels[ends] = sliding_window_view(matrix[:, 0], W).mean(axis=1) > 0
    split = {"train": ends[:-160], "val": ends[-160:-80], "test": ends[-80:]}
    if flip_test:
        labels[split["test"]] = 1.0 - labels[split["test"]]
    return WindowedData(matrix=matrix, labels=labels, ends=split, window_size=W, feature_columns=COLUMNS)


def test_early_stopping_and_best_epoch_read_val_never_test() -> None:
    config = TrainConfig(device="cpu", max_epochs=20, patience=2, batch_size=16, lr=3e-3)
    runs = {flip: Trainer(TINY, config, _train_val_test(flip_test=flip)) for flip in (False, True)}
    history = {flip: trainer.train() for flip, trainer in runs.items()}
    plain, flipped = history[False], history[True]
    # exact: both trainings run in this process; test labels must not move a single bit
    for key in ("train_loss", "val_loss", "val_accuracy", "val_f1", "best_epoch", "best_val_loss",
                "epochs_run", "stopped_early"):
        assert plain[key] == flipped[key], key
    # Both decisions are exercised: the model learns (a later epoch is best), then stops early.
    # Learning val means learning against the flipped test labels, so test would pick otherwise.
    assert plain["best_epoch"] > 1 and plain["stopped_early"]
    assert min(plain["val_loss"]) < plain["val_loss"][0] - 0.1
    for (name, a), b in zip(runs[False].model.state_dict().items(), runs[True].model.state_dict().values()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------- the stale-checkpoint guard


def _guard_variant(take_profit: float = 2.0) -> VariantConfig:
    window = 16
    return VariantConfig(
        name="guard", data=DataConfig(window_size=window), labels=LabelConfig(take_profit=take_profit),
        model=ModelConfig(window_size=window, d_model=16, n_heads=2, n_layers=1, d_ff=32, head_hidden=8),
        train=TrainConfig(device="cpu", max_epochs=1, batch_size=64, lr=3e-3))


def _build_data(cell: GridCell) -> tuple[pl.DataFrame, pl.DataFrame]:
    """raw -> features -> splits -> windows for ``cell``, written where the training step reads them."""
    table = pipeline.build_features(pipeline.load_raw_prices(cell).value, cell).value
    frame = pipeline.build_splits(table, cell).value
    pipeline.build_windows(frame, cell)
    return table, frame


def test_stale_checkpoint_guard_refuses_a_model_trained_under_other_labels(tmp_path: Path) -> None:
    raw = validate_raw(planted_candles(900, seed=4))
    cell = make_cell(tmp_path, raw, _guard_variant(take_profit=2.0))
    table, frame = _build_data(cell)
    pipeline.train_model(cell)
    # The checkpoint fits its own data: evaluation runs.
    pipeline.evaluate_model(table, frame, cell)

    # The variant's take-profit is edited and the data rebuilt, but the model is not retrained.
    edited = dataclasses.replace(cell, variant=dataclasses.replace(cell.variant, labels=LabelConfig(take_profit=1.5)))
    table, frame = _build_data(edited)
    expected = f"{cell.paths.checkpoint} was trained before settings ['labels'] changed for variant 'guard'"
    with pytest.raises(RuntimeError, match=re.escape(expected)):
        pipeline.evaluate_model(table, frame, edited)


# ------------------------------------------------------------- random baseline: same costs


def test_random_entry_baseline_pays_the_same_cost_as_the_strategy() -> None:
    # Flat prices and zero gross return on every candidate trade: only the 10 bps per side moves money.
    n = 400
    ts = pl.datetime_range(pl.datetime(2020, 1, 1), pl.datetime(2020, 1, 1) + pl.duration(days=n - 1),
                           "1d", time_zone="UTC", eager=True)
    entry = np.arange(n - 3)
    holding = np.full(entry.size, 2)
    samples = pl.DataFrame({"timestamp": ts.gather(entry), "exit_index": entry + holding, "holding": holding,
                            "trade_return": np.zeros(entry.size)})
    prices = pl.DataFrame({"timestamp": ts, "entry_price": np.full(n, 100.0)})
    signal = entry % 10 == 0
    res = backtest(samples, signal, prices, BacktestConfig(cost_bps=10, n_random=200, seed=5))
    cost = 0.999 / 1.001
    assert res.trades == int(signal.sum())
    assert res.total_return == pytest.approx(cost**res.trades - 1)
    full = res.random.full
    assert full.size == 200  # every draw placed all its trades, so every draw is compared
    np.testing.assert_allclose(full, res.total_return, rtol=0, atol=1e-12)
    assert res.strategy_percentile == 50.0


# ------------------------------------------------------------------ windows: rows t-W+1 .. t


def _candle_after_reveals_the_label() -> WindowedData:
    """Column 0 holds the row number; column 1 of row t+1 holds label[t] as +-1, so only a window
    that reaches one candle past its label row could read the label. The last row has no label."""
    n = 60
    rng = np.random.default_rng(2)
    labels = (rng.random(n) < 0.5).astype(np.float32)
    labels[-1] = np.nan
    matrix = rng.standard_normal((n, 14)).astype(np.float32)
    matrix[:, 0] = np.arange(n)
    matrix[1:, 1] = 2.0 * labels[:-1] - 1.0
    ends = np.arange(W - 1, n - 1, dtype=np.int64)
    return WindowedData(matrix=matrix, labels=labels, ends={"train": ends[:36], "val": ends[36:]},
                        window_size=W, feature_columns=COLUMNS)


def _assert_windows_end_at_their_label_row(windows: np.ndarray, ends: np.ndarray, data: WindowedData) -> None:
    for window, t in zip(windows, ends):
        assert window[:, 0].tolist() == list(range(t - W + 1, t + 1)), f"window for label row {t}"
        np.testing.assert_array_equal(window, data.matrix[t - W + 1: t + 1])


def test_window_for_label_row_t_is_rows_t_minus_w_plus_1_to_t(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _candle_after_reveals_the_label()
    for split in data.splits:
        _assert_windows_end_at_their_label_row(data.windows(split), data.ends[split], data)
    everything = np.arange(W - 1, data.matrix.shape[0])
    _assert_windows_end_at_their_label_row(data.all_windows(), everything, data)

    # The trainer's own gather, on the device, as training calls it.
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    gather = DeviceWindows.gather

    def spy(self: DeviceWindows, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = gather(self, idx)
        seen.append((idx.numpy().copy(), x.numpy().copy(), y.numpy().copy()))
        return x, y

    monkeypatch.setattr(DeviceWindows, "gather", spy)
    Trainer(TINY, TrainConfig(device="cpu", max_epochs=1, batch_size=16), data).train()
    assert {int(t) for idx, _, _ in seen for t in idx} == set(data.ends["train"]) | set(data.ends["val"])
    for idx, x, y in seen:
        _assert_windows_end_at_their_label_row(x, idx, data)
        np.testing.assert_array_equal(y, data.labels[idx])


# ------------------------------------------------------------------- entry at the signal's close


def test_trade_return_enters_at_the_signal_candles_close() -> None:
    # Signal candle: opens at 97, closes at 100; the next candle gaps up to open at 100.8.
    # ATR 1: take-profit 102, stop 99, neither touched; out at the close of t+3, 100.7.
    o, h, lo, c = (np.array(col) for col in zip(
        (97.0, 100.5, 96.5, 100.0),
        (100.8, 101.0, 100.2, 100.6),
        (100.5, 100.9, 100.1, 100.4),
        (100.4, 100.9, 100.2, 100.7),
        (100.7, 100.9, 100.3, 100.5),
    ))
    r = triple_barrier(o, h, lo, c, np.ones(5), LabelConfig(horizon=3))
    assert r.exit_price[0] == 100.7
    assert r.trade_return[0] == pytest.approx(100.7 / 100.0 - 1)  # not /97 (open[t]) nor /100.8 (open[t+1])

    # The same identity on every labelled row of a gapped series, through the feature table.
    raw = make_candles(500, seed=3)
    table = build_feature_table(raw, DataConfig(), LabelConfig())
    np.testing.assert_array_equal(table["entry_price"].to_numpy(), raw["close"].to_numpy())
    assert not np.allclose(raw["open"].to_numpy(), raw["close"].to_numpy())  # open and close differ
    done = table.filter(pl.col("label").is_not_null())
    assert done.height > 0
    np.testing.assert_allclose(done["trade_return"].to_numpy(),
                               done["exit_price"].to_numpy() / done["entry_price"].to_numpy() - 1, rtol=1e-12)


# ------------------------------------------------------------------- chronology across splits


def test_splits_are_chronological_train_before_val_before_test() -> None:
    table = build_feature_table(make_candles(1200, seed=7), DataConfig(), LabelConfig())
    frame = split_dataset(table, SplitConfig(train=0.7, val=0.15, test=0.15), LabelConfig(), DataConfig()).frame
    spans = {s: frame.filter(pl.col("split") == s)["timestamp"] for s in ("train", "val", "test")}
    assert all(span.len() > 0 for span in spans.values())
    assert spans["train"].max() < spans["val"].min()
    assert spans["val"].max() < spans["test"].min()


# ------------------------------------------------------------------ promotion: the gate, this file


def _judged_cell(tmp_path: Path, *, passed: bool, reachable: bool = True, judged: bytes | None = None) -> GridCell:
    """A cell whose checkpoint file and evaluation.json are on disk: the gate's verdict, and the
    sha256 of the checkpoint bytes the evaluation judged (default: the file's own)."""
    from patx_core.evaluation.selection import selection_gate
    from patx_core.storage.artifacts import atomic_write_json, sha256_file

    cell = make_cell(tmp_path, make_candles(300, seed=1), _guard_variant())
    paths = cell.paths
    paths.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    paths.checkpoint.write_bytes(b"the trained checkpoint")
    if judged is not None:
        (tmp_path / "judged.pth").write_bytes(judged)
    sha = sha256_file(tmp_path / "judged.pth" if judged is not None else paths.checkpoint)
    gate = {"passed": passed, "split": "test", "precision": 0.9 if passed else 0.6, "n_signals": 40,
            "threshold": 0.6 if reachable else None, "threshold_reachable": reachable,
            "reason": "test precision 0.90 on 40 signals" if passed else "test precision 0.60 — not above 0.7"}
    # as evaluate_model writes it: the selection gate of the same signals, one look on the window
    selection = selection_gate(36 if passed else 24, 40, 1, target=0.7, min_confidence=0.5)
    paths.evaluation_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.evaluation_json, {
        "checks": {"precision_gate": gate, "precision_gate_selection": selection}, "checkpoint_sha256": sha, "dataset": {}, "splits": {}, "metrics": {},
        "threshold": {"value": gate["threshold"], "rule": "wilson_lower_bound" if reachable else "abstain"}})
    return cell


def test_a_model_that_signals_but_fails_the_gate_is_not_promoted(tmp_path: Path) -> None:
    cell = _judged_cell(tmp_path, passed=False, reachable=True)  # a threshold, but precision 0.6
    step = pipeline.promote_champion(cell)
    assert step.metadata["promoted"] is False and "precision gate failed" in step.metadata["reason"]
    assert not cell.paths.champion_checkpoint.exists() and not cell.paths.champion_manifest.exists()
    # the same files with a passed gate are promoted: the refusal above is the gate's alone
    passing = _judged_cell(tmp_path / "pass", passed=True)
    assert pipeline.promote_champion(passing).metadata["promoted"] is True
    assert passing.paths.champion_checkpoint.read_bytes() == b"the trained checkpoint"


def test_promotion_requires_the_evaluation_to_have_judged_this_very_checkpoint(tmp_path: Path) -> None:
    cell = _judged_cell(tmp_path, passed=True, judged=b"an earlier checkpoint")  # retrained since
    step = pipeline.promote_champion(cell)
    assert step.metadata["promoted"] is False and "changed since it was evaluated" in step.metadata["reason"]
    assert not cell.paths.champion_checkpoint.exists()


def test_promotion_needs_the_selection_gate_too(tmp_path: Path) -> None:
    from patx_core.evaluation.selection import selection_gate
    from patx_core.storage.artifacts import atomic_write_json, read_json

    cell = _judged_cell(tmp_path, passed=True)
    body = read_json(cell.paths.evaluation_json)
    # the literal gate passed; 12 models judged on this window leave too little confidence
    body["checks"]["precision_gate_selection"] = selection_gate(30, 40, 12, target=0.7, min_confidence=0.5)
    atomic_write_json(cell.paths.evaluation_json, body)
    step = pipeline.promote_champion(cell)
    assert step.metadata["promoted"] is False
    assert step.metadata["reason"].startswith("selection gate failed: test precision 0.75 on 40 signals would pass "
                                              "alone, but 12 models were judged on this test window")
    # an evaluation written before looks were counted is re-judged, not promoted on the literal gate alone
    del body["checks"]["precision_gate_selection"]
    atomic_write_json(cell.paths.evaluation_json, body)
    assert "has no selection gate" in pipeline.promote_champion(cell).metadata["reason"]
    assert not cell.paths.champion_checkpoint.exists()
