"""Where patx reads and writes: the file-layout contract other tools rely on.

``PATX_RAW_PARQUET`` names the input (default: the bundled NASDAQ sample);
``PATX_DATA_DIR`` (default ``./data``) holds every output::

    checkpoints/<variant>/best_model.pth, scaler.pkl   trained model (training issue formats)
    reports/<variant>/evaluation.json, report.md, *.png
    reports/leaderboard.md
    models/<variant>/best_model.pth, manifest.json     the promoted champion
    signals/<variant>/latest.json                      newest inference
    work/<variant>/...                                 intermediate data (features, windows)

``PATX_DATA_DIR`` may be an fsspec URL (``s3://bucket/patx``) so steps on different
machines share artifacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from patx_core.artifacts import PathLike, as_path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_SAMPLE = REPO_ROOT / "data" / "raw" / "nasdaq_daily_1999_2018.parquet"
DEFAULT_DATA_DIR = "data"


def raw_parquet_path() -> Path:
    return as_path(os.environ.get("PATX_RAW_PARQUET") or BUNDLED_SAMPLE)


def data_dir() -> Path:
    return as_path(os.environ.get("PATX_DATA_DIR") or DEFAULT_DATA_DIR)


@dataclass(frozen=True)
class VariantPaths:
    """Every artifact path of one variant under one data dir."""

    root: Path
    variant: str

    @classmethod
    def for_variant(cls, variant: str, root: PathLike | None = None) -> "VariantPaths":
        return cls(root=as_path(root) if root is not None else data_dir(), variant=variant)

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints" / self.variant

    @property
    def checkpoint(self) -> Path:
        return self.checkpoint_dir / "best_model.pth"

    @property
    def scaler(self) -> Path:
        return self.checkpoint_dir / "scaler.pkl"

    @property
    def report_dir(self) -> Path:
        return self.root / "reports" / self.variant

    @property
    def evaluation_json(self) -> Path:
        return self.report_dir / "evaluation.json"

    @property
    def report_md(self) -> Path:
        return self.report_dir / "report.md"

    @property
    def champion_dir(self) -> Path:
        return self.root / "models" / self.variant

    @property
    def champion_checkpoint(self) -> Path:
        return self.champion_dir / "best_model.pth"

    @property
    def champion_manifest(self) -> Path:
        return self.champion_dir / "manifest.json"

    @property
    def signal_json(self) -> Path:
        return self.root / "signals" / self.variant / "latest.json"

    @property
    def work_dir(self) -> Path:
        return self.root / "work" / self.variant


def leaderboard_md(root: PathLike | None = None) -> Path:
    return (as_path(root) if root is not None else data_dir()) / "reports" / "leaderboard.md"
