"""One observation per bet: overlapping buys of a symbol are one bet, for the live precision, its
interval, the live equity and the monitor alike (hand-made ledger rows; simulated streams with
fixed seeds)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from patx_core import pipeline
from patx_core.serving import champion
from patx_core.serving.ledger import CHAMPION, LEDGER_SCHEMA, SHADOW, bets
from patx_core.serving.monitor import CusumDesign, run_cusum
from patx_core.serving.track_record import live_equity, role_figures
from patx_core.settings.config import EvalConfig, MonitorConfig

P0 = EvalConfig().target_precision
SHA = "c" * 64
MANIFEST = {"checkpoint_sha256": SHA}
T0 = datetime(2006, 1, 2, tzinfo=timezone.utc)
HOUR = timedelta(hours=4)
DETECTION = 40  # bets: what the monitor's defaults promise at precision 0.35


def _row(symbol: str, candle: int, label: int | None, exit_candle: int | None, *, role: str = CHAMPION,
         signal: str = "buy", trade_return: float = 0.0) -> dict:
    ts = T0 + candle * HOUR
    resolved = label is not None
    return {"symbol": symbol, "timestamp": ts, "model_sha256": SHA, "role": role, "probability": 0.3,
            "threshold": 0.25, "signal": signal, "reason": None, "entry_price": 1.0,
            "model_data_end": T0 - HOUR, "as_of": ts, "recorded_at": ts, "out_of_sample": True, "forward": True,
            "status": "resolved" if resolved else "open", "label": label,
            "trade_return": trade_return if resolved else None,
            "resolved_at": T0 + exit_candle * HOUR if resolved else None}


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=LEDGER_SCHEMA)


def stream_rows(outcomes: np.ndarray, sizes: np.ndarray, *, symbol: str = "s", gap: int = 3) -> list[dict]:
    """A symbol's buys in clusters: cluster ``k`` is ``sizes[k]`` buys on consecutive candles, all
    resolved by one move ``gap`` candles after its last buy with the shared label ``outcomes[k]``;
    the next cluster starts on the exit candle (a new position, as in the backtest)."""
    rows, candle = [], 0
    for label, size in zip(outcomes.tolist(), sizes.tolist()):
        exit_candle = candle + size - 1 + gap
        rows += [_row(symbol, candle + j, int(label), exit_candle) for j in range(size)]
        candle = exit_candle
    return rows


def _monitor(rows: list[dict]):  # type: ignore[no-untyped-def]
    design = CusumDesign.build(P0, MonitorConfig())
    stream = champion.monitor_stream(_frame(rows), MANIFEST)
    return run_cusum(stream["label"].to_numpy() == 1, design), stream


def test_a_buy_issued_while_an_earlier_buy_of_its_symbol_and_role_is_open_joins_that_bet():
    rows = [
        _row("a", 0, 1, 5), _row("a", 2, 0, 3), _row("a", 4, 0, 9),  # inside a's first trade: one bet
        _row("a", 5, 0, 6),  # on the exit candle itself: the position is closed, a new bet
        _row("a", 6, None, None), _row("a", 12, 1, 14),  # on that exit candle again; still open: later buys join it
        _row("b", 1, 0, 4), _row("b", 2, 1, 3),  # another symbol is its own walk
        _row("a", 3, 1, 4, signal="hold"),  # a hold is no bet
        _row("a", 2, 1, 7, role=SHADOW),  # another role is its own walk
    ]
    placed = bets(_frame(rows))
    got = [(r["role"], r["symbol"], r["timestamp"], r["n_signals"], r["label"]) for r in placed.iter_rows(named=True)]
    at = [T0 + k * HOUR for k in range(7)]
    assert got == [(CHAMPION, "a", at[0], 3, 1), (CHAMPION, "a", at[5], 1, 0), (CHAMPION, "a", at[6], 2, None),
                   (CHAMPION, "b", at[1], 2, 0), (SHADOW, "a", at[2], 1, 1)]
    assert bets(_frame(rows).filter(pl.col("signal") == "hold")).height == 0


def test_the_live_precision_its_interval_and_the_equity_count_bets_not_signals():
    # three bets: a hit, a cluster of four overlapping misses, a hit
    rows = stream_rows(np.array([1, 0, 1]), np.array([1, 4, 1]))
    rows = [{**r, "trade_return": 0.02 if r["label"] else -0.01} for r in rows]
    fig = role_figures(_frame(rows), {}, cost_bps=0.0, confidence=0.95)
    assert (fig["n_signals"], fig["n_resolved"], fig["signal_hits"]) == (6, 6, 2)
    assert (fig["n_bets"], fig["n_bets_resolved"], fig["n_bets_open"], fig["hits"]) == (3, 3, 0, 2)
    assert fig["precision"] == pytest.approx(2 / 3, abs=1e-12)
    assert fig["signal_precision"] == pytest.approx(2 / 6, abs=1e-12)
    from patx_core.evaluation.metrics import wilson_interval
    assert fig["precision_ci"] == pytest.approx(list(wilson_interval(2, 3, 0.95)), abs=1e-12)
    # the equity compounds the same three bets: 1.02 * 0.99 * 1.02
    times, growth = live_equity(_frame(rows))
    assert len(times) == 3
    assert growth[-1] == pytest.approx(1.02 * 0.99 * 1.02, abs=1e-12)
    assert fig["strategy_return"] == pytest.approx(growth[-1] - 1.0, abs=1e-12)


def test_a_burst_of_ten_overlapping_buys_resolved_together_as_misses_never_suspends_a_0_9_stream():
    rng = np.random.default_rng(7)
    design = CusumDesign.build(P0, MonitorConfig())
    for trial in range(50):
        outcomes = rng.random(400) < 0.9
        sizes = np.ones(400, dtype=np.int64)
        # the case: ten buys on consecutive candles, all still open when one down move resolves them
        burst = int(rng.integers(20, 380))
        outcomes[burst], sizes[burst] = False, 10
        monitor, stream = _monitor(stream_rows(outcomes, sizes))
        assert monitor.decision == "watching", (trial, monitor.statistic)
        assert stream.height == 400
        # fed signal by signal, the same burst adds ten misses, 6.0 failure units at once: an alarm
        assert run_cusum(np.repeat(outcomes, sizes), design).decision == "suspended", trial


def test_a_drop_to_0_35_over_independent_bets_suspends_within_the_promise_despite_clusters():
    rng = np.random.default_rng(11)
    streams, caught = 300, 0
    for _ in range(streams):
        before, after = 200, 60
        outcomes = np.concatenate([rng.random(before) < 0.9, rng.random(after) < 0.35])
        sizes = rng.geometric(0.4, before + after)  # overlapping buys in most bets, before and after
        monitor, stream = _monitor(stream_rows(outcomes, sizes))
        if monitor.alarm_index is not None and before <= monitor.alarm_index < before + DETECTION:
            caught += 1
    # the chain's P(alarm within 40 | 0.35) is 0.966 from S = 0; the stream arrives near 0 at 0.9
    assert caught / streams >= 0.90, caught / streams


def test_on_overlapping_horizon_streams_false_suspensions_at_the_target_are_no_more_frequent_than_independent():
    """Streams of the same length in signals: independent (one buy per bet) against clustered
    (consecutive buys sharing one outcome). De-clustered, a clustered stream holds fewer bets and
    so no more false alarms; counted per signal, its clusters would raise far more."""
    rng = np.random.default_rng(2026)
    design = CusumDesign.build(P0, MonitorConfig())
    streams, length = 300, 1200

    def false_alarm_rate(clustered: bool) -> tuple[float, float]:
        alarms, per_signal = 0, 0
        for _ in range(streams):
            sizes = rng.geometric(0.35, length) if clustered else np.ones(length, dtype=np.int64)
            sizes = sizes[:int(np.searchsorted(np.cumsum(sizes), length)) + 1]
            outcomes = rng.random(sizes.size) < P0
            monitor, _ = _monitor(stream_rows(outcomes, sizes))
            alarms += monitor.decision == "suspended"
            per_signal += run_cusum(np.repeat(outcomes, sizes)[:length], design).decision == "suspended"
        return alarms / streams, per_signal / streams

    independent, _ = false_alarm_rate(False)
    clustered, clustered_per_signal = false_alarm_rate(True)
    se = np.sqrt(independent * (1 - independent) / streams)
    assert clustered <= independent + 3 * se, (clustered, independent)
    # the hazard the walk removes: the same clustered streams watched signal by signal
    assert clustered_per_signal > independent + 3 * se, (clustered_per_signal, independent)
