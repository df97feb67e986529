"""Ingestion: every landed file is merged or quarantined, the store is replaced whole, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from patx_core.ingest import landing as ingest
from patx_core.settings.datasets import DatasetConfig
from patx_core.cli import main as patx
from patx_core.ingest.landing import IngestReport, ingest_all, ingest_dataset, pending_files
from patx_core.ingest.store import store_file
from tests.conftest import make_candles

REPO_ROOT = Path(__file__).resolve().parents[3]
KEYS = ["symbol", "timestamp"]


@pytest.fixture
def candles() -> pl.DataFrame:
    return make_candles(40, seed=7)


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _dataset(landing: Path, **kwargs: object) -> DatasetConfig:
    return DatasetConfig(name="fx", landing=str(landing), **kwargs)  # type: ignore[arg-type]


def _drop(landing: Path, name: str, frame: pl.DataFrame, symbol: str | None = None) -> Path:
    """Write ``frame`` into the landing folder (with a ``symbol`` column when one is given)."""
    if symbol is not None:
        frame = frame.select(pl.lit(symbol).alias("symbol"), pl.all())
    path = landing / name
    if name.endswith(".csv"):
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


def _store(data_root: Path, dataset: str = "fx") -> pl.DataFrame:
    """The store as every reader sees it: all of curated/**/*.parquet."""
    return pl.scan_parquet(str(data_root / dataset / "curated" / "**" / "*.parquet")).collect()


def _long(frame: pl.DataFrame, symbol: str) -> pl.DataFrame:
    return frame.select(pl.lit(symbol).alias("symbol"), pl.all())


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def test_identical_repeat_is_a_duplicate_and_a_no_op(landing: Path, data_root: Path, candles: pl.DataFrame) -> None:
    ds = _dataset(landing)
    _drop(landing, "a.parquet", candles[:20])
    first = ingest_dataset(ds, data_root)
    assert first.rows_added == {"fx": 20} and first.duplicates == 0
    _drop(landing, "b.parquet", candles[15:30])  # 5 stored candles repeated, 10 new ones
    second = ingest_dataset(ds, data_root)
    assert second.rows_added == {"fx": 10}
    assert second.duplicates == 5 and second.revisions == [] and second.ok
    assert _store(data_root).equals(_long(candles[:30], "fx"))
    assert second.metadata()["duplicates_skipped"] == 5


def test_changed_value_refuses_the_whole_batch(landing: Path, data_root: Path, candles: pl.DataFrame) -> None:
    ds = _dataset(landing)
    _drop(landing, "a.parquet", candles[:20])
    ingest_dataset(ds, data_root)
    before = _store(data_root)
    old_close = candles["close"][12]
    midpoint = (pl.col("low") + pl.col("high")) / 2  # a revised close that keeps the candle valid
    revised = candles[10:25].with_columns(pl.when(pl.int_range(pl.len()) == 2).then(midpoint)
                                          .otherwise(pl.col("close")).alias("close"))
    new_close = revised["close"][2]
    _drop(landing, "b.parquet", revised)

    report = ingest_dataset(ds, data_root)

    assert [q.file for q in report.quarantined] == ["b.parquet"]
    message = report.quarantined[0].message
    for part in ("'fx'", candles["timestamp"][12].isoformat(), "close", repr(old_close), repr(new_close)):
        assert part in message
    assert _store(data_root).equals(before)  # the batch's 5 new candles were refused with it
    assert report.rows_added == {} and not report.changed
    assert (landing / "quarantine" / "b.parquet.error.txt").read_text().startswith(message)


def test_allowed_revision_wins_and_is_listed(landing: Path, data_root: Path, candles: pl.DataFrame) -> None:
    ds = _dataset(landing, allow_revisions=True)
    _drop(landing, "a.parquet", candles[:20])
    ingest_dataset(ds, data_root)
    revised = candles[10:25].with_columns((pl.col("volume") + 1.0).alias("volume"))
    _drop(landing, "b.parquet", revised)

    report = ingest_dataset(ds, data_root)

    assert report.ok and report.rows_added == {"fx": 5}
    assert [(r.symbol, r.timestamp, r.column) for r in report.revisions] == [
        ("fx", ts, "volume") for ts in candles["timestamp"][10:20]]
    assert report.revisions[0].old == candles["volume"][10] and report.revisions[0].new == candles["volume"][10] + 1
    assert report.metadata()["revisions"][0] == {
        "symbol": "fx", "timestamp": candles["timestamp"][10].isoformat(), "column": "volume",
        "old": candles["volume"][10], "new": candles["volume"][10] + 1}
    expected = pl.concat([candles[:10], revised])
    assert _store(data_root).equals(_long(expected, "fx"))


def test_bad_batch_is_quarantined_while_later_good_batches_merge(landing: Path, data_root: Path,
                                                                  candles: pl.DataFrame) -> None:
    _drop(landing, "1.parquet", candles[:10])
    _drop(landing, "2.parquet", candles[10:20].with_columns(pl.lit(-1.0).alias("low")))
    _drop(landing, "3.csv", candles[20:30])

    report = ingest_dataset(_dataset(landing), data_root)

    assert report.merged == ["1.parquet", "3.csv"] and report.rows_added == {"fx": 20}
    assert [q.file for q in report.quarantined] == ["2.parquet"]
    assert "prices > 0" in report.quarantined[0].message and "'low'" in report.quarantined[0].message
    assert _store(data_root).equals(_long(pl.concat([candles[:10], candles[20:30]]), "fx"))
    assert _names(landing) == [] and _names(landing / "processed") == ["1.parquet", "3.csv"]
    assert _names(landing / "quarantine") == ["2.parquet", "2.parquet.error.txt"]


def test_batches_are_taken_in_file_name_order(landing: Path, data_root: Path, candles: pl.DataFrame) -> None:
    # The later name is written first, so neither creation time nor directory order gives name order.
    later = candles[:5].with_columns((pl.col("volume") * 2).alias("volume"))
    _drop(landing, "2024-01-02.parquet", later)
    time.sleep(0.01)
    _drop(landing, "2024-01-01.parquet", candles[:5])

    report = ingest_dataset(_dataset(landing, allow_revisions=True), data_root)

    assert report.merged == ["2024-01-01.parquet", "2024-01-02.parquet"]
    assert _store(data_root)["volume"].to_list() == later["volume"].to_list()


def test_first_ingest_seeds_the_store_from_source(tmp_path: Path, landing: Path, data_root: Path,
                                                   candles: pl.DataFrame) -> None:
    source = tmp_path / "eurusd_seed.parquet"  # no symbol column: the dataset's name is the one symbol
    candles[:30].write_parquet(source)
    ds = _dataset(landing, source=str(source))
    _drop(landing, "new.parquet", candles[25:40])  # no symbol column either: the dataset's one symbol

    report = ingest_dataset(ds, data_root)

    assert report.seeded_from == [str(source)] and report.changed and report.seeded_rows == 30
    assert report.rows_added == {"fx": 10} and report.duplicates == 5
    assert _store(data_root).equals(_long(candles, "fx")), "a file's stem (eurusd_seed) is no market's name"
    assert report.newest == {"fx": candles["timestamp"][-1]}
    assert report.summary_line() == (f"fx: seeded the curated store with 30 candle(s) from {source}; "
                                     "1 file(s) merged, 10 row(s) added, 5 duplicate(s) skipped")


def test_the_first_ingest_seeds_the_store_with_an_empty_landing_folder_under_the_named_symbol(
        tmp_path: Path, landing: Path, data_root: Path, candles: pl.DataFrame) -> None:
    source = tmp_path / "eurusd_seed.parquet"
    candles.write_parquet(source)
    ds = _dataset(landing, source=str(source), symbol="EURUSD")

    report = ingest_dataset(ds, data_root)

    assert report.changed and report.seeded_from == [str(source)] and report.merged == []
    assert _store(data_root).equals(_long(candles, "EURUSD"))
    assert report.summary_line() == f"fx: seeded the curated store with 40 candle(s) from {source}"
    before = _snapshot(data_root)
    again = ingest_dataset(ds, data_root)
    assert not again.changed and _snapshot(data_root) == before, "seeded once; a rerun leaves it byte-identical"
    assert again.summary_line() == "fx: nothing new"
    _drop(landing, "more.parquet", make_candles(45, seed=7)[40:45])  # column-less: the named symbol's
    assert ingest_dataset(ds, data_root).rows_added == {"EURUSD": 5}


def test_the_summary_line_names_each_quarantined_file_with_the_first_line_of_its_reason(
        landing: Path, data_root: Path, candles: pl.DataFrame) -> None:
    _drop(landing, "a.parquet", candles[:20], symbol="AAA")
    _drop(landing, "b.parquet", candles[:20].with_columns(pl.lit(-1.0).alias("close")), symbol="AAA")
    _drop(landing, "c.parquet", make_candles(10, seed=2), symbol="BBB")

    report = ingest_dataset(_dataset(landing), data_root)

    line = report.summary_line()
    assert line.startswith("fx: 2 file(s) merged, 30 row(s) added (AAA +20, BBB +10); quarantined b.parquet: ")
    assert line.endswith(f"(see {landing / 'quarantine' / 'b.parquet'}.error.txt)") and "\n" not in line
    assert "quarantined b.parquet: rule 'prices > 0' failed for column 'close': symbol 'AAA'" in line


def test_file_without_symbol_is_refused_when_the_dataset_holds_several(landing: Path, data_root: Path,
                                                                        candles: pl.DataFrame) -> None:
    _drop(landing, "a.parquet", candles[:10], symbol="AAA")
    _drop(landing, "b.parquet", make_candles(10, seed=2), symbol="BBB")
    _drop(landing, "c.parquet", candles[10:20])

    report = ingest_dataset(_dataset(landing), data_root)

    assert report.rows_added == {"AAA": 10, "BBB": 10}
    assert [q.file for q in report.quarantined] == ["c.parquet"]
    assert "no 'symbol' column" in report.quarantined[0].message and "'AAA', 'BBB'" in report.quarantined[0].message


def test_constant_column_is_judged_on_the_whole_series(landing: Path, data_root: Path,
                                                       candles: pl.DataFrame) -> None:
    ds = _dataset(landing)
    _drop(landing, "a.parquet", candles[:20])
    ingest_dataset(ds, data_root)
    quiet = candles[20:22].with_columns(pl.lit(1000.0).alias("volume"))  # two candles, same volume
    _drop(landing, "b.parquet", quiet)

    report = ingest_dataset(ds, data_root)

    assert report.ok and report.rows_added == {"fx": 2}
    assert _store(data_root)["volume"].tail(2).to_list() == [1000.0, 1000.0]


def test_noop_rerun_leaves_the_store_byte_identical(landing: Path, data_root: Path, candles: pl.DataFrame) -> None:
    ds = _dataset(landing)
    _drop(landing, "a.parquet", candles[:20])
    ingest_dataset(ds, data_root)
    curated = data_root / "fx" / "curated"
    before = _snapshot(curated)
    time.sleep(0.01)  # a rewrite would show in the mtime even with identical bytes

    nothing = ingest_dataset(ds, data_root)
    _drop(landing, "again.parquet", candles[5:15])  # duplicates only
    repeat = ingest_dataset(ds, data_root)

    assert _snapshot(curated) == before
    assert not nothing.changed and nothing.batches_taken == 0 and nothing.newest == {"fx": candles["timestamp"][19]}
    assert not repeat.changed and repeat.duplicates == 10 and repeat.merged == ["again.parquet"]


def test_same_file_name_again_keeps_the_earlier_processed_file(landing: Path, data_root: Path,
                                                                candles: pl.DataFrame) -> None:
    ds = _dataset(landing)
    _drop(landing, "daily.parquet", candles[:10])
    ingest_dataset(ds, data_root)
    _drop(landing, "daily.parquet", candles[10:20])
    ingest_dataset(ds, data_root)

    processed = landing / "processed"
    assert _names(processed) == ["daily.1.parquet", "daily.parquet"]
    assert pl.read_parquet(processed / "daily.parquet").equals(candles[:10])
    assert _store(data_root).height == 20


def test_pending_files_skips_hidden_and_foreign_names(landing: Path, candles: pl.DataFrame) -> None:
    for name in ("b.parquet", "a.CSV", ".c.parquet", "d.parquet.part", "notes.txt"):
        (landing / name).write_bytes(b"")
    (landing / "processed").mkdir()
    assert [p.name for p in pending_files(_dataset(landing))] == ["a.CSV", "b.parquet"]
    assert pending_files(_dataset(landing.parent / "missing")) == []


def test_ingest_all_visits_only_datasets_with_a_landing_folder(tmp_path: Path, landing: Path, data_root: Path,
                                                               candles: pl.DataFrame) -> None:
    source = tmp_path / "src.parquet"
    candles.write_parquet(source)
    _drop(landing, "a.parquet", candles[:5])
    datasets = {"fx": _dataset(landing), "plain": DatasetConfig(name="plain", source=str(source))}
    reports = ingest_all(datasets, data_root)
    assert list(reports) == ["fx"] and isinstance(reports["fx"], IngestReport)
    assert not (data_root / "plain").exists()


def test_a_second_ingest_of_the_same_dataset_waits_for_the_lock_then_names_it(
        landing: Path, data_root: Path, candles: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _dataset(landing)
    _drop(landing, "a.parquet", candles[:10])
    inside, release = threading.Event(), threading.Event()
    real_remove = ingest.remove_stale_temps

    def hold(curated: Path) -> None:  # the first step an ingest takes under the lock
        inside.set()
        assert release.wait(30)
        real_remove(curated)

    monkeypatch.setattr(ingest, "remove_stale_temps", hold)
    reports: list[ingest.IngestReport] = []
    first = threading.Thread(target=lambda: reports.append(ingest_dataset(ds, data_root)))
    first.start()
    try:
        assert inside.wait(30)
        started = time.monotonic()
        with pytest.raises(ingest.IngestError, match=r"dataset 'fx': another ingest has held .*ingest\.lock "
                                                     r"for over 0\.2 s; try again when it has finished"):
            ingest_dataset(ds, data_root, lock_timeout_s=0.2)
        assert time.monotonic() - started >= 0.2  # it waited for the lock before giving up
        assert _names(landing) == ["a.parquet"]  # the refused ingest touched nothing
    finally:
        release.set()
        first.join(30)
    assert reports[0].merged == ["a.parquet"] and _store(data_root).height == 10


# Runs one ingest and hangs at a chosen os.replace until the test SIGKILLs it: "store" is inside the
# store write (the temp file is complete, the rename not done), "moves" is after the store was
# replaced and before the first landing file moved.
KILL_SCRIPT = r"""
import os, sys, time
from pathlib import Path
from patx_core.ingest import landing as ingest
from patx_core.settings.datasets import DatasetConfig

