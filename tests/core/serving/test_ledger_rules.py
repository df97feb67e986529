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
from patx_core.serving import champion
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
    seven = champion.review_champion(_champion_cell(tmp_path / "seven", 0.8, 7), score=False)
    assert seven.monitor.decision == "watching" and abs(seven.monitor.statistic - 4.9) < 1e-9
    cell = _champion_cell(tmp_path / "eight", 0.8, 8)
    state = champion.review_champion(cell, score=False)
    assert state.monitor.decision == "suspended" and state.monitor.alarm_index == 7
    assert abs(state.monitor.statistic - 5.6) < 1e-9
    suspended = json.loads(cell.paths.champion_manifest.read_text())["suspended"]
    assert "p0=0.8" in suspended["reason"] and suspended["n"] == 8
    # the reason leads with the run that raised the alarm, then the whole record
    first = _misses(validate_raw(planted_candles(400, seed=6)), 1)["timestamp"][0].date().isoformat()
    assert suspended["reason"].startswith(f"8 of the last 8 bets lost since {first}; CUSUM 5.6 >= 5.6 (p0=0.8, ")
    assert "whole record: live precision 0.000 [" in suspended["reason"]
    # the same eight misses against a target of 0.7 keep watching
    assert champion.review_champion(_champion_cell(tmp_path / "at07", 0.7, 8), score=False).monitor.decision == "watching"


KILL_BETWEEN = """
import os, sys, time
import polars as pl
from patx_core.serving import ledger as L
path = sys.argv[1]
old = L.read_ledger(path)
seen = L.read_seen_candles(path, old)
new = L.Ledger(pl.concat([old.rows, old.rows.tail(1).with_columns(pl.col("symbol") + "x")]), old.revisions)
revised = seen.with_columns(pl.col("close") * 1.01)
real = os.replace
def replace(src, dst):
    if os.path.basename(dst) == "signals.parquet":  # the candles are written: now the commit
        print("candles written", flush=True)
        time.sleep(60)
    real(src, dst)
os.replace = replace
L.write_ledger(path, new, revised)
"""


def test_a_sigkill_between_the_candles_write_and_the_ledger_rename_leaves_the_old_rows_with_their_candles(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from patx_core.serving.ledger import read_ledger, read_seen_candles

    raw = validate_raw(planted_candles(400, seed=6))
    rows = _misses(raw, 4)
    seen = raw.with_columns(pl.lit("data").alias(SYMBOL)).tail(120)
    path = tmp_path / "ledger" / "signals.parquet"
    path.parent.mkdir()
    committed = write_ledger(path, Ledger(rows), seen)
    before = path.read_bytes()
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, "-c", KILL_BETWEEN, str(path)], cwd=repo, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "candles written"
        # the revised candles are on disk under their own name, and no committed ledger names them
        assert len(list(path.parent.glob("candles-*.parquet"))) == 2
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    after = read_ledger(path)
    assert after.candles == committed.candles and after.rows.equals(rows)
    # the rows come back with the very candles they were resolved from: nothing looks revised
    assert read_seen_candles(path, after).equals(seen)
    # the next commit goes through, and the orphan of the killed run is removed with it
    done = write_ledger(path, after, seen.with_columns(pl.col("volume") * 2))
    assert sorted(p.name for p in path.parent.glob("candles-*.parquet")) == sorted({done.candles, committed.candles})
    assert read_seen_candles(path, read_ledger(path))["volume"].equals(seen["volume"] * 2)


def test_the_run_that_raised_the_alarm_starts_after_the_chart_last_stood_at_zero():
    from patx_core.serving.monitor import CusumDesign, alarm_run, run_cusum
    from patx_core.settings.config import MonitorConfig

    design = CusumDesign.build(0.7, MonitorConfig())
    # hits hold the chart at 0; from the 6th outcome on, 9 misses (5.4), a hit (5.0), a miss: 5.6 at the 16th
    result = run_cusum([True] * 5 + [False] * 9 + [True, False, False], design)
    assert result.alarm_index == 15 and alarm_run(result) == (5, 10)
    # a run that dips but never returns to 0 is one run; a return to 0 starts a new one
    result = run_cusum([False] * 3 + [True] * 5 + [False] * 2 + [True] + [False] * 9, design)
    assert result.alarm_index == 18 and alarm_run(result) == (8, 10)
    assert alarm_run(run_cusum([True, False], design)) is None


