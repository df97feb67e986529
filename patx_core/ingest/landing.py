"""Ingestion: candle files dropped into a dataset's landing folder, merged into its curated store.

A dataset with ``landing = "<folder>"`` (:mod:`patx_core.settings.datasets`) is fed by files that arrive
there — a broker export, a vendor drop. Each ``*.parquet`` or ``*.csv`` file directly in the
folder is one batch, and batches are taken in file-name order (so name daily drops by date,
``2024-05-01.parquet``). Names starting with ``.`` and other suffixes are left alone, so an
upload still in progress under a temporary name (``x.parquet.part``) is never taken half-written.

Each batch is validated and merged into the curated store by the rules of
:mod:`patx_core.ingest.store` (duplicates skipped, revisions refused unless allowed), then moves
to ``<landing>/processed/``, or to ``<landing>/quarantine/`` beside a ``<file name>.error.txt``
holding the message. A refused batch never stops the later ones. A name already taken there
gets a counter (``x.1.parquet``), so a vendor that always sends the same name loses no earlier file.

Nothing is lost, even to a SIGKILL:

1. Batches are merged in memory and the store is written once per ingest, atomically
   (:func:`patx_core.ingest.store.write_store`): a reader sees the old store or the new one.
2. Files leave the landing folder only after that rename. A kill before it leaves the old store
   and every file in place; the next ingest removes the stale temp file and redoes the work. A
   kill after it leaves files that are already merged: the store records the files its write
   took, and the next ingest moves such a file to processed/ without applying it again (a second
   copy dropped later has a new mtime and is simply ingested, its candles being duplicates).

An ingest with nothing new to merge does not write the store, so it stays byte-identical. One
ingest of a dataset runs at a time (a :class:`filelock.FileLock` on
``<PATX_DATA_DIR>/<dataset>/ingest.lock``, released by the kernel when its process dies), so a
sensor run and a cron job cannot each merge a batch and overwrite the other's store.

``patx ingest <dataset>`` (:mod:`patx_core.cli.ingest`) does the same without Dagster, for a cron box,
printing :meth:`IngestReport.summary_line` for each dataset on stderr.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from patx_core.data.contract import RawDataError
from patx_core.data.universe import SYMBOL
from patx_core.ingest.store import (
    STORE_FILE,
    BatchRefused,
    IngestError,
    Revision,
    apply_batch,
    existing_source_files,
    fingerprint,
    newest_candles,
    read_store,
    remove_stale_temps,
    seed_frame,
    taken_before,
    write_store,
)
from patx_core.settings.datasets import DatasetConfig
from patx_core.storage.artifacts import PathLike, as_path, atomic_write_text, is_local
from patx_core.storage.locks import exclusive
from patx_core.storage.paths import DatasetPaths

logger = logging.getLogger(__name__)

PROCESSED_DIR = "processed"
QUARANTINE_DIR = "quarantine"
ERROR_SUFFIX = ".error.txt"
LOCK_FILE = "ingest.lock"
BATCH_SUFFIXES = (".parquet", ".csv")
# How long an ingest waits for another ingest of the same dataset before giving up.
LOCK_TIMEOUT_S = 600.0
# How many revisions the metadata lists; the count of all of them is always given.
MAX_LISTED = 100

@dataclass(frozen=True)
class Quarantined:
    file: str  # the name it had in the landing folder
    message: str
    moved_to: str  # its path in quarantine/


@dataclass
class IngestReport:
    """What one ingest of one dataset did; :meth:`metadata` is its JSON-safe summary."""

    dataset: str
    store: str  # the curated store file
    merged: list[str] = field(default_factory=list)  # files merged (duplicates-only ones too)
    recovered: list[str] = field(default_factory=list)  # merged by an interrupted ingest, moved now
    quarantined: list[Quarantined] = field(default_factory=list)
    rows_added: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # candles already stored with identical values
    revisions: list[Revision] = field(default_factory=list)  # applied (allow_revisions = true)
    seeded_from: list[str] = field(default_factory=list)  # source files that seeded a new store
    seeded_rows: int = 0  # candles the seed put into the new store
    newest: dict[str, dt.datetime] = field(default_factory=dict)  # per symbol, in the store after
    changed: bool = False  # the store was written

    @property
    def batches_taken(self) -> int:
        return len(self.merged) + len(self.recovered) + len(self.quarantined)

    @property
    def ok(self) -> bool:
        """No batch was quarantined."""
        return not self.quarantined

    def metadata(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "store": self.store,
            "store_changed": self.changed,
            "batches_taken": self.batches_taken,
            "batches_merged": len(self.merged),
            "merged_files": list(self.merged),
            "recovered_files": list(self.recovered),
            "rows_added": dict(self.rows_added),
            "rows_added_total": sum(self.rows_added.values()),
            "duplicates_skipped": self.duplicates,
            "revision_count": len(self.revisions),
            "revisions": [r.to_dict() for r in self.revisions[:MAX_LISTED]],
            "quarantined": [{"file": q.file, "message": q.message, "moved_to": q.moved_to}
                            for q in self.quarantined],
            "newest_candle": {s: ts.isoformat() for s, ts in self.newest.items()},
            "seeded_from": list(self.seeded_from),
            "seeded_rows": self.seeded_rows,
        }

    def summary_line(self) -> str:
        """What this ingest did, in one line for a shell: files merged and rows added, the seed,
        each quarantined file with the first line of its reason, or "nothing new"."""
        parts = []
        if self.seeded_from:
            source = self.seeded_from[0] + (f" (+{len(self.seeded_from) - 1} files)" if len(self.seeded_from) > 1 else "")
            parts.append(f"seeded the curated store with {self.seeded_rows} candle(s) from {source}")
        if self.merged or self.recovered:
            added = sum(self.rows_added.values())
            by_symbol = ", ".join(f"{s} +{n}" for s, n in self.rows_added.items())
            parts.append(f"{len(self.merged) + len(self.recovered)} file(s) merged, {added} row(s) added"
                         + (f" ({by_symbol})" if by_symbol and len(self.rows_added) > 1 else "")
                         + (f", {self.duplicates} duplicate(s) skipped" if self.duplicates else "")
                         + (f", {len(self.revisions)} revision(s) applied" if self.revisions else ""))
        for q in self.quarantined:
            reason = q.message.strip().splitlines()[0] if q.message.strip() else "no reason recorded"
            reason = reason.removeprefix(f"{q.file}: ")  # the line names the file already
            parts.append(f"quarantined {q.file}: {_shorten(reason)} (see {q.moved_to}{ERROR_SUFFIX})")
        return f"{self.dataset}: " + ("; ".join(parts) if parts else "nothing new")


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def pending_files(dataset: DatasetConfig) -> list[Path]:
    """The batches waiting in the dataset's landing folder, in the order they will be taken."""
    if not dataset.landing:
        return []
    landing = as_path(dataset.landing)
    if not landing.is_dir():
        return []
    return sorted((p for p in landing.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(BATCH_SUFFIXES)),
                  key=lambda p: p.name)