landing, data_root, phase, marker = sys.argv[1:5]
real_replace = os.replace

def replace(src, dst, *args, **kwargs):
    target = os.fspath(dst)
    if ((phase == "store" and target.endswith(os.sep + ingest.STORE_FILE))
            or (phase == "moves" and os.sep + ingest.PROCESSED_DIR + os.sep in target)):
        Path(marker).write_text(phase)
        time.sleep(120)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
ingest.ingest_dataset(DatasetConfig(name="fx", landing=landing), data_root)
"""


@pytest.mark.parametrize("phase", ["store", "moves"])
def test_sigkill_mid_ingest_loses_nothing(tmp_path: Path, landing: Path, data_root: Path, candles: pl.DataFrame,
                                          phase: str) -> None:
    ds = _dataset(landing)
    _drop(landing, "a.parquet", candles[:10])
    ingest_dataset(ds, data_root)
    old_store = _store(data_root)
    dropped = ["b.parquet", "c.parquet", "d.parquet"]
    _drop(landing, "b.parquet", candles[10:20])
    _drop(landing, "c.parquet", candles[20:30].with_columns(pl.lit(-1.0).alias("low")))  # quarantined
    _drop(landing, "d.parquet", candles[30:40])
    marker = tmp_path / "hanging"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(landing), str(data_root), phase, str(marker)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, f"the ingest ended before the kill point: {proc.communicate()[1]!r}"
            assert time.monotonic() < deadline, "the ingest never reached the kill point"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    new_store = _long(pl.concat([candles[:20], candles[30:40]]), "fx")

    # Old store or new one, whole and readable through the glob; every file somewhere.
    after_kill = _store(data_root)
    assert after_kill.equals(old_store if phase == "store" else new_store)
    temps = list((data_root / "fx" / "curated").glob(".candles.parquet.*.tmp"))
    assert len(temps) == (1 if phase == "store" else 0)  # the kill really hit the store write
    where = _names(landing) + _names(landing / "processed") + _names(landing / "quarantine")
    assert set(dropped) <= set(where)

    rerun = ingest_dataset(ds, data_root)

    assert _store(data_root).equals(new_store)
    assert _names(landing) == []
    assert _names(landing / "processed") == ["a.parquet", "b.parquet", "d.parquet"]
    assert _names(landing / "quarantine") == ["c.parquet", "c.parquet.error.txt"]
    assert not list((data_root / "fx" / "curated").glob(".*.tmp"))
    if phase == "store":
        assert rerun.merged == ["b.parquet", "d.parquet"] and rerun.rows_added == {"fx": 20}
    else:  # already merged before the kill: moved, not applied again
        assert rerun.recovered == ["b.parquet", "d.parquet"] and rerun.merged == [] and not rerun.changed


def _datasets_file(tmp_path: Path, landing: Path) -> Path:
    path = tmp_path / "datasets.toml"
    path.write_text(f'[fx]\nlanding = "{landing.name}"\n\n[plain]\nsource = "none.parquet"\n')
    return path


def test_cli_exit_codes(tmp_path: Path, landing: Path, data_root: Path, candles: pl.DataFrame,
                        capsys: pytest.CaptureFixture[str]) -> None:
    datasets = _datasets_file(tmp_path, landing)
    args = ["fx", "--datasets", str(datasets), "--data-dir", str(data_root)]

    _drop(landing, "a.parquet", candles[:10])
    assert patx(["ingest", *args]) == 0
    assert json.loads(capsys.readouterr().out)["fx"]["rows_added"] == {"fx": 10}
    assert patx(["ingest", *args]) == 0  # nothing waiting
    assert json.loads(capsys.readouterr().out)["fx"]["batches_taken"] == 0

    _drop(landing, "b.parquet", candles[10:20].with_columns(pl.lit(-1.0).alias("low")))
    _drop(landing, "c.parquet", candles[20:30])
    assert patx(["ingest", *args]) == 1
    summary = json.loads(capsys.readouterr().out)["fx"]
    assert summary["merged_files"] == ["c.parquet"] and summary["quarantined"][0]["file"] == "b.parquet"

    assert patx(["ingest", "nope", "--datasets", str(datasets), "--data-dir", str(data_root)]) == 2
    assert patx(["ingest", "plain", "--datasets", str(datasets), "--data-dir", str(data_root)]) == 2
    assert patx(["ingest", "fx", "--datasets", str(tmp_path / "missing.toml")]) == 2
    with pytest.raises(SystemExit) as usage:
        patx(["ingest"])
    assert usage.value.code == 2


def test_cli_runs_as_a_module_with_env_defaults(tmp_path: Path, landing: Path, data_root: Path,
                                                candles: pl.DataFrame) -> None:
    _drop(landing, "a.parquet", candles[:10])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PATX_DATASETS": str(_datasets_file(tmp_path, landing)),
           "PATX_DATA_DIR": str(data_root)}
    proc = subprocess.run([sys.executable, "-m", "patx_core.cli", "ingest", "fx"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["fx"]["rows_added"] == {"fx": 10}
    assert store_file("fx", data_root).is_file()


def test_stray_parquet_in_curated_stops_the_ingest(landing: Path, data_root: Path, candles: pl.DataFrame) -> None:
    ds = _dataset(landing)
    _drop(landing, "a.parquet", candles[:10])
    ingest_dataset(ds, data_root)
    candles.write_parquet(data_root / "fx" / "curated" / "extra.parquet")
    _drop(landing, "b.parquet", candles[10:20])
    with pytest.raises(ingest.IngestError, match="extra.parquet"):
        ingest_dataset(ds, data_root)
    assert _names(landing) == ["b.parquet"]  # still waiting


class _Killed(BaseException):
    """Stands in for a SIGKILL at one point of the ingest: nothing after it runs."""


def test_a_kill_before_the_reason_is_written_leaves_the_refused_file_in_the_landing_folder(
        landing: Path, data_root: Path, candles: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused file never sits in quarantine without its reason: the reason is written first, so
    a kill while writing it leaves the file where it was, to be refused (and explained) again."""
    ds = _dataset(landing)
    _drop(landing, "bad.parquet", candles[:10].with_columns(pl.lit(-1.0).alias("low")))
    real_write = ingest.atomic_write_text

    def killed_writing_the_reason(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith(ingest.ERROR_SUFFIX):
            raise _Killed
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(ingest, "atomic_write_text", killed_writing_the_reason)
    with pytest.raises(_Killed):
        ingest_dataset(ds, data_root)
    assert _names(landing) == ["bad.parquet"]
    assert "bad.parquet" not in _names(landing / "quarantine")

    monkeypatch.setattr(ingest, "atomic_write_text", real_write)
    report = ingest_dataset(ds, data_root)
    assert [q.file for q in report.quarantined] == ["bad.parquet"]
    assert _names(landing / "quarantine") == ["bad.parquet", "bad.parquet.error.txt"]
