"""The datasets file: named markets — one symbol or a universe — that a user adds without code.

``PATX_DATASETS`` names the file (default: ``datasets.toml`` at the repository root). Every
path in it (``source``, ``landing``) is relative to the file's own folder, so a datasets file
and its data can move together. A dataset is one axis of the Dagster partition grid; a
variant (``variants.toml``) is the other.

Market settings live here rather than in a variant, because they belong to the data: the
candle ``interval`` (checked against the data, and what annualization and the predict warning
use) and the trading cost ``cost_bps``, which replaces the variant's ``backtest.cost_bps``.
"""

from __future__ import annotations

import glob as globlib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from patx_core.storage.artifacts import PathLike, as_path
from patx_core.settings.config import (COST_BPS_RANGE, NAME_RULE, is_valid_cost_bps, is_valid_name, read_named_tables,
                                       refuse_unknown_fields)
from patx_core.settings.durations import parse_duration
from patx_core.storage.paths import REPO_ROOT

DEFAULT_DATASETS_FILE = REPO_ROOT / "datasets.toml"

#: Names a dataset folder would collide with under ``PATX_DATA_DIR`` (the bundled samples, the
#: unpartitioned assets' work files).
RESERVED_NAMES = frozenset({"raw", "work"})


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


@dataclass(frozen=True)
class DatasetConfig:
    """One market: where its candles come from and the settings that belong to the market."""

    name: str
    description: str = ""
    # A parquet file, a folder of them, or a glob; "" only when ``landing`` feeds the dataset.
    # Stored resolved (absolute, or a URL) by :func:`load_datasets`.
    source: str = ""
    interval: str = "1d"  # nominal candle spacing, checked against the data's median spacing
    # Per side, in basis points. None: the variant's backtest.cost_bps (patx_core.settings.config).
    cost_bps: float | None = None
    nightly: bool = True  # part of the nightly retrain (with variants that are nightly too)
    # Folder new candle files are dropped into (patx_core.ingest.landing); "" = no landing folder.
    landing: str = ""
    allow_revisions: bool = False  # a landed value may replace a stored one (else the batch is refused)
    max_staleness: str = ""  # e.g. "4d": the freshness check warns past it; "" = no check
    # The symbol of candles in files without a ``symbol`` column. "": a source file's stem names
    # its symbol (as before this field existed, so trained checkpoints, signals and evaluations
    # keep theirs); a landing dataset's one seed file and its batches take the dataset's name.
    symbol: str = ""
    # false: the data has no real volume (FX quotes from most brokers, many index exports): a missing
    # or constant volume column is accepted, and each candle's range stands in for it (see
    # patx_core.data.contract.RANGE_AS_VOLUME). Only a dataset that says so is relaxed.
    volume: bool = True

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if not is_valid_name(self.name):
            raise ValueError(f"{where}: name must be {NAME_RULE}")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"{where}: name must not be one of {sorted(RESERVED_NAMES)} (folders of PATX_DATA_DIR)")
        for name in ("description", "source", "interval", "landing", "max_staleness", "symbol"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{where}: {name} must be a string, got {getattr(self, name)!r}")
        for name in ("nightly", "allow_revisions", "volume"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{where}: {name} must be true or false, got {getattr(self, name)!r}")
        parse_duration(self.interval, field=f"{where}: interval")
        if self.max_staleness:
            parse_duration(self.max_staleness, field=f"{where}: max_staleness")
        if self.cost_bps is not None and not is_valid_cost_bps(self.cost_bps):
            lo, hi = COST_BPS_RANGE
            raise ValueError(f"{where}: cost_bps must be in [{lo:g}, {hi:g}], got {self.cost_bps!r}")
        if not self.source and not self.landing:
            raise ValueError(f"{where}: needs a source (file, folder or glob) or a landing folder")

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)

    @property
    def max_staleness_seconds(self) -> float | None:
        return parse_duration(self.max_staleness) if self.max_staleness else None

    def source_files(self) -> list[Path]:
        """The parquet files ``source`` names, sorted; empty when it matches nothing."""
        if not self.source:
            return []
        if _is_glob(self.source):
            if "://" in self.source:
                base = as_path(self.source.split("*", 1)[0].rsplit("/", 1)[0])
                pattern = self.source[len(str(base)) + 1:]
                return sorted(base.glob(pattern))
            return sorted(Path(p) for p in globlib.glob(self.source, recursive=True) if Path(p).is_file())
        path = as_path(self.source)
        if path.is_dir():
            return sorted(p for p in path.glob("*.parquet") if p.is_file())
        return [path]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def datasets_path() -> Path:
    return as_path(os.environ.get("PATX_DATASETS") or DEFAULT_DATASETS_FILE)


def _resolve(base: Path, value: str) -> str:
    if not value or "://" in value or os.path.isabs(value):
        return value
    return str(base / value)


def dataset_from_dict(name: str, values: Mapping[str, Any], *, base: Path) -> DatasetConfig:
    """Build one dataset from its TOML table; relative paths are taken from ``base``."""
    values = dict(values)
    refuse_unknown_fields(f"dataset {name!r}", values, {f.name for f in fields(DatasetConfig)} - {"name"})
    for key in ("source", "landing"):
        if key in values and isinstance(values[key], str):
            values[key] = _resolve(base, values[key])
    return DatasetConfig(name=name, **values)


def load_datasets(path: PathLike | None = None) -> dict[str, DatasetConfig]:
    """Parse and validate every dataset; errors name the file, the dataset and the field."""
    path = as_path(path) if path is not None else datasets_path()
    base = Path(str(path)).parent if "://" not in str(path) else Path(".")
    return read_named_tables(path, "dataset", "PATX_DATASETS",
                             lambda name, values: dataset_from_dict(name, values, base=base))
