"""The forward ledger end to end on generated data: one training, then candles fed through a
landing folder batch by batch with a score after each (no retraining).

Two cells share the trained champion: ``broken``, whose planted pattern stops working after
the second batch (the wick and volume spike still come, the rally does not), and ``control``,
where it never stops. Two more, ``bursts`` and ``bursts_broken``, are the same two series with
bursts like the case that once suspended a 0.93 champion: twelve consecutive candles with a
volume spike on which the champion fires again and again, all still open when one move down
resolves them together as misses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pytest

from patx_core import pipeline
from patx_core.serving import champion as champion_life
from patx_core.data.splits import build_feature_table
from patx_core.evaluation.backtest import round_trip_factor
from patx_core.ingest.landing import ingest_dataset
from patx_core.serving.ledger import (CHAMPION, LEDGER_SCHEMA, SHADOW, Ledger, LedgerIntegrityError,
                                      counted_rows, merge_rows, read_ledger, score_rows, symbol_outcomes,
                                      write_ledger)
from patx_core.settings.datasets import DatasetConfig
from patx_core.settings.grid import GridCell, market_variant
from patx_core.settings.variants import get_variant
from patx_core.data.universe import read_universe
from patx_core.storage.artifacts import read_json
from patx_core.storage.paths import DatasetPaths
from tests.synthetic import planted_candles

if TYPE_CHECKING:
    from patx_core.serving.monitor import MonitorResult

REPO = Path(__file__).resolve().parents[3]
HISTORY = 3000  # candles the champion trains on
BATCH = 120
BATCHES = 4
BREAK = HISTORY + 2 * BATCH  # the pattern stops working from the third batch on
DETECTION = 40  # resolved bets: what the monitor's defaults promise at precision 0.35
BURST = 12  # candles of a burst: the champion fires on most, all resolved together
BURSTS = (HISTORY + 150, HISTORY + 400)  # one while the pattern works (in every series), one after BREAK

# One training and five scoring nights per cell: ~50 s of CPU.
pytestmark = pytest.mark.slow


def _cell(root: Path, name: str) -> GridCell:
    dataset = DatasetConfig(name=name, source=str(root / "raw" / f"{name}.parquet"), interval="1d",
                            landing=str(root / "landing" / name), cost_bps=5.0)
    return GridCell(dataset, market_variant(get_variant("smoke"), dataset), DatasetPaths.for_dataset(name, root / "data"))


def _score(cell: GridCell) -> dict:
    """What the `score` job runs for one cell: ingest, latest signal, ledger, track record."""
    report = ingest_dataset(cell.dataset, cell.dataset_paths.data_root)
    assert report.ok, report.metadata()
    signal = pipeline.latest_signal(cell).value
    ledger = pipeline.signal_ledger(cell)
    record = pipeline.track_record(cell)
    return {"signal": signal, "ledger": ledger, "record": record}


def with_bursts(frame: pl.DataFrame, starts: tuple[int, ...]) -> pl.DataFrame:
    """``frame`` with a burst at each start: ``BURST`` flat candles of ordinary range (so the ATR
    and the stops stay ordinary) with 2.5x volume, on which the champion fires again and again,
    then one candle falling 3 %, through every stop at once. The candles after continue from there."""
    o, h, lo, c, v = (frame[col].to_numpy().copy() for col in ("open", "high", "low", "close", "volume"))
    for at in starts:
        level = c[at - 1]
        end = at + BURST
        scale = 0.97 * level / c[end]
        for arr in (o, h, lo, c):
            arr[end:] *= scale
        o[end] = level
        c[at:end], o[at:end] = level, level
        h[at:end], lo[at:end] = level * 1.006, level * 0.994
        v[at:end] *= 2.5
    h, lo = np.maximum(h, np.maximum(o, c)), np.minimum(lo, np.minimum(o, c))
    return frame.with_columns(*(pl.Series(name, arr) for name, arr in
                                (("open", o), ("high", h), ("low", lo), ("close", c), ("volume", v))))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger")
    series = {"broken": planted_candles(HISTORY + BATCHES * BATCH, seed=1, stops_at=BREAK),
              "control": planted_candles(HISTORY + BATCHES * BATCH, seed=1)}
    assert series["broken"][:BREAK].equals(series["control"][:BREAK])
    series["bursts"] = with_bursts(series["control"], BURSTS)
    series["bursts_broken"] = with_bursts(series["broken"], BURSTS)
    assert series["bursts"][:HISTORY].equals(series["control"][:HISTORY])  # the same champion's history
    cells = {}
    for name, frame in series.items():
        (root / "raw").mkdir(exist_ok=True)
        (root / "landing" / name).mkdir(parents=True)
        frame[:HISTORY].write_parquet(root / "raw" / f"{name}.parquet")
        cells[name] = _cell(root, name)
    # Train once, on the early data both series share; the control cell gets the same champion.
    cell = cells["broken"]
    raw = pipeline.load_raw_prices(cell, now=datetime(2010, 1, 1, tzinfo=timezone.utc)).value
    features = pipeline.build_features(raw, cell).value
    splits = pipeline.build_splits(features, cell).value
    pipeline.build_windows(splits, cell)
    pipeline.train_model(cell)
    pipeline.evaluate_model(features, splits, cell)
    promoted = pipeline.promote_champion(cell)
    assert promoted.metadata["promoted"], promoted.metadata["reason"]
    for other in ("control", "bursts", "bursts_broken"):
        for sub in ("checkpoints", "reports", "models", "work"):
            shutil.copytree(cell.paths.root / sub, cells[other].paths.root / sub)
    history = {name: [_score(c)] for name, c in cells.items()}  # the night of the promotion
    for b in range(BATCHES):
        for name, c in cells.items():
            lo = HISTORY + b * BATCH
            series[name][lo:lo + BATCH].write_parquet(Path(c.dataset.landing) / f"{b:03d}.parquet")
            history[name].append(_score(c))
    return {"root": root, "cells": cells, "series": series, "history": history}


def _manifest(cell: GridCell) -> dict:
    return read_json(cell.paths.champion_manifest)


def test_a_champion_that_stops_working_is_suspended_within_the_promised_detection(scenario):
    cell = scenario["cells"]["broken"]
    nights = scenario["history"]["broken"]
    decisions = [n["record"].value["monitor"]["decision"] for n in nights]
    # promoted on the early data, watched while the pattern holds (the first two batches)
    assert decisions[:3] == ["watching"] * 3, decisions
    assert decisions[-1] == "suspended", decisions
    night = decisions.index("suspended")
    sus = _manifest(cell)["suspended"]
    assert set(sus) >= {"at", "reason", "statistic", "threshold", "live_precision", "n"}
    assert sus["statistic"] >= sus["threshold"] == 5.6
    rows = read_ledger(cell.paths.ledger).rows
    stream = champion_life.monitor_stream(rows, _manifest(cell))
    alarm = champion_life.champion_monitor(cell, rows, _manifest(cell)).alarm_index
    before = stream.head(alarm + 1)  # the resolved buy signals the monitor read up to its alarm
    after_break = before.filter(pl.col("timestamp") >= scenario["series"]["broken"]["timestamp"][BREAK])
    assert 0 < after_break.height <= DETECTION, after_break.height
    assert sus["n"] == before.height
    # the night it is suspended no buy is issued, in latest.json or in the ledger's champion rows
    signal = nights[night]["signal"]
    assert all(s["signal"] == "hold" and s["reason"].startswith("champion suspended") for s in signal["signals"])
    tonight = rows.filter((pl.col("role") == CHAMPION) & (pl.col("timestamp") > before["resolved_at"].max()))
    assert tonight.height and (tonight["signal"] == "hold").all()
    assert tonight["reason"].str.starts_with("champion suspended").all()
    # the checkpoint is kept
    assert cell.paths.champion_checkpoint.exists()
    check = nights[night]["record"].checks[0]
    assert check.name == "track_record_live_precision" and not check.passed
    assert set(check.metadata) >= {"statistic", "threshold", "live_precision", "live_precision_ci", "n"}


def test_the_control_series_is_never_suspended_and_earns_a_forward_record(scenario):
    cell = scenario["cells"]["control"]
    records = [n["record"].value for n in scenario["history"]["control"]]
    assert [r["monitor"]["decision"] for r in records] == ["watching"] * (BATCHES + 1)
    assert "suspended" not in _manifest(cell)
    champ = records[-1]["roles"][CHAMPION]
    assert champ["n_resolved"] >= 20 and champ["precision"] > 0.7
    assert champ["consistent_with_backtest"] is True
    assert champ["forward"]["n_scored"] > 0 and champ["forward"]["n_scored"] < champ["n_scored"]
    assert records[-1]["roles"][SHADOW]["n_scored"] == champ["n_scored"]


def test_resolved_rows_equal_the_training_labels_on_the_full_history(scenario):
    cell = scenario["cells"]["control"]
    rows = read_ledger(cell.paths.ledger).rows.filter(pl.col("status") == "resolved")
    assert rows.height > 100
    table = build_feature_table(scenario["series"]["control"], cell.variant.data, cell.variant.labels)
    expected = table.select("timestamp", "label", "trade_return", "exit_index").with_columns(
        pl.col("timestamp").cast(LEDGER_SCHEMA["timestamp"]))
    joined = rows.join(expected, on="timestamp", suffix="_train")
    assert joined.height == rows.height
    # training labels need all `horizon` candles; the ledger resolves a barrier touched earlier too
    end = expected["timestamp"][-cell.variant.labels.horizon]
    assert joined.filter(pl.col("label_train").is_null())["timestamp"].min() >= end
    joined = joined.filter(pl.col("label_train").is_not_null())
    assert (joined["label"] == joined["label_train"]).all()
    keep = round_trip_factor(cell.dataset.cost_bps)
    net = (1.0 + joined["trade_return_train"].to_numpy()) * keep - 1.0
    np.testing.assert_allclose(joined["trade_return"].to_numpy(), net, rtol=0, atol=1e-12)
    ts = scenario["series"]["control"]["timestamp"].cast(LEDGER_SCHEMA["timestamp"])
    assert (joined["resolved_at"] == ts.gather(joined["exit_index"].to_numpy())).all()


def test_out_of_sample_and_forward_flags(scenario):
    rows = read_ledger(scenario["cells"]["control"].paths.ledger).rows
    assert (rows["out_of_sample"] == (rows["timestamp"] > rows["model_data_end"])).all()
    assert rows["out_of_sample"].sum() > 0 and (~rows["out_of_sample"]).sum() > 0  # backfilled in-sample rows
    resolved = rows.filter(pl.col("status") == "resolved")
    # forward: the outcome was decided after the newest candle in the store at scoring time
    assert (resolved["forward"] == (resolved["resolved_at"] > resolved["as_of"])).all()
    late = resolved.filter(pl.col("out_of_sample") & ~pl.col("forward"))
    assert late.height > 0 and resolved.filter(pl.col("forward")).height > 0
    assert rows.filter(pl.col("status") == "open")["forward"].all()


def test_a_rerun_of_the_same_night_adds_nothing_and_leaves_the_file_byte_identical(scenario):
    cell = scenario["cells"]["control"]
    before = cell.paths.ledger.read_bytes()
    step = pipeline.signal_ledger(cell)
    assert step.metadata["added"] == {CHAMPION: 0, SHADOW: 0} and not step.metadata["written"]
    assert cell.paths.ledger.read_bytes() == before


def test_a_changed_probability_for_a_recorded_key_is_refused_and_nothing_is_written(scenario, tmp_path):
    cell = scenario["cells"]["control"]
    ledger = read_ledger(cell.paths.ledger)
    last = ledger.rows.filter(pl.col("role") == CHAMPION).tail(1)
    tampered = last.with_columns(pl.col("probability") + 0.01)
    with pytest.raises(LedgerIntegrityError, match="different probability"):
        merge_rows(ledger, tampered)
    # the nightly probe re-scores each model's last candle: a file whose probability was changed is refused
    original = cell.paths.ledger.read_bytes()
    try:
        idx = ledger.rows.height - 1 - ledger.rows.reverse()["role"].to_list().index(CHAMPION)
        probs = ledger.rows["probability"].to_list()
        probs[idx] += 0.01
        write_ledger(cell.paths.ledger, Ledger(ledger.rows.with_columns(pl.Series("probability", probs)),
                                               ledger.revisions))
        changed = cell.paths.ledger.read_bytes()
        with pytest.raises(LedgerIntegrityError, match="different probability"):
            pipeline.signal_ledger(cell)
        assert cell.paths.ledger.read_bytes() == changed
    finally:
        cell.paths.ledger.write_bytes(original)


def test_suspension_blocks_promotion_until_a_person_reinstates(scenario):
    cell = scenario["cells"]["broken"]
    assert _manifest(cell).get("suspended")
    refused = pipeline.promote_champion(cell)
    assert not refused.metadata["promoted"] and "champion suspended" in refused.metadata["reason"]
    assert "patx ledger reinstate" in refused.metadata["reason"]
    ledger_before = cell.paths.ledger.read_bytes()
    root = scenario["root"]
    datasets = root / "datasets.toml"
    datasets.write_text("".join(
        f'[{c.dataset.name}]\nsource = "{c.dataset.source}"\ninterval = "1d"\nlanding = "{c.dataset.landing}"\n'
        'cost_bps = 5.0\n\n' for c in scenario["cells"].values()))
    env = {**os.environ, "PATX_DATASETS": str(datasets), "PATX_DATA_DIR": str(root / "data")}
    shown = subprocess.run([sys.executable, "-m", "patx_core.cli", "ledger", "broken", "smoke"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "Monitor: suspended" in shown.stdout, shown.stderr
    missing = subprocess.run([sys.executable, "-m", "patx_core.cli", "ledger", "reinstate", "broken", "smoke"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--reason" in missing.stderr
    done = subprocess.run([sys.executable, "-m", "patx_core.cli", "ledger", "reinstate", "broken", "smoke",
                           "--reason", "pattern re-checked by hand"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = _manifest(cell)
    assert "suspended" not in manifest and manifest["reinstated"]["reason"] == "pattern re-checked by hand"
    assert manifest["reinstated"]["suspension"]["statistic"] >= 5.6
    assert cell.paths.ledger.read_bytes() == ledger_before, "reinstating never rewrites ledger rows"
    # the monitor's statistic is reset: it restarts on outcomes decided after the reinstatement
    assert champion_life.review_champion(cell).monitor.n == 0
    again = pipeline.promote_champion(cell)
    assert again.metadata["promoted"], again.metadata["reason"]
    assert _manifest(cell)["reinstated"] == manifest["reinstated"]


def _copy(scenario, tmp_path: Path, name: str) -> GridCell:
    """The scenario's ``name`` cell in a copy of its whole root, free to change."""
    root = tmp_path / "copy"
    shutil.copytree(scenario["root"], root)
    return _cell(root, name)


