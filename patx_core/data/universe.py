"""Candles of many symbols in one long frame: reading a dataset's files and validating each symbol.

A universe is a long frame with the columns ``symbol, timestamp, open, high, low, close,
volume``, sorted by symbol and then time; a single market is a universe of one symbol. Files
carry a ``symbol`` column, or each file's stem is its symbol (``msft_daily.parquet`` → symbol
``msft_daily``). Every symbol is validated with the single-series raw contract
(:func:`patx_core.data.contract.validate_raw`), so each message names the rule, the column, the
rows — and the symbol.

Symbols with fewer rows than the variant needs are skipped with a logged reason; the dataset is
refused only when none remains (with the reason for each symbol).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from patx_core.storage.artifacts import PathLike, sha256_file
from patx_core.data.intervals import format_interval, interval_differs
from patx_core.data.contract import (
    RAW_COLUMNS,
    RULE_ENOUGH_ROWS,
    RawDataError,
    Violation,
    raw_prices_schema,
    read_candle_file,
    too_few_rows,
    validate_raw,
)

logger = logging.getLogger(__name__)

SYMBOL = "symbol"
UNIVERSE_COLUMNS: tuple[str, ...] = (SYMBOL, *RAW_COLUMNS)


# The validated long frame: the raw contract within each symbol, one row per (symbol, timestamp).
UNIVERSE_PRICES_SCHEMA = raw_prices_schema(symbol=SYMBOL)


@dataclass(frozen=True)
class Universe:
    """A validated long frame and what was left out of it."""

    frame: pl.DataFrame  # UNIVERSE_COLUMNS, sorted by (symbol, timestamp)
    skipped: dict[str, str] = field(default_factory=dict)  # symbol -> why it was left out

    @property
    def symbols(self) -> list[str]:
        return self.frame.get_column(SYMBOL).unique(maintain_order=True).to_list()


def symbol_frames(frame: pl.DataFrame, default_symbol: str) -> dict[str, pl.DataFrame]:
    """One frame per symbol (``RAW_COLUMNS`` and extras, file order kept), by its ``symbol`` column
    or, without one, all of ``frame`` under ``default_symbol``."""
    if SYMBOL not in frame.columns:
        return {default_symbol: frame}
    nulls = frame.get_column(SYMBOL).is_null()
    if nulls.any():
        rows = tuple(int(i) for i in nulls.arg_true().head(5))
        raise RawDataError(default_symbol, [Violation("no null or NaN values", SYMBOL, int(nulls.sum()), rows,
                                                      f"{int(nulls.sum())} row(s) have no symbol, e.g. rows {rows}")])
    frame = frame.with_columns(pl.col(SYMBOL).cast(pl.String))
    return {str(key[0]): part.drop(SYMBOL) for key, part in frame.group_by(SYMBOL, maintain_order=True)}


def symbol_source(symbol: str, sources: Sequence[str]) -> str:
    """How a message names one symbol's data: the symbol and the file(s) it came from."""
    return f"symbol {symbol!r} ({', '.join(sources)})"


