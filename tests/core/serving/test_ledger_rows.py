"""Ledger rules on hand-made rows: first-row-counts for the champion, and the monitor's two
promised properties on 2,000 simulated Bernoulli streams (fixed seeds)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl

from patx_core.serving.ledger import CHAMPION, LEDGER_SCHEMA, SHADOW, Ledger, counted_rows, merge_rows
from patx_core.serving.monitor import (CusumDesign, censored_mean, detection_probability, exact_arl, run_cusum,
                                       simulate_run_lengths)
from patx_core.settings.config import EvalConfig, MonitorConfig

STREAMS = 2000
P0 = EvalConfig().target_precision


def _row(ts: datetime, sha: str, prob: float, label: int) -> dict:
    return {"symbol": "s", "timestamp": ts, "model_sha256": sha, "role": CHAMPION, "probability": prob,
            "threshold": 0.5, "signal": "buy", "reason": None, "entry_price": 1.0,
            "model_data_end": datetime(2000, 1, 1, tzinfo=timezone.utc), "as_of": ts, "recorded_at": ts,
            "out_of_sample": True, "forward": True, "status": "resolved", "label": label, "trade_return": 0.0,
            "resolved_at": ts}


def test_for_the_champion_the_first_row_recorded_for_a_candle_counts():
    t1, t2 = (datetime(2001, 1, d, tzinfo=timezone.utc) for d in (1, 2))
    first = pl.DataFrame([_row(t1, "a" * 64, 0.9, 1)], schema=LEDGER_SCHEMA)
    ledger, added = merge_rows(Ledger(first), pl.DataFrame([_row(t1, "b" * 64, 0.2, 0), _row(t2, "b" * 64, 0.8, 1)],
                                                           schema=LEDGER_SCHEMA))
    assert added == 2 and ledger.rows.height == 3  # another model's row is recorded too
    counted = counted_rows(ledger.rows, CHAMPION)
    assert counted.height == 2
    assert counted.filter(pl.col("timestamp") == t1)["model_sha256"].item() == "a" * 64
    # the shadow role counts every model's rows
    shadow = ledger.rows.with_columns(pl.lit(SHADOW).alias("role"))
    assert counted_rows(shadow, SHADOW).height == 3


def test_the_default_monitor_runs_at_least_1000_signals_to_a_false_suspension_at_the_target_precision():
    design = CusumDesign.build(P0, MonitorConfig())
    cap = 20_000  # ~10 ARLs: a censored stream is rare, and counted as such
    runs = simulate_run_lengths(design, P0, streams=STREAMS, max_length=cap, seed=2024)
    arl0 = censored_mean(runs, cap)
    assert arl0 >= 1000, arl0
    exact = exact_arl(design, P0)
    assert exact >= 1000
    # the simulation agrees with the exact Markov-chain ARL within 4 standard errors (~exponential runs)
    assert abs(arl0 - exact) <= 4 * exact / np.sqrt(STREAMS), (arl0, exact)


def test_the_default_monitor_suspends_within_40_signals_in_90_percent_of_streams_at_precision_0_35():
    design = CusumDesign.build(P0, MonitorConfig())
    runs = simulate_run_lengths(design, 0.35, streams=STREAMS, max_length=40, seed=2025)
    detected = float((runs > 0).mean())
    assert detected >= 0.90, detected
    assert abs(detected - detection_probability(design, 0.35, 40)) <= 4 * np.sqrt(0.25 / STREAMS)


def test_the_chart_adds_a_miss_and_forgets_hits_down_to_zero():
    design = CusumDesign.build(P0, MonitorConfig())
    assert (design.up, design.down, design.limit) == (6, 4, 56)
    result = run_cusum([True] * 5 + [False] * 9 + [True, False, False], design)
    # five hits stay at 0; nine misses reach 5.4; a hit takes 0.4 off; two misses cross 5.6 at the 16th
    assert result.alarm_index == 15 and result.decision == "suspended"
    assert result.n == 16 and result.hits == 6
    np.testing.assert_allclose(result.path[:5], 0.0)
    np.testing.assert_allclose(result.path[13:], [5.4, 5.0, 5.6], atol=1e-12)
    assert run_cusum([False] * 9, design).decision == "watching"


def test_a_store_revision_resolves_an_open_row_from_the_revised_candles_and_is_listed_for_a_resolved_one():
    from patx_core.data.universe import SYMBOL
    from patx_core.serving.ledger import dependent_candles, find_revisions, resolve_rows, symbol_outcomes
    from patx_core.settings.config import LabelConfig
    from tests.synthetic import planted_candles

    raw = planted_candles(400, seed=3).with_columns(pl.lit("s").alias(SYMBOL))
    ts = raw["timestamp"]
    rows = pl.DataFrame([_row(ts[300], "a" * 64, 0.9, 1), _row(ts[350], "a" * 64, 0.9, 1)], schema=LEDGER_SCHEMA)
    rows = rows.with_columns(pl.Series("status", ["resolved", "open"]), pl.Series("label", [1, None], dtype=pl.Int8),
                             pl.Series("resolved_at", [ts[302], None]))
    seen = dependent_candles(raw, rows)
    revised = raw.with_columns(pl.when(pl.col("timestamp").is_in([ts[301], ts[351]])).then(pl.col("close") * 1.001)
                               .otherwise(pl.col("close")).alias("close"))
    revisions = find_revisions(seen, dependent_candles(revised, rows))
    assert [(r["timestamp"], r["column"]) for r in revisions] == [(ts[301].isoformat(), "close"),
                                                                  (ts[351].isoformat(), "close")]
    ledger, n = resolve_rows(Ledger(rows), symbol_outcomes(revised, LabelConfig()), cost_bps=5.0, revisions=revisions)
    assert n == 1
    resolved_now = ledger.rows.row(1, named=True)
    assert resolved_now["status"] == "resolved" and "resolved from revised candles" in resolved_now["reason"]
    assert ts[351].isoformat() in resolved_now["reason"]
    kept = ledger.rows.row(0, named=True)
    assert (kept["label"], kept["resolved_at"], kept["reason"]) == (1, ts[302], None), "a resolved row keeps its outcome"
    assert [e["revision"]["timestamp"] for e in ledger.revisions] == [ts[301].isoformat()]