def test_max_backfill_bounds_a_nights_new_rows_and_skips_the_probe(scenario):
    cell = scenario["cells"]["control"]
    ledger = read_ledger(cell.paths.ledger)
    universe = read_universe(cell.input_files()).frame
    outcomes = symbol_outcomes(universe, cell.variant.labels)
    [champion] = [s for s in champion_life.scorers(cell, _manifest(cell)) if s.role == CHAMPION]
    mine = ledger.rows.filter(pl.col("role") == CHAMPION)
    cut = mine["timestamp"].sort()[-20]  # as if the 19 newest candles had not been scored yet
    new = score_rows(Ledger(ledger.rows.filter(pl.col("timestamp") <= cut)), champion, universe, outcomes,
                     max_backfill=5, recorded_at=datetime.now(timezone.utc))
    newest = universe["timestamp"].cast(LEDGER_SCHEMA["timestamp"]).sort().tail(5)
    assert new["timestamp"].to_list() == newest.to_list()  # exactly max_backfill rows: the newest ones


def test_a_store_revision_of_a_recorded_candle_does_not_stop_the_ledger(scenario, tmp_path):
    cell = _copy(scenario, tmp_path, "control")
    before = read_ledger(cell.paths.ledger).rows
    [store] = cell.input_files()
    candles = pl.read_parquet(store)
    last = candles.height - 1  # the newest candle: every role's last recorded row, re-scored each night
    revised = candles.with_columns(
        pl.when(pl.int_range(pl.len()) == last).then(pl.col("close") * 1.01).otherwise(pl.col("close")).alias("close"))
    revised = revised.with_columns(pl.max_horizontal("high", "close").alias("high"))
    revised.write_parquet(store)
    step = pipeline.signal_ledger(cell)  # a changed probability for that candle would be refused
    assert step.metadata["revisions"] >= 1
    after = read_ledger(cell.paths.ledger).rows
    # the rows recorded before the revision stand as they were: a signal is never rewritten
    kept = after.join(before.select(*("symbol", "timestamp", "model_sha256", "role"), "probability"),
                      on=["symbol", "timestamp", "model_sha256", "role"], suffix="_before")
    assert kept.height == before.height and (kept["probability"] == kept["probability_before"]).all()
    # the next night reads the revised candles as seen: nothing is revised any more, and the rows scored from
    # the old candles stay unprobed (re-scoring them would differ, legitimately)
    assert pipeline.signal_ledger(cell).metadata["revisions"] == 0


