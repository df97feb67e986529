"""The grid resource: one set of settings per run, and the input's digest as raw_prices' data version."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from patx_core import pipeline
from patx_core.storage.artifacts import sha256_file
from patx_dagster.assets import ALL_ASSETS
from patx_dagster.io_manager import IO_MANAGERS
from patx_dagster.partitions import partition_key
from tests.dagster.harness import DATASET, failure_text, grid_for

REPO = Path(__file__).resolve().parents[2]


def test_a_run_keeps_the_settings_it_started_with_when_variants_toml_changes_under_it(
        tmp_path, planted_raw, monkeypatch):
    variants = tmp_path / "variants.toml"
    shutil.copy(REPO / "variants.toml", variants)
    grid = grid_for(planted_raw, tmp_path / "data", variants_file=variants)
    build_features = pipeline.build_features

    def features_then_edit(raw, cell):
        # A user edits variants.toml while the run is under way: `smoke` now has another window
        # and `baseline` is the only variant left.
        variants.write_text("[baseline]\n[baseline.data]\nwindow_size = 16\n")
        return build_features(raw, cell)

    monkeypatch.setattr(pipeline, "build_features", features_then_edit)
    result = dg.materialize(ALL_ASSETS, partition_key=partition_key(DATASET, "smoke"),
                            selection=["raw_prices", "features", "splits", "windows"], raise_on_error=False,
                            resources={"grid": grid, **IO_MANAGERS})
    assert result.success, failure_text(result)
    (windows,) = result.asset_materializations_for_node("windows")
    assert windows.metadata["window_size"].value == 32, "the later steps used the settings of the run's start"

    with pytest.raises(KeyError, match="unknown variant 'smoke'"):
        grid.cell(f"{DATASET}|smoke")  # the edit was real: outside that run the file is read anew


def test_raw_prices_data_version_is_the_input_sha256(good_run, planted_raw):
    _, result = good_run
    (raw_prices,) = result.asset_materializations_for_node("raw_prices")
    assert raw_prices.tags["dagster/data_version"] == sha256_file(planted_raw)
