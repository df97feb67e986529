"""input_changed: one answer to "has this cell's input changed since its last evaluation?"."""

from __future__ import annotations

from datetime import datetime, timezone

from patx_core.data.universe import source_digest
from patx_core.ingest.input_change import NO_INPUT, input_changed
from patx_core.storage.artifacts import atomic_write_json
from tests.cells import make_cell
from tests.conftest import make_candles

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)


def _evaluated(cell, digest: str, last: str = "2026-11-27T00:00:00+00:00") -> None:
    atomic_write_json(cell.paths.evaluation_json, {"dataset": {"source_sha256": digest, "last_timestamp": last}})


def test_never_evaluated_then_unchanged_then_changed(tmp_path):
    cell = make_cell(tmp_path, make_candles(50), "smoke", max_staleness="3d")
    digest = source_digest(cell.input_files())
    first = input_changed(cell, NOW)
    assert (first.changed, first.reason, first.digest) == (True, "never evaluated", digest)

    _evaluated(cell, digest)
    same = input_changed(cell, NOW)
    assert not same.changed and same.stale == "" and same.reason.startswith("input unchanged")

    _evaluated(cell, digest, last="2026-11-20T00:00:00+00:00")
    stale = input_changed(cell, NOW)
    assert not stale.changed and stale.stale == "STALE: newest candle 2026-11-20 is 8.1 days old, past max_staleness=3d"

    _evaluated(cell, "0" * 64)
    moved = input_changed(cell, NOW)
    assert moved.changed and moved.reason == f"input sha256 {digest[:12]} differs from the evaluated 000000000000"


def test_files_waiting_in_the_landing_folder_are_a_change_even_for_an_unchanged_input(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    cell = make_cell(tmp_path, make_candles(50), "smoke", landing=str(landing))
    _evaluated(cell, source_digest(cell.input_files()))
    assert not input_changed(cell, NOW).changed
    make_candles(5).write_parquet(landing / "2026-11-28.parquet")
    change = input_changed(cell, NOW)
    assert change.changed and change.pending == 1 and change.reason == "1 file(s) waiting in the landing folder"


def test_a_landing_dataset_without_any_candles_yet_has_no_input_digest(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    cell = make_cell(tmp_path, make_candles(50), "smoke", landing=str(landing))
    cell = type(cell)(dataset=type(cell.dataset)(name=cell.dataset.name, landing=str(landing)),
                      variant=cell.variant, dataset_paths=cell.dataset_paths)
    assert input_changed(cell, NOW).digest == NO_INPUT