def test_a_retrain_cannot_replace_a_champion_before_the_monitor_has_judged_it(scenario, tmp_path):
    # The night that suspends the champion is a retrain night: its ingest resolved the outcomes,
    # and the promotion step is the first to look. It must judge the champion before replacing it.
    cell = _copy(scenario, tmp_path, "broken")
    manifest = _manifest(cell)
    # as the champion stood before that night (the reinstatement test may have run on the original)
    manifest.pop("suspended", None)
    manifest.pop("reinstated", None)
    cell.paths.champion_manifest.write_text(json.dumps(manifest))
    refused = pipeline.promote_champion(cell)
    assert not refused.metadata["promoted"] and "champion suspended" in refused.metadata["reason"]
    assert _manifest(cell)["suspended"]["statistic"] >= 5.6


def test_a_second_writer_of_a_cells_ledger_waits_for_the_first_then_names_the_lock(scenario, tmp_path,
                                                                                   monkeypatch):
    from filelock import FileLock

    from patx_core.serving import ledger as ledger_module

    cell = _copy(scenario, tmp_path, "control")
    before = cell.paths.ledger.read_bytes()
    monkeypatch.setattr(ledger_module, "LOCK_TIMEOUT_S", 0.3)
    with FileLock(cell.paths.ledger_lock):  # another run of the cell, mid-write
        started = time.monotonic()
        with pytest.raises(LedgerIntegrityError, match=r"control\|smoke: another run has held .*ledger\.lock"):
            pipeline.signal_ledger(cell)
        assert time.monotonic() - started >= 0.3
    assert cell.paths.ledger.read_bytes() == before
    assert pipeline.signal_ledger(cell).metadata["written"] is False  # once it is free, the run goes through


