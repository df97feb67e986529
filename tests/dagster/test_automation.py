"""Schedules and sensors: the nightly retrain skips unchanged inputs, new landed candles are noticed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import polars as pl

from patx_core.ingest.landing import ingest_dataset
from patx_dagster.schedules import nightly_requests, nightly_retrain
from patx_dagster.sensors import new_candles
from tests.conftest import make_candles
from tests.dagster.harness import DATASET, storage_for

REPO = Path(__file__).resolve().parents[2]


def _nightly_smoke(tmp_path: Path) -> Path:
    """The shipped variants with `smoke` made nightly: the one cell the graph tests evaluate."""
    text = (REPO / "variants.toml").read_text()
    marked = re.sub(r"(\[smoke\]\ndescription = [^\n]*\n)nightly = false", r"\1nightly = true", text)
    assert marked != text
    path = tmp_path / "variants.toml"
    path.write_text(marked)
    return path


def _requests(storage) -> dict[str, object]:
    out = {}
    for r in nightly_requests(storage, "2026-11-28"):
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
    storage = storage_for(planted_raw, data_dir, landing=str(landing), max_staleness="4d",
                          variants_file=_nightly_smoke(tmp_path))

    requests = _requests(storage)
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
    due = _requests(storage)[f"{DATASET}|smoke"]
    assert isinstance(due, dg.RunRequest)

    # Once ingested, the input's digest differs from the evaluated one: still due, under a new run key.
    report = ingest_dataset(storage.grid().datasets[DATASET], data_dir)
    # a landing dataset seeded from one column-less file holds it under the dataset's name
    assert report.ok and report.rows_added == {"nasdaq": 1}
    after = _requests(storage)[f"{DATASET}|smoke"]
    assert isinstance(after, dg.RunRequest) and after.run_key != due.run_key
    assert after.tags["patx/input_sha256"] != never.tags["patx/input_sha256"]


def test_the_schedule_is_off_by_default_at_two_utc():
    assert nightly_retrain.cron_schedule == "0 2 * * *" and nightly_retrain.execution_timezone == "UTC"
    assert nightly_retrain.default_status == dg.DefaultScheduleStatus.STOPPED


def test_new_candles_sensor_requests_one_ingestion_per_set_of_landed_files(tmp_path, planted_raw):
    landing = tmp_path / "landing"
    landing.mkdir()
    storage = storage_for(planted_raw, tmp_path / "data", landing=str(landing))
    assert new_candles.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.build_sensor_context(resources={"storage": storage}) as context:
        first = new_candles(context)
        assert isinstance(first, dg.SkipReason) and "no files" in first.skip_message
        make_candles(5).write_parquet(landing / "a.parquet")
        request = new_candles(context)
        assert isinstance(request, dg.RunRequest) and request.job_name in (None, "ingest_candles")
        context.update_cursor(context.cursor)
        again = new_candles(context)
        assert isinstance(again, dg.SkipReason), "the same waiting files are requested once"
        make_candles(5, seed=2).write_parquet(landing / "b.parquet")
        assert isinstance(new_candles(context), dg.RunRequest)