def ingest_all(datasets: Mapping[str, DatasetConfig], data_root: PathLike | None = None) -> dict[str, IngestReport]:
    """Ingest every dataset that has a landing folder; one that cannot run does not stop the others.

    Raises :class:`IngestError` naming each dataset that could not run, after the others ran;
    its ``reports`` attribute holds theirs.
    """
    reports: dict[str, IngestReport] = {}
    failures: list[str] = []
    for name, dataset in datasets.items():
        if not dataset.landing:
            continue
        try:
            reports[name] = ingest_dataset(dataset, data_root)
        except IngestError as exc:
            failures.append(str(exc))
    if failures:
        error = IngestError("\n".join(failures))
        error.reports = reports  # type: ignore[attr-defined]
        raise error
    return reports


def ingest_dataset(dataset: DatasetConfig, data_root: PathLike | None = None, *,
                   lock_timeout_s: float = LOCK_TIMEOUT_S) -> IngestReport:
    """Merge every file waiting in ``dataset``'s landing folder into its curated store.

    Refused batches are quarantined and reported, never raised; :class:`IngestError` means the
    ingest could not run (unreadable store, invalid seed source, another ingest holding the lock)
    and every file is still in the landing folder.
    """
    if not dataset.landing:
        raise ValueError(f"dataset {dataset.name!r} has no landing folder; set landing = \"<folder>\" in "
                         "the datasets file")
    paths = DatasetPaths.for_dataset(dataset.name, data_root)
    store = paths.curated_dir / STORE_FILE
    if not as_path(dataset.landing).is_dir():
        logger.warning("dataset %r: landing folder %s does not exist; nothing to ingest", dataset.name,
                       dataset.landing)
    if not pending_files(dataset) and (store.exists() or not existing_source_files(dataset)):
        # Nothing is written, not even the lock file: a dataset nobody fed stays untouched. Without
        # a store but with a source, the first ingest still seeds it (below), so that the store
        # exists and reads the same whether or not a batch has landed yet.
        report = IngestReport(dataset=dataset.name, store=str(store))
        stored = read_store(store)[0] if store.exists() else None
        report.newest = newest_candles(stored) if stored is not None else {}
        return report
    with _lock(paths.root / LOCK_FILE, dataset.name, lock_timeout_s):
        remove_stale_temps(paths.curated_dir)
        return _ingest_locked(dataset, store)