def test_reinstating_restarts_the_monitor_after_the_alarm_even_if_the_ledger_missed_its_outcomes(scenario, tmp_path):
    # A run killed between the suspension (manifest) and the ledger write: the outcomes that
    # raised the alarm are not in the ledger. The restart point must still lie after the alarm.
    cell = _copy(scenario, tmp_path, "broken")
    manifest = _manifest(cell)
    if "suspended" not in manifest:  # the reinstatement test ran first on the original: suspend again
        manifest["suspended"] = manifest.pop("reinstated")["suspension"]
        cell.paths.champion_manifest.write_text(json.dumps(manifest))
    alarm = datetime.fromisoformat(manifest["suspended"]["from"])
    ledger = read_ledger(cell.paths.ledger)
    write_ledger(cell.paths.ledger, Ledger(ledger.rows.filter(pl.col("resolved_at").is_null()
                                                              | (pl.col("resolved_at") < alarm)), ledger.revisions))
    reinstated = champion_life.reinstate_champion(cell, "checked by hand")
    assert datetime.fromisoformat(reinstated["reinstated"]["monitor_restarts_after"]) >= alarm


def test_the_live_equity_curve_ends_at_the_reported_strategy_return(scenario):
    from patx_core.serving.track_record import live_equity

    cell = scenario["cells"]["control"]
    record = read_json(cell.paths.track_record_json)
    for role in (CHAMPION, SHADOW):
        rows = counted_rows(read_ledger(cell.paths.ledger).rows, role)
        if role == CHAMPION:
            rows = rows.filter(pl.col("model_sha256") == _manifest(cell)["checkpoint_sha256"])
        times, growth = live_equity(rows)
        assert len(times) > 10 and times == sorted(times)
        # overlapping buys are skipped in both, and symbols equal-weighted in both
        assert growth[-1] - 1.0 == pytest.approx(record["roles"][role]["strategy_return"], rel=1e-12, abs=1e-15)


