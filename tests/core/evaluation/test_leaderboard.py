"""The leaderboard lists every evaluation.json on disk; cells outside the current grid stay, marked."""

from __future__ import annotations

from pathlib import Path

from patx_core import pipeline
from patx_core.settings.datasets import DatasetConfig
from patx_core.settings.grid import GridCell
from patx_core.settings.variants import get_variant
from patx_core.storage.artifacts import atomic_write_json
from patx_core.storage.paths import DatasetPaths


def _evaluation(dataset: str, variant: str, precision: float) -> dict:
    """The fields of an evaluation.json that the leaderboard reads."""
    return {"dataset": {"name": dataset}, "variant": variant, "diagnosis": [],
            "checks": {"precision_gate": {"split": "test", "passed": precision > 0.7}},
            "metrics": {"test": {"precision": precision, "precision_ci95": [precision - 0.1, precision + 0.05],
                                 "n_signals": 40, "lift": 1.5, "f1": 0.5, "roc_auc": 0.6}},
            "backtest": {"total_return": 0.1, "buy_and_hold_return": 0.2, "strategy_percentile": 60.0},
            "training": {"seconds": 12.0}}


def _cell(root: Path, dataset: str, variant: str) -> GridCell:
    return GridCell(dataset=DatasetConfig(name=dataset, source="unused.parquet"), variant=get_variant(variant),
                    dataset_paths=DatasetPaths.for_dataset(dataset, root))


def test_an_evaluation_outside_the_current_grid_stays_on_the_leaderboard_marked(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for dataset, variant, precision in [("eurusd", "smoke", 0.5), ("nasdaq", "baseline", 0.8),
                                        ("eurusd", "baseline", 0.6)]:
        atomic_write_json(root / dataset / "reports" / variant / "evaluation.json",
                          _evaluation(dataset, variant, precision))
    (root / "eurusd" / "reports" / "large").mkdir(parents=True)  # a cell never evaluated: no row
    # The user's PATX_DATASETS now names only eurusd: nasdaq|baseline is outside the grid.
    grid = [_cell(root, "eurusd", "smoke"), _cell(root, "eurusd", "baseline"), _cell(root, "eurusd", "large")]
    step = pipeline.build_leaderboard(root, grid)

    rows = step.value["rows"]
    assert sorted((r["dataset"], r["variant"], r["in_grid"]) for r in rows) == [
        ("eurusd", "baseline", True), ("eurusd", "smoke", True), ("nasdaq", "baseline", False)]
    assert step.metadata["outside_grid"] == ["nasdaq|baseline"]
    text = (root / "leaderboard.md").read_text()
    assert text == step.markdown
    assert "| nasdaq | baseline † | test |" in text and "| eurusd | smoke | test |" in text
    assert "† not in the current grid" in text
    assert "| eurusd | baseline † |" not in text, "cells of the grid are not marked"
