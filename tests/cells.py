"""Grid cells over data the tests write themselves: a dataset of one or many symbols in a tmp dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import polars as pl

from patx_core.settings.config import VariantConfig
from patx_core.settings.datasets import DatasetConfig
from patx_core.settings.grid import GridCell, market_variant
from patx_core.storage.paths import DatasetPaths
from patx_core.settings.variants import get_variant


def write_symbols(folder: Path, frames: pl.DataFrame | Mapping[str, pl.DataFrame]) -> Path:
    """One parquet file per symbol (the file stem is the symbol); a lone frame is symbol ``data``.
    Returns the file for one symbol, else the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(frames, pl.DataFrame):
        path = folder / "data.parquet"
        frames.write_parquet(path)
        return path
    for symbol, frame in frames.items():
        frame.write_parquet(folder / f"{symbol}.parquet")
    return folder


def make_cell(root: Path, frames: pl.DataFrame | Mapping[str, pl.DataFrame], variant: VariantConfig | str, *,
              name: str = "test", **dataset_fields: Any) -> GridCell:
    """The cell of ``variant`` on a dataset made of ``frames``, with outputs under ``root/data``."""
    source = write_symbols(root / "raw" / name, frames)
    dataset = DatasetConfig(name=name, source=str(source), **dataset_fields)
    variant = get_variant(variant) if isinstance(variant, str) else variant
    return GridCell(dataset=dataset, variant=market_variant(variant, dataset),
                    dataset_paths=DatasetPaths.for_dataset(name, root / "data"))


def write_datasets_file(path: Path, datasets: Mapping[str, Mapping[str, Any]]) -> Path:
    """A datasets TOML with the given tables (string, number and bool values)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return repr(v) if isinstance(v, (int, float)) else f'"{v}"'

    text = "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in fields.items()) + "\n"
                   for name, fields in datasets.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
