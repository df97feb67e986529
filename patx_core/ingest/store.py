"""The curated store of a dataset: one parquet file of validated candles, and the rules that merge a batch into it.

The store is ``<PATX_DATA_DIR>/<dataset>/curated/candles.parquet``, with the columns ``symbol,
timestamp, open, high, low, close, volume``, one row per (symbol, timestamp), sorted by both. The
first ingest seeds it with the dataset's ``source`` (if any), even with nothing in the landing
folder; from then on the store, not the source, holds the dataset's candles.

Merging one batch (a candle file; :mod:`patx_core.ingest.landing` decides which and when):

- the batch is validated with the raw contract per symbol (:func:`patx_core.data.contract.validate_raw`);
  messages name the file and the symbol. A rule that needs the whole series — a column must not
  be constant — is checked on the symbol's stored candles plus the batch, since two candles of
  a quiet market may well share a volume. A file carries a ``symbol`` column unless the dataset
  holds exactly one symbol; then a file without one is that symbol's. The one symbol is the
  store's only symbol; before the store exists, the only symbol of the ``source`` that seeds it.
  Rows without a ``symbol`` column (a single seed file or a batch) take the dataset's ``symbol``
  field, else the dataset's name (not a file's stem: ``eurusd_seed.parquet`` is no market's name).
  A file without the column is refused while the dataset holds several symbols.
- every candle whose (symbol, timestamp) is not stored is added. An identical repeat is a
  duplicate and changes nothing. A *changed* value refuses the whole batch, naming symbol,
  timestamp, column, stored and new value — unless the dataset sets ``allow_revisions = true``:
  then the new value wins and the revision is reported.

The store is written whole: to a temp file in the same folder, named
``.candles.parquet.<random>.tmp`` so that ``curated/**/*.parquet`` never matches it, then renamed
over the old store (:func:`patx_core.storage.artifacts.atomic_write_with`), so a reader sees the old
store or the new one, never a mix. Its parquet metadata records the name, size, mtime and sha256
of every file the write took (:func:`fingerprint`), so that a file merged by an ingest killed
before it could move the file is recognised and not applied twice (:func:`taken_before`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from patx_core.data.contract import (
    NUMERIC_COLUMNS,
    RAW_COLUMNS,
    RawDataError,
    Violation,
    normalize_structure,
    read_candle_file,
    validate_raw,
)
from patx_core.data.universe import SYMBOL, UNIVERSE_COLUMNS, read_universe, symbol_frames, symbol_source
from patx_core.settings.datasets import DatasetConfig
from patx_core.storage.artifacts import PathLike, atomic_write_with
from patx_core.storage.paths import DatasetPaths

logger = logging.getLogger(__name__)

STORE_FILE = "candles.parquet"
# The store's parquet key-value metadata: the files its write took (see the module docstring).
TAKEN_KEY = "patx.ingest.taken"
# How many revisions or symbols a message lists; the count of all of them is always given.
MAX_SHOWN = 5
# The one raw rule that is about a whole series rather than about the rows in front of it.
_RULE_VARIES = "column varies"
_OLD = "__stored"

STORE_SCHEMA = pl.Schema({SYMBOL: pl.String, "timestamp": pl.Datetime("us", "UTC"),
                          **{c: pl.Float64 for c in NUMERIC_COLUMNS}})


class IngestError(RuntimeError):
    """The ingest of a dataset could not run at all (its files stay in the landing folder)."""


class BatchRefused(ValueError):
    """One batch breaks a merge rule (a revision, a missing ``symbol`` column); it is quarantined."""


@dataclass(frozen=True)
class Revision:
    """A stored value that a batch changed (or would have changed)."""

    symbol: str
    timestamp: dt.datetime
    column: str
    old: float
    new: float

    def __str__(self) -> str:
        return (f"symbol {self.symbol!r} at {self.timestamp.isoformat()}: {self.column} stored "
                f"{self.old!r}, new {self.new!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "timestamp": self.timestamp.isoformat(), "column": self.column,
                "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Merge:
    """What merging one batch did: candles added per symbol, identical repeats, changed values."""

    rows_added: dict[str, int]
    duplicates: int
    revisions: list[Revision]


def store_file(dataset: str, data_root: PathLike | None = None) -> Path:
    """``<data_root>/<dataset>/curated/candles.parquet``: the dataset's curated store."""
    return DatasetPaths.for_dataset(dataset, data_root).curated_dir / STORE_FILE


def existing_source_files(dataset: DatasetConfig) -> list[Path]:
    """The files of the dataset's ``source`` that exist (what a first ingest seeds the store with)."""
    return [f for f in dataset.source_files() if f.exists()]