def test_suspension_and_reinstatement_are_marked_on_the_live_precision_plot_and_in_the_report():
    from patx_core.serving.track_record import build_track_record, monitor_events, plot_precision, render_markdown

    rows = _misses(validate_raw(planted_candles(400, seed=6)), 6)
    ends = rows["resolved_at"].to_list()
    lifted = {"at": "2030-01-01T00:00:00+00:00", "reason": "3 of the last 3 bets lost since 2000-01-01; CUSUM",
              "from": ends[2].isoformat()}
    manifest = {"checkpoint_sha256": SHA, "precision_gate": {},
                "suspended": {"at": "2030-02-01T00:00:00+00:00", "reason": "2 of the last 2 bets lost", "from":
                              ends[5].isoformat()},
                "reinstatements": [{"at": "2030-01-02T00:00:00+00:00", "reason": "checked by hand",
                                    "suspension": lifted, "monitor_restarts_after": ends[3].isoformat()}]}
    events = monitor_events(manifest)
    assert events == [(ends[2], "suspended"), (ends[3], "reinstated"), (ends[5], "suspended")]
    fig = plot_precision(rows, target=0.7, backtest_ci=None, confidence=0.95, events=events)
    ax = fig.axes[0]
    marks = [(line.get_xdata()[0], line.get_label()) for line in ax.get_lines() if line.get_label().startswith(
        ("suspended", "reinstated"))]
    # after the 3rd, 4th and 6th resolved bet
    assert marks == [(3, f"suspended ({ends[2].date()})"), (4, f"reinstated ({ends[3].date()})"),
                     (6, f"suspended ({ends[5].date()})")]
    record = build_track_record(rows, {}, cost_bps=0.0, confidence=0.95, manifest=manifest, monitor=None,
                                revisions=[], cell_key="x|y", generated_at="2030-02-01")
    text = render_markdown(record, [])
    assert "**reinstated** at 2030-01-02T00:00:00 by hand: checked by hand" in text
    assert f"Suspended from the outcome of {ends[2].date()} (3 of the last 3 bets lost" in text
    assert "**Suspended** at 2030-02-01T00:00:00" in text and "2 of the last 2 bets lost" in text


def test_latest_json_says_what_the_champions_ledger_row_recorded_for_its_candle():
    # After a reinstatement the newest candle may have been scored while the champion was suspended:
    # its ledger row says hold, and tonight's fresh score would say buy. The file follows the ledger.
    rows = _misses(validate_raw(planted_candles(400, seed=6)), 2).with_columns(
        pl.Series("signal", ["hold", "buy"]), pl.Series("reason", ["champion suspended: 8 of the last 8", None]))
    t_held, t_buy = (t.isoformat() for t in rows["timestamp"])
    lines = [{"symbol": "data", "timestamp": t_held, "probability": 0.9, "threshold": 0.5, "signal": "buy",
              "reason": None},
             {"symbol": "data", "timestamp": t_buy, "probability": 0.9, "threshold": 0.5, "signal": "buy",
              "reason": None},
             {"symbol": "other", "timestamp": t_held, "probability": 0.2, "threshold": 0.5, "signal": "hold",
              "reason": None}]
    out = champion.as_recorded(lines, rows, SHA)
    assert [line["signal"] for line in out] == ["hold", "buy", "hold"]
    assert "champion suspended: 8 of the last 8" in out[0]["reason"] and "never rewritten" in out[0]["reason"]
    assert out[1:] == lines[1:]
    # another model's rows say nothing about this champion's signal
    assert champion.as_recorded(lines, rows, "e" * 64) == lines


def test_step_metadata_shown_in_the_ui_is_rounded_and_the_artifacts_keep_every_digit(tmp_path):
    cell = _champion_cell(tmp_path, 0.7, 3)
    rows = pl.read_parquet(cell.paths.ledger)
    write_ledger(cell.paths.ledger, Ledger(rows.with_columns(pl.Series("label", [1, 1, 0], dtype=pl.Int8))))
    step = pipeline.track_record(cell)
    assert step.metadata["champion_precision"] == 0.6667  # 2 hits of 3 bets
    [check] = step.checks
    assert check.metadata["live_precision"] == 0.6667
    assert all(round(x, 4) == x for x in check.metadata["live_precision_ci"])
    record = json.loads(cell.paths.track_record_json.read_text())
    assert record["roles"][CHAMPION]["precision"] == 2 / 3