KILL = """
import os, sys, time
import polars as pl
from patx_core.serving import ledger as L
old = L.read_ledger(sys.argv[1])
new = L.Ledger(pl.concat([old.rows, old.rows.tail(1).with_columns(pl.col("symbol") + "x")]), old.revisions)
real = os.replace
def slow_replace(src, dst):
    print("temp written", flush=True)
    time.sleep(60)
    real(src, dst)
os.replace = slow_replace
L.write_ledger(sys.argv[1], new)
"""


def test_a_sigkill_between_the_temp_write_and_the_rename_leaves_the_old_ledger(scenario, tmp_path):
    path = tmp_path / "signals.parquet"
    shutil.copy(scenario["cells"]["control"].paths.ledger, path)
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILL, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "temp written"
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "the new ledger was being written"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert read_ledger(path).rows.height == pl.read_parquet(path).height


def _signal_by_signal(rows: pl.DataFrame, manifest: dict) -> "MonitorResult":
    """The chart fed every resolved buy, as it was before bets: what the burst would have done."""
    from patx_core.serving.monitor import CusumDesign, run_cusum
    from patx_core.settings.config import MonitorConfig

    buys = counted_rows(rows, CHAMPION).filter((pl.col("model_sha256") == manifest["checkpoint_sha256"])
                                               & (pl.col("signal") == "buy") & (pl.col("status") == "resolved"))
    hits = buys.sort("resolved_at", "timestamp")["label"].to_numpy() == 1
    return run_cusum(hits, CusumDesign.build(0.7, MonitorConfig()))


