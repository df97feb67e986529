"""Schedules and sensors: the nightly retrain skips unchanged inputs, new landed candles are noticed."""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl

from patx_core.ingest.landing import ingest_dataset
from patx_dagster.schedules import nightly_requests, nightly_retrain
from patx_dagster.sensors import new_candles
from tests.conftest import make_candles
from tests.dagster.harness import DATASET, grid_for

REPO = Path(__file__).resolve().parents[2]


def _nightly_smoke(tmp_path: Path) -> Path:
    """The shipped variants with `smoke` made nightly: the one cell the graph tests evaluate."""
    path = tmp_path / "variants.toml"
    path.write_text((REPO / "variants.toml").read_text())
    return _nightly_smoke_in(path)


def _requests(grid) -> dict[str, object]:
    out = {}
    for r in nightly_requests(grid, "2026-11-28"):
        if isinstance(r, dg.RunRequest):
            out[str(r.partition_key)] = r
        else:
            out[r.skip_message.split(":")[0]] = r
    return out


def test_nightly_skips_an_unchanged_input_and_retrains_after_a_batch_arrived(tmp_path, good_run, planted_raw):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    landing = tmp_path / "landing"
    landing.mkdir()
    grid = grid_for(planted_raw, data_dir, landing=str(landing), max_staleness="4d",
                    variants_file=_nightly_smoke(tmp_path))

    requests = _requests(grid)
    skip = requests[f"{DATASET}|smoke"]
    assert isinstance(skip, dg.SkipReason), "evaluated on this very input: nothing to learn from a retrain"
    assert "nasdaq|smoke" in skip.skip_message and "unchanged" in skip.skip_message
    # a skipped night runs no raw_prices, so the skip itself says the data went stale
    assert "STALE: newest candle 2009-03-19" in skip.skip_message and "max_staleness=4d" in skip.skip_message
    assert " years old, past" in skip.skip_message, "an age of years reads in years"
    never = requests[f"{DATASET}|baseline"]
    assert isinstance(never, dg.RunRequest), "never evaluated: retrain"
    assert never.tags["patx/input_sha256"] in never.run_key or never.tags["patx/input_sha256"][:16] in never.run_key

    # A day of new candles lands: the pair is due (the run ingests the file first).

    tail = pl.read_parquet(planted_raw)[-1:]
    new = tail.with_columns(pl.col("timestamp") + pl.duration(days=1))
    new.write_parquet(landing / "2026-11-29.parquet")
    due = _requests(grid)[f"{DATASET}|smoke"]
    assert isinstance(due, dg.RunRequest)

    # Once ingested, the input's digest differs from the evaluated one: still due, under a new run key.
    report = ingest_dataset(grid.settings().datasets[DATASET], data_dir)
    # a landing dataset seeded from one column-less file holds it under the dataset's name
    assert report.ok and report.rows_added == {"nasdaq": 1}
    after = _requests(grid)[f"{DATASET}|smoke"]
    assert isinstance(after, dg.RunRequest) and after.run_key != due.run_key
    assert after.tags["patx/input_sha256"] != never.tags["patx/input_sha256"]


def _only_smoke_nightly(tmp_path: Path) -> Path:
    """The shipped variants with `smoke` the only nightly one."""
    text = re.sub(r"(?m)^nightly = \w+\n", "", (REPO / "variants.toml").read_text())
    text = re.sub(r"(?m)^\[(\w+)\]\n", lambda m: f"{m.group(0)}nightly = {str(m.group(1) == 'smoke').lower()}\n",
                  text)
    path = tmp_path / "variants.toml"
    path.write_text(text)
    return path


def _nightly_smoke_in(path: Path) -> Path:
    text = path.read_text()
    marked = re.sub(r"(\[smoke\]\ndescription = [^\n]*\n)nightly = false", r"\1nightly = true", text)
    assert marked != text
    path.write_text(marked)
    return path


def test_the_nightly_schedule_at_its_tick_skips_with_the_reasons_then_requests_once_files_land(
        tmp_path, good_run, planted_raw):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    landing = tmp_path / "landing"
    landing.mkdir()
    grid = grid_for(planted_raw, data_dir, landing=str(landing), max_staleness="4d",
                    variants_file=_only_smoke_nightly(tmp_path))
    tick = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)

    with dg.build_schedule_context(scheduled_execution_time=tick, resources={"grid": grid}) as context:
        skip = nightly_retrain(context)
    assert isinstance(skip, dg.SkipReason), "the only nightly cell was evaluated on this very input"
    assert skip.skip_message.startswith(f"{DATASET}|smoke: input unchanged since its last evaluation")
    assert "not retrained; STALE: newest candle 2009-03-19" in skip.skip_message

    tail = pl.read_parquet(planted_raw)[-1:]
    tail.with_columns(pl.col("timestamp") + pl.duration(days=1)).write_parquet(landing / "next.parquet")
    with dg.build_schedule_context(scheduled_execution_time=tick, resources={"grid": grid}) as context:
        (request,) = nightly_retrain(context)
    assert isinstance(request, dg.RunRequest) and str(request.partition_key) == f"{DATASET}|smoke"
    assert request.run_key.endswith("-1new-2026-11-28"), "one run per cell, input and night"
    assert request.tags["patx/trigger"] == "nightly"
    assert request.tags["patx/input_change"] == "1 file(s) waiting in the landing folder"


def test_new_candles_sensor_starts_score_for_every_nightly_cell_of_the_dataset_once_per_set_of_files(
        tmp_path, planted_raw):
    landing = tmp_path / "landing"
    landing.mkdir()
    grid = grid_for(planted_raw, tmp_path / "data", landing=str(landing))
    nightly = {c.key for c in grid.settings().nightly_cells() if c.dataset.name == DATASET}
    assert nightly and f"{DATASET}|smoke" not in nightly
    assert new_candles.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.build_sensor_context(resources={"grid": grid}) as context:
        first = new_candles(context)
        assert isinstance(first, dg.SkipReason) and "no files" in first.skip_message
        make_candles(5).write_parquet(landing / "a.parquet")
        requests = new_candles(context)
        assert {r.job_name for r in requests} == {"score"}, "each score run ingests the files before scoring"
        assert {str(r.partition_key) for r in requests} == nightly
        assert all(r.tags == {"patx/trigger": "new-candles"} for r in requests)
        context.update_cursor(context.cursor)
        again = new_candles(context)
        assert isinstance(again, dg.SkipReason), "the same waiting files are requested once"
        make_candles(5, seed=2).write_parquet(landing / "b.parquet")
        assert {str(r.partition_key) for r in new_candles(context)} == nightly


def test_new_candles_sensor_only_ingests_a_dataset_without_a_nightly_cell(tmp_path, planted_raw):
    landing = tmp_path / "landing"
    landing.mkdir()
    grid = grid_for(planted_raw, tmp_path / "data", landing=str(landing), nightly=False)
    with dg.build_sensor_context(resources={"grid": grid}) as context:
        make_candles(5).write_parquet(landing / "a.parquet")
        [request] = new_candles(context)
        assert request.job_name == "ingest_candles" and request.partition_key is None