def seed_frame(dataset: DatasetConfig) -> tuple[pl.DataFrame, list[Path]]:
    """The dataset's ``source`` as a first store (an empty one for a landing-only dataset), and
    the files it came from. No ``min_rows``: the store only holds candles, the variants judge length."""
    files = existing_source_files(dataset)
    if not files:
        return STORE_SCHEMA.to_frame(), []
    try:
        # One column-less seed file is the dataset's one symbol; several are a universe named by stem.
        universe = read_universe(files, symbol=dataset.symbol or (dataset.name if len(files) == 1 else None),
                                 volume=dataset.volume)
    except RawDataError as exc:
        raise IngestError(f"dataset {dataset.name!r}: its source cannot seed the curated store: {exc}") from exc
    return universe.frame.select(UNIVERSE_COLUMNS), files


def apply_batch(frame: pl.DataFrame, path: Path, dataset: DatasetConfig) -> tuple[pl.DataFrame, Merge]:
    """``frame`` with one landing file merged in, or :class:`RawDataError`/:class:`BatchRefused`."""
    raw = read_candle_file(path)
    if raw.is_empty():
        validate_raw(raw, source=path.name)  # raises the "non-empty file" rule
    if SYMBOL in raw.columns:
        parts = symbol_frames(raw, path.name)
    else:
        sole = _sole_symbol(frame, dataset.symbol or dataset.name)
        if sole is None:
            held = frame.get_column(SYMBOL).unique().sort().to_list()
            shown = ", ".join(repr(s) for s in held[:MAX_SHOWN]) + (", …" if len(held) > MAX_SHOWN else "")
            raise BatchRefused(f"{path.name}: the file has no {SYMBOL!r} column, but dataset "
                               f"{dataset.name!r} holds {len(held)} symbols ({shown}); add a {SYMBOL!r} "
                               f"column naming each row's symbol (the file has {raw.columns})")
        parts = symbol_frames(raw, sole)
    batch = _validate_batch(parts, path, frame, volume=dataset.volume)
    return _merge(frame, batch, path=path, dataset=dataset)


def _sole_symbol(frame: pl.DataFrame, default: str) -> str | None:
    """The symbol a file without a ``symbol`` column belongs to, or None when that is ambiguous."""
    if frame.is_empty():
        return default
    symbols = frame.get_column(SYMBOL).unique()
    return str(symbols[0]) if symbols.len() == 1 else None


def _validate_batch(parts: dict[str, pl.DataFrame], path: Path, stored: pl.DataFrame, *,
                    volume: bool = True) -> pl.DataFrame:
    """Every symbol of one file validated (all violations of all symbols raised together)."""
    frames: list[pl.DataFrame] = []
    violations: list[Violation] = []
    for symbol in sorted(parts):
        source = symbol_source(symbol, [path.name])
        try:
            valid = _validate_part(parts[symbol], source=source, symbol=symbol, stored=stored, volume=volume)
        except RawDataError as exc:
            violations.extend(Violation(v.rule, v.column, v.count, v.rows, f"symbol {symbol!r}: {v.detail}")
                              for v in exc.violations)
            continue
        frames.append(valid.select(pl.lit(symbol, dtype=pl.String).alias(SYMBOL), *RAW_COLUMNS))
    if violations:
        raise RawDataError(path.name, violations)
    return pl.concat(frames)


def _validate_part(part: pl.DataFrame, *, source: str, symbol: str, stored: pl.DataFrame,
                   volume: bool = True) -> pl.DataFrame:
    """One symbol's rows of a batch, validated; a constant column is judged on the whole series."""
    try:
        return validate_raw(part, source=source, volume=volume)
    except RawDataError as exc:
        if not all(v.rule == _RULE_VARIES for v in exc.violations):
            raise
        history = stored.filter(pl.col(SYMBOL) == symbol).drop(SYMBOL)
        if history.is_empty():
            raise
        # Every other rule passed, so the batch normalizes cleanly to the stored dtypes (with the
        # contract's own normalization, so that the rows match what validate_raw would return).
        rows = normalize_structure(part, source, volume=volume)
        series = pl.concat([history.join(rows.select("timestamp"), on="timestamp", how="anti"), rows])
        try:
            whole = validate_raw(series.sort("timestamp"), source=source, volume=volume)
        except RawDataError:
            raise exc from None
        return whole.join(rows.select("timestamp"), on="timestamp", how="semi")


