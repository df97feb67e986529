"""Where patx reads and writes: the file-layout contract other tools rely on.

``PATX_DATA_DIR`` (default ``./data``) holds every output, one folder per dataset
(``datasets.toml``; see :mod:`patx_core.settings.datasets`)::

    <dataset>/checkpoints/<variant>/best_model.pth, scaler.pkl   trained model
    <dataset>/reports/<variant>/evaluation.json, report.md, *.png
    <dataset>/models/<variant>/best_model.pth, manifest.json     the promoted champion
    <dataset>/signals/<variant>/latest.json                      newest inference
    <dataset>/ledger/<variant>/signals.parquet                   every signal, recorded before its outcome
    <dataset>/ledger/<variant>/track_record.json, .md, *.png     live figures of the ledger, the monitor
    <dataset>/work/<variant>/...                                 intermediate data (features, windows)
    <dataset>/search/<variant>/study.journal, trials.parquet,    a hyper-parameter search on val
        search.md, *.png, best.toml
    <dataset>/curated/                                           ingested candles (landing datasets)
    <dataset>/looks.parquet                                      every model judged on a gate window
    leaderboard.md                                               every (dataset, variant)

``PATX_DATA_DIR`` may be an fsspec URL (``s3://bucket/patx``) so steps on different
machines share artifacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from patx_core.storage.artifacts import PathLike, as_path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = "data"


def data_dir() -> Path:
    return as_path(os.environ.get("PATX_DATA_DIR") or DEFAULT_DATA_DIR)


def _root(root: PathLike | None) -> Path:
    return as_path(root) if root is not None else data_dir()


@dataclass(frozen=True)
class DatasetPaths:
    """The folder of one dataset under a data dir, and what is shared by its variants."""

    data_root: Path
    dataset: str

    @classmethod
    def for_dataset(cls, dataset: str, root: PathLike | None = None) -> "DatasetPaths":
        return cls(data_root=_root(root), dataset=dataset)

    @property
    def root(self) -> Path:
        return self.data_root / self.dataset

    @property
    def curated_dir(self) -> Path:
        return self.root / "curated"

    @property
    def looks(self) -> Path:
        """``looks.parquet``: every model judged on a gate window of this dataset, what the
        selection gate counts (:mod:`patx_core.evaluation.looks`)."""
        return self.root / "looks.parquet"

    @property
    def looks_lock(self) -> Path:
        """Held while an evaluation reads, extends and publishes ``looks.parquet``."""
        return self.root / "looks.lock"

    def variant(self, variant: str) -> "VariantPaths":
        return VariantPaths(root=self.root, variant=variant)


@dataclass(frozen=True)
class VariantPaths:
    """Every artifact path of one variant under one dataset's folder (``root``)."""

    root: Path
    variant: str

    @property
    def dataset(self) -> DatasetPaths:
        """The paths its variants share (the looks ledger)."""
        return DatasetPaths(data_root=self.root.parent, dataset=self.root.name)

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
    def ledger_dir(self) -> Path:
        return self.root / "ledger" / self.variant

    @property
    def ledger(self) -> Path:
        """``signals.parquet``: one row per (symbol, candle, model, role), never rewritten."""
        return self.ledger_dir / "signals.parquet"

    @property
    def ledger_lock(self) -> Path:
        """Held while a run reads, extends and publishes the ledger: one writer per cell at a time."""
        return self.ledger_dir / "ledger.lock"

    @property
    def track_record_json(self) -> Path:
        return self.ledger_dir / "track_record.json"

    @property
    def track_record_md(self) -> Path:
        return self.ledger_dir / "track_record.md"

    @property
    def work_dir(self) -> Path:
        return self.root / "work" / self.variant

    @property
    def input_json(self) -> Path:
        """What ``raw_prices`` read (files, digest, symbols, spacing): later steps record it."""
        return self.work_dir / "input.json"

    @property
    def scaler_json(self) -> Path:
        """The scaler ``splits`` fitted on train, for the steps after it."""
        return self.work_dir / "scaler.json"

    @property
    def windows(self) -> Path:
        """The windowed tensors ``windows`` built (``WindowedData.save``)."""
        return self.work_dir / "windows.npz"

    @property
    def seed_predictions(self) -> Path:
        """Each seed's val/test probabilities of a seed study, for the evaluation's per-seed gates."""
        return self.work_dir / "seed_predictions.npz"

    @property
    def search_dir(self) -> Path:
        """``patx search``'s study and what it found; nothing in it is read by the graph."""
        return self.root / "search" / self.variant

    @property
    def search_journal(self) -> Path:
        """The Optuna study (a JournalFileBackend log): what lets a killed search resume."""
        return self.search_dir / "study.journal"

    @property
    def search_lock(self) -> Path:
        """Held for a whole search: two searches of one cell take turns."""
        return self.search_dir / "search.lock"

    @property
    def search_trials(self) -> Path:
        return self.search_dir / "trials.parquet"

    @property
    def search_md(self) -> Path:
        return self.search_dir / "search.md"

    @property
    def search_best(self) -> Path:
        """``best.toml``: the best trial as a complete variant table ``[<variant>_tuned]``."""
        return self.search_dir / "best.toml"


def leaderboard_md(root: PathLike | None = None) -> Path:
    """``<PATX_DATA_DIR>/leaderboard.md``: one row per (dataset, variant)."""
    return _root(root) / "leaderboard.md"


def evaluations_on_disk(root: PathLike | None = None) -> dict[tuple[str, str], Path]:
    """``{(dataset, variant): <root>/<dataset>/reports/<variant>/evaluation.json}`` for every one that exists.

    Read from the layout, not from the datasets and variants files: a cell a user's
    ``PATX_DATASETS`` no longer names still has its results on disk, and they must stay visible.
    """
    found = {}
    for path in as_path(_root(root)).glob("*/reports/*/evaluation.json"):
        found[(path.parent.parent.parent.name, path.parent.name)] = path
    return dict(sorted(found.items()))