def validate_symbols(parts: dict[str, list[tuple[pl.DataFrame, str]]], *, min_rows: int | None = None,
                     min_rows_for: str = "", volume: bool = True) -> Universe:
    """Validate each symbol's frames (in file order) and join them into one universe.

    Every rule violation of every symbol is collected and raised together, naming the symbol; a
    symbol that only lacks rows is skipped (and logged), unless no symbol would remain.
    """
    frames: list[pl.DataFrame] = []
    violations: list[Violation] = []
    short: dict[str, Violation] = {}
    source = ""
    for symbol in sorted(parts):
        pieces = parts[symbol]
        source = symbol_source(symbol, [src for _, src in pieces])
        frame = pl.concat([f for f, _ in pieces], how="diagonal_relaxed") if len(pieces) > 1 else pieces[0][0]
        try:
            valid = validate_raw(frame, source=source, volume=volume)
        except RawDataError as exc:
            violations.extend(Violation(v.rule, v.column, v.count, v.rows, f"{source}: {v.detail}")
                              for v in exc.violations)
            continue
        if min_rows is not None and valid.height < min_rows:
            short[symbol] = too_few_rows(valid.height, min_rows, min_rows_for)
            continue
        frames.append(valid.select(pl.lit(symbol, dtype=pl.String).alias(SYMBOL), *RAW_COLUMNS))
    if violations:
        if len(parts) == 1:
            raise RawDataError(source, [_strip_source(v, source) for v in violations])
        raise RawDataError(f"{len(parts)} symbols", violations)
    if not frames:
        if len(parts) == 1:
            raise RawDataError(source, list(short.values()))
        raise RawDataError(f"{len(parts)} symbols", [
            Violation(RULE_ENOUGH_ROWS, "", 0, (), f"symbol {s!r}: {v.detail}")
            for s, v in short.items()])
    skipped = {s: f"skipped: {v.detail}" for s, v in short.items()}
    for symbol, reason in skipped.items():
        logger.warning("symbol %r %s", symbol, reason)
    return Universe(frame=pl.concat(frames), skipped=skipped)


def _strip_source(v: Violation, source: str) -> Violation:
    detail = v.detail[len(source) + 2:] if v.detail.startswith(f"{source}: ") else v.detail
    return Violation(v.rule, v.column, v.count, v.rows, detail)


def read_universe(files: Sequence[PathLike], *, min_rows: int | None = None, min_rows_for: str = "",
                  symbol: str | None = None, volume: bool = True) -> Universe:
    """Read every file of a dataset (in the order given) and validate it per symbol.

    Rows of a file without a ``symbol`` column belong to ``symbol`` when given (the dataset's
    ``symbol`` field), else to the file's stem. ``volume`` is the dataset's field (False: the
    range stands in for volume, :data:`patx_core.data.contract.RANGE_AS_VOLUME`).
    """
    if not files:
        raise RawDataError("dataset", [Violation("file exists", "", 0, (), "the source matches no file")])
    parts: dict[str, list[tuple[pl.DataFrame, str]]] = {}
    for path in files:
        frame = read_candle_file(path)
        for name, part in symbol_frames(frame, symbol or Path(str(path)).stem).items():
            parts.setdefault(name, []).append((part, str(path)))
    return validate_symbols(parts, min_rows=min_rows, min_rows_for=min_rows_for, volume=volume)


def universe_spacing_seconds(frame: pl.DataFrame) -> float | None:
    """Median candle spacing over every symbol's own consecutive candles."""
    gaps = frame.select(pl.col("timestamp").diff().over(SYMBOL).dt.total_microseconds()).to_series().drop_nulls()
    return float(np.median(gaps.to_numpy())) / 1e6 if gaps.len() else None


def check_interval(frame: pl.DataFrame, interval_seconds: float, *, dataset: str, interval: str) -> float | None:
    """Refuse data whose median candle spacing is not the dataset's declared ``interval``.

    Annualized figures and the inference interval warning rest on the interval, so a daily file
    declared hourly must fail here, before anything is written. Returns the measured spacing.
    """
    spacing = universe_spacing_seconds(frame)
    if spacing is not None and interval_differs(spacing, interval_seconds):
        raise RawDataError(f"dataset {dataset!r}", [Violation(
            "candle interval", "timestamp", 0, (),
            f"the data's median candle spacing is {format_interval(spacing)} but the dataset declares "
            f"interval = {interval!r}; fix `interval` in the datasets file (or the data)")])
    return spacing


def source_digest(files: Iterable[PathLike]) -> str:
    """sha256 of a dataset's input: the file's own digest for one file, else the digest of every
    file's name and digest (so renaming, adding or changing any file changes it)."""
    files = list(files)
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{Path(str(f)).name}\t{sha256_file(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()