def _ingest_locked(dataset: DatasetConfig, store: Path) -> IngestReport:
    landing = as_path(dataset.landing)
    report = IngestReport(dataset=dataset.name, store=str(store))
    stored, taken_by_store = read_store(store) if store.exists() else (None, [])
    waiting: list[Path] = []
    # Re-listed under the lock: an ingest that ran meanwhile may have taken them.
    for path in pending_files(dataset):
        if taken_before(path, taken_by_store):
            logger.info("dataset %r: %s was merged by an interrupted ingest; moving it to %s/",
                        dataset.name, path.name, PROCESSED_DIR)
            _move(path, landing / PROCESSED_DIR)
            report.recovered.append(path.name)
        else:
            waiting.append(path)

    frame, seed_files = (stored, []) if stored is not None else seed_frame(dataset)
    seed_rows = frame.height if stored is None else 0
    outcomes: list[tuple[Path, str | None]] = []
    taken: list[dict[str, Any]] = []
    for path in waiting:
        try:
            frame, merge = apply_batch(frame, path, dataset)
        # PolarsError: data polars cannot handle at all (e.g. a nested 'symbol' column).
        except (RawDataError, BatchRefused, pl.exceptions.PolarsError) as exc:
            logger.warning("dataset %r: quarantining %s: %s", dataset.name, path.name, exc)
            outcomes.append((path, str(exc)))
            continue
        logger.info("dataset %r: %s adds %d candle(s), %d duplicate(s), %d revision(s)", dataset.name,
                    path.name, sum(merge.rows_added.values()), merge.duplicates, len(merge.revisions))
        for symbol, rows in merge.rows_added.items():
            report.rows_added[symbol] = report.rows_added.get(symbol, 0) + rows
        report.duplicates += merge.duplicates
        report.revisions.extend(merge.revisions)
        report.merged.append(path.name)
        taken.append(fingerprint(path))
        outcomes.append((path, None))

    # A first merged batch creates the store even when it only repeats the source, so that the
    # dataset reads one place from then on; otherwise only new or revised candles rewrite it.
    report.changed = bool(report.rows_added or report.revisions or (stored is None and (report.merged or seed_files)))
    if report.changed:
        write_store(store, frame.sort(SYMBOL, "timestamp"), taken)
        report.seeded_from = [str(f) for f in seed_files]
        report.seeded_rows = seed_rows
    for path, message in outcomes:
        if message is None:
            _move(path, landing / PROCESSED_DIR)
        else:
            report.quarantined.append(_quarantine(path, message, landing / QUARANTINE_DIR))
    report.rows_added = dict(sorted(report.rows_added.items()))
    report.newest = newest_candles(frame) if (report.changed or stored is not None) else {}
    return report


def _free_target(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>.<n><suffix>`` when that is taken."""
    target = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 0
    while target.exists():
        n += 1
        target = folder / f"{stem}.{n}{suffix}"
    return target


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return _move_to(path, _free_target(folder, path.name))


def _move_to(path: Path, target: Path) -> Path:
    if is_local(path):
        os.replace(os.fspath(path), os.fspath(target))  # same filesystem: one atomic step
    else:
        path.rename(target)
    return target


def _quarantine(path: Path, message: str, folder: Path) -> Quarantined:
    """Move a refused file to ``folder`` with its message beside it (the message first, so a kill
    between the two leaves the file in the landing folder, to be refused again)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_target(folder, path.name)
    atomic_write_text(folder / f"{target.name}{ERROR_SUFFIX}",
                      f"{message}\n\nFix the file and move it back into {path.parent} to ingest it again.\n")
    moved = _move_to(path, target)
    return Quarantined(file=path.name, message=message, moved_to=str(moved))


def _lock(path: Path, dataset: str, timeout_s: float) -> contextlib.AbstractContextManager[None]:
    """Only one ingest of a dataset may read and write its store at a time."""
    return exclusive(path, timeout_s=timeout_s, what=f"dataset {dataset!r}",
                     busy=lambda t: IngestError(f"dataset {dataset!r}: another ingest has held {path} for over "
                                                f"{t:g} s; try again when it has finished"))