def test_bursts_of_overlapping_buys_resolved_together_never_suspend_a_champion_that_still_works(scenario):
    from patx_core.serving.ledger import bets

    cell = scenario["cells"]["bursts"]
    records = [n["record"].value for n in scenario["history"]["bursts"]]
    assert [r["monitor"]["decision"] for r in records] == ["watching"] * (BATCHES + 1)
    assert "suspended" not in _manifest(cell)
    rows = read_ledger(cell.paths.ledger).rows
    mine = counted_rows(rows, CHAMPION).filter(pl.col("model_sha256") == _manifest(cell)["checkpoint_sha256"])
    ts = scenario["series"]["bursts"]["timestamp"].cast(LEDGER_SCHEMA["timestamp"])
    placed = bets(mine)
    for at in BURSTS:
        # the case: the champion fired on (nearly) every candle of the burst, and one move resolved them as misses
        burst = mine.filter(pl.col("timestamp").is_between(ts[at], ts[at + BURST - 1]) & (pl.col("signal") == "buy"))
        assert burst.height >= BURST // 2 and (burst["label"] == 0).all(), burst.height
        assert burst["resolved_at"].n_unique() <= 2  # the move, and for the first buy maybe the candle before
        # ... and counts as at most two bets (a buy on the exit candle of the first opens the second)
        assert bets(burst).height <= 2 and placed["n_signals"].max() >= BURST // 2
    champ = records[-1]["roles"][CHAMPION]
    assert champ["n_bets"] < champ["n_signals"] and champ["precision"] > 0.7
    # read signal by signal, these bursts would have suspended this champion
    assert _signal_by_signal(rows, _manifest(cell)).decision == "suspended"


def test_with_bursts_a_champion_whose_pattern_stopped_is_suspended_within_the_promised_bets(scenario):
    cell = scenario["cells"]["bursts_broken"]
    decisions = [n["record"].value["monitor"]["decision"] for n in scenario["history"]["bursts_broken"]]
    assert decisions[:3] == ["watching"] * 3, decisions
    assert decisions[-1] == "suspended", decisions
    rows = read_ledger(cell.paths.ledger).rows
    manifest = _manifest(cell)
    stream = champion_life.monitor_stream(rows, manifest)
    alarm = champion_life.champion_monitor(cell, rows, manifest).alarm_index
    after_break = stream.head(alarm + 1).filter(pl.col("timestamp") >= scenario["series"]["bursts_broken"]["timestamp"][BREAK])
    assert 0 < after_break.height <= DETECTION, after_break.height
    assert manifest["suspended"]["reason"].split(" bets lost since ")[0].split(" of the last ")[0].isdigit()
