"""Ledger and monitor rules that a plausible bug breaks quietly: ``out_of_sample`` is decided by
the row's own candle (not by the store's newest candle at scoring time), and the monitor's
``p0`` is the variant's ``eval.target_precision`` (not the default 0.7)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from patx_core import pipeline
from patx_core.data.contract import validate_raw
from patx_core.data.universe import SYMBOL
from patx_core.serving import predict
from patx_core.serving.ledger import (CHAMPION, LEDGER_SCHEMA, Ledger, Scorer, counted_rows, score_rows,
                                      symbol_outcomes, write_ledger)
from patx_core.settings.config import LabelConfig
from patx_core.settings.variants import get_variant
from tests.cells import make_cell
from tests.synthetic import planted_candles

SHA = "d" * 64


def _fake_predict_frame(checkpoint: Any, raw: pl.DataFrame, *, last: int = 1, threshold: float | None = None,
                        hold_reason: str | None = None, symbol: str | None = None) -> list[dict[str, Any]]:
    """Every one of the ``last`` candles scored 0.9, a buy: the rule under test is the row's flags."""
    return [{"timestamp": t.isoformat(), "probability": 0.9, "threshold": threshold, "signal": "buy", "reason": None}
            for t in raw["timestamp"].tail(last).to_list()]


def test_a_model_first_scored_on_a_store_past_its_data_end_counts_only_the_candles_after_its_data_end(monkeypatch):
    monkeypatch.setattr(predict, "predict_frame", _fake_predict_frame)
    raw = validate_raw(planted_candles(400, seed=5))
    universe = raw.with_columns(pl.lit("s").alias(SYMBOL))
    data_end = raw["timestamp"][349]  # the store has moved 50 candles past the model's training data
    scorer = Scorer(role=CHAMPION, sha256=SHA, checkpoint=None, threshold=0.5, hold_reason=None,  # type: ignore[arg-type]
                    data_end=data_end)
    rows = score_rows(Ledger(pl.DataFrame(schema=LEDGER_SCHEMA)), scorer, universe,
                      symbol_outcomes(universe, LabelConfig()), max_backfill=80,
                      recorded_at=datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert rows.height == 80 and (rows["as_of"] > data_end).all()
    # the 30 backfilled candles up to data_end were in the model's training data: in sample
    assert (rows["out_of_sample"] == (rows["timestamp"] > data_end)).all()
    assert int((~rows["out_of_sample"]).sum()) == 30
    counted = counted_rows(rows, CHAMPION)
    assert counted.height == 50 and counted["timestamp"].min() > data_end


def _variant_at(target: float):  # type: ignore[no-untyped-def]
    smoke = get_variant("smoke")
    return dataclasses.replace(smoke, eval=dataclasses.replace(smoke.eval, target_precision=target))


def _misses(cell_raw: pl.DataFrame, n: int) -> pl.DataFrame:
    """``n`` non-overlapping champion bets on the cell's candles, each a miss."""
    ts = cell_raw["timestamp"].cast(LEDGER_SCHEMA["timestamp"])
    base = datetime(2000, 1, 1, tzinfo=timezone.utc)
    out = []
    for k in range(n):
        t, end = ts[300 + 3 * k], ts[302 + 3 * k]
        out.append({"symbol": "data", "timestamp": t, "model_sha256": SHA, "role": CHAMPION, "probability": 0.9,
                    "threshold": 0.5, "signal": "buy", "reason": None, "entry_price": 1.0, "model_data_end": base,
                    "as_of": t, "recorded_at": t, "out_of_sample": True, "forward": True, "status": "resolved",
                    "label": 0, "trade_return": -0.01, "resolved_at": end})
    return pl.DataFrame(out, schema=LEDGER_SCHEMA)


def _champion_cell(tmp_path: Path, target: float, misses: int):  # type: ignore[no-untyped-def]
    raw = validate_raw(planted_candles(400, seed=6))
    cell = make_cell(tmp_path, raw, _variant_at(target))
    paths = cell.paths
    paths.champion_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    paths.champion_checkpoint.write_bytes(b"not scored here: review_champion(score=False) never loads it")
    paths.champion_manifest.write_text(json.dumps({"checkpoint_sha256": SHA, "threshold": {"value": 0.5},
                                                   "data": {"last_timestamp": raw["timestamp"][299].isoformat()}}))
    paths.ledger.parent.mkdir(parents=True, exist_ok=True)
    write_ledger(paths.ledger, Ledger(_misses(raw, misses)))
    return cell


def test_the_monitor_watches_against_the_variants_own_target_precision(tmp_path):
    # at a target of 0.8 the chart is (7, 3): a miss adds 0.7, so 8 misses reach 5.6 (at 0.7's (6, 4), 4.8)
    seven = pipeline.review_champion(_champion_cell(tmp_path / "seven", 0.8, 7), score=False)
    assert seven.monitor.decision == "watching" and abs(seven.monitor.statistic - 4.9) < 1e-9
    cell = _champion_cell(tmp_path / "eight", 0.8, 8)
    state = pipeline.review_champion(cell, score=False)
    assert state.monitor.decision == "suspended" and state.monitor.alarm_index == 7
    assert abs(state.monitor.statistic - 5.6) < 1e-9
    suspended = json.loads(cell.paths.champion_manifest.read_text())["suspended"]
    assert "p0=0.8" in suspended["reason"] and suspended["n"] == 8
    # the same eight misses against a target of 0.7 keep watching
    assert pipeline.review_champion(_champion_cell(tmp_path / "at07", 0.7, 8), score=False).monitor.decision == "watching"