def _merge(stored: pl.DataFrame, batch: pl.DataFrame, *, path: Path, dataset: DatasetConfig
           ) -> tuple[pl.DataFrame, Merge]:
    keys = [SYMBOL, "timestamp"]
    joined = batch.join(stored, on=keys, how="left", suffix=_OLD, maintain_order="left")
    known = joined.filter(pl.col(f"open{_OLD}").is_not_null())  # stored candles have no nulls
    revisions = sorted(
        (Revision(s, ts, col, old, new)
         for col in NUMERIC_COLUMNS
         for s, ts, new, old in known.filter(pl.col(col) != pl.col(col + _OLD))
         .select(SYMBOL, "timestamp", col, col + _OLD).iter_rows()),
        key=lambda r: (r.symbol, r.timestamp, NUMERIC_COLUMNS.index(r.column)))
    if revisions and not dataset.allow_revisions:
        shown = "; ".join(str(r) for r in revisions[:MAX_SHOWN])
        more = f" (first {MAX_SHOWN} of {len(revisions)} shown)" if len(revisions) > MAX_SHOWN else ""
        raise BatchRefused(f"{path.name}: {len(revisions)} stored value(s) would change{more}: {shown}. "
                           f"Dataset {dataset.name!r} does not take revisions, so nothing of this file "
                           "was merged; set allow_revisions = true in the datasets file to let new "
                           "values win")
    revised_rows = len({(r.symbol, r.timestamp) for r in revisions})
    fresh = joined.filter(pl.col(f"open{_OLD}").is_null())
    rows_added = {str(s): int(n) for s, n in fresh.group_by(SYMBOL).len().sort(SYMBOL).iter_rows()}
    merge = Merge(rows_added=rows_added, duplicates=known.height - revised_rows, revisions=revisions)
    if not rows_added and not revisions:
        return stored, merge
    kept = stored.join(batch.select(keys), on=keys, how="anti")
    return pl.concat([kept, batch]).sort(keys), merge


def newest_candles(frame: pl.DataFrame) -> dict[str, dt.datetime]:
    """The newest timestamp of each symbol in ``frame``, by symbol."""
    newest = frame.group_by(SYMBOL).agg(pl.col("timestamp").max()).sort(SYMBOL)
    return {str(s): ts for s, ts in newest.iter_rows()}


def read_store(store: Path) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The curated store and the fingerprints of the files its write took."""
    others = sorted(p for p in store.parent.glob("**/*.parquet") if p != store)
    if others:
        # Readers take every curated/**/*.parquet file: a stray one would be read as candles too.
        raise IngestError(f"{store.parent} holds parquet files the ingest did not write: "
                          f"{[str(p) for p in others]}; move them into the landing folder (or away)")
    try:
        frame = pl.read_parquet(store)
        taken = json.loads(pl.read_parquet_metadata(store).get(TAKEN_KEY, "[]"))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise IngestError(f"cannot read the curated store {store}: {type(exc).__name__}: {exc}") from exc
    if frame.schema != STORE_SCHEMA:
        raise IngestError(f"the curated store {store} has the schema {dict(frame.schema)}; expected "
                          f"{dict(STORE_SCHEMA)}")
    return frame, taken


def write_store(store: Path, frame: pl.DataFrame, taken: list[dict[str, Any]]) -> None:
    """Replace the store with ``frame`` in one rename, recording the files ``taken`` in its metadata."""
    metadata = {TAKEN_KEY: json.dumps(taken, sort_keys=True)}
    atomic_write_with(store, lambda buf: frame.write_parquet(buf, metadata=metadata))
    logger.info("wrote the curated store %s: %d candles of %d symbol(s)", store, frame.height,
                frame.get_column(SYMBOL).n_unique())


def taken_before(path: Path, taken: list[dict[str, Any]]) -> bool:
    """Whether the store's last write took this very file (the sha256 only read on a name match)."""
    stat = path.stat()
    if not any(t["name"] == path.name and t["size"] == stat.st_size and t["mtime_ns"] == stat.st_mtime_ns
               for t in taken):
        return False
    return fingerprint(path) in taken


def fingerprint(path: Path) -> dict[str, Any]:
    """What identifies one landing file across a crash: a move keeps name, size, mtime and bytes."""
    stat = path.stat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}


def remove_stale_temps(curated: Path) -> None:
    """Remove the temp files of a store write killed before its rename (call it under the ingest lock)."""
    if not curated.is_dir():
        return
    for tmp in curated.glob(f".{STORE_FILE}.*.tmp"):
        logger.info("removing %s, left by an interrupted store write", tmp)
        tmp.unlink(missing_ok=True)


