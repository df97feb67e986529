"""The partition grid: one place that turns a (dataset, variant) pair into configs and paths.

Every step of :mod:`patx_core.pipeline` takes a :class:`GridCell` instead of a dataset name,
a variant and a handful of paths, so adding a dimension (or a path) changes this module only.
The cell's variant carries the dataset's market settings: ``cost_bps`` replaces the variant's
``backtest.cost_bps`` (costs belong to the market, not to a model configuration).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from patx_core.storage.artifacts import PathLike, as_path, read_json
from patx_core.settings.config import VariantConfig
from patx_core.settings.datasets import DatasetConfig, load_datasets
from patx_core.storage.paths import DatasetPaths, VariantPaths, data_dir
from patx_core.settings.variants import load_variants

#: Separator of a partition key, as Dagster writes a two-dimensional key: ``nasdaq|baseline``.
KEY_SEPARATOR = "|"


def cell_key(dataset: str, variant: str) -> str:
    return f"{dataset}{KEY_SEPARATOR}{variant}"


def parse_key(key: str) -> tuple[str, str]:
    """``"nasdaq|baseline"`` → ``("nasdaq", "baseline")``."""
    dataset, sep, variant = key.partition(KEY_SEPARATOR)
    if not sep or not dataset or not variant or KEY_SEPARATOR in variant:
        raise ValueError(f"partition key must be '<dataset>{KEY_SEPARATOR}<variant>', e.g. "
                         f"'nasdaq{KEY_SEPARATOR}baseline'; got {key!r}")
    return dataset, variant


def market_variant(variant: VariantConfig, dataset: DatasetConfig) -> VariantConfig:
    """``variant`` with the dataset's market settings applied (today: the trading cost)."""
    if dataset.cost_bps is None:
        return variant
    backtest = dataclasses.replace(variant.backtest, cost_bps=float(dataset.cost_bps))
    return dataclasses.replace(variant, backtest=backtest)


@dataclass(frozen=True)
class GridCell:
    """One partition: the dataset, the variant (market settings applied) and where it all lives."""

    dataset: DatasetConfig
    variant: VariantConfig
    dataset_paths: DatasetPaths

    @property
    def key(self) -> str:
        return cell_key(self.dataset.name, self.variant.name)

    @property
    def paths(self) -> VariantPaths:
        return self.dataset_paths.variant(self.variant.name)

    def input_files(self) -> list[Path]:
        """The files ``raw_prices`` reads: the curated store of a landing dataset once it holds
        candles, else the dataset's ``source``."""
        if self.dataset.landing:
            curated = sorted(p for p in self.dataset_paths.curated_dir.glob("**/*.parquet") if p.is_file())
            if curated:
                return curated
        return self.dataset.source_files()

    def input_info(self) -> dict:
        """The ``dataset`` facts ``raw_prices`` recorded for this cell (files, digest, symbols, spacing)."""
        path = self.paths.input_json
        if not path.exists():
            raise RuntimeError(f"{path} is missing: materialize raw_prices for {self.key} first")
        return read_json(path)


@dataclass(frozen=True)
class Grid:
    """Every dataset and variant of one datasets file and one variants file, under one data dir."""

    datasets: dict[str, DatasetConfig]
    variants: dict[str, VariantConfig]
    data_root: Path

    @classmethod
    def load(cls, *, datasets_file: PathLike | None = None, variants_file: PathLike | None = None,
             data_root: PathLike | None = None) -> "Grid":
        return cls(datasets=load_datasets(datasets_file), variants=load_variants(variants_file),
                   data_root=as_path(data_root) if data_root is not None else data_dir())

    def cell(self, dataset: str, variant: str) -> GridCell:
        if dataset not in self.datasets:
            raise KeyError(f"unknown dataset {dataset!r}; defined: {sorted(self.datasets)}")
        if variant not in self.variants:
            raise KeyError(f"unknown variant {variant!r}; defined: {sorted(self.variants)}")
        ds = self.datasets[dataset]
        return GridCell(dataset=ds, variant=market_variant(self.variants[variant], ds),
                        dataset_paths=DatasetPaths.for_dataset(dataset, self.data_root))

    def cell_for_key(self, key: str) -> GridCell:
        return self.cell(*parse_key(key))

    def nightly_cells(self) -> list[GridCell]:
        """Every pair whose dataset and variant are both ``nightly``."""
        return [self.cell(d, v) for d, ds in self.datasets.items() if ds.nightly
                for v, var in self.variants.items() if var.nightly]


def resolve_cell(dataset: str, variant: str, *, datasets_file: PathLike | None = None,
                 variants_file: PathLike | None = None, data_root: PathLike | None = None) -> GridCell:
    """The cell of ``dataset`` × ``variant`` (files default to ``$PATX_DATASETS``/``$PATX_VARIANTS``)."""
    return Grid.load(datasets_file=datasets_file, variants_file=variants_file, data_root=data_root).cell(
        dataset, variant)
