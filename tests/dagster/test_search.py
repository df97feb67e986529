"""The ``search_study`` asset: the search on the grid, and its winner judged by one ordinary run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from patx_core.settings.variants import get_variant, load_variants, variant_toml
from patx_dagster.assets import ALL_ASSETS
from patx_dagster.io_manager import IO_MANAGERS
from patx_dagster.jobs import retrain_job
from patx_dagster.partitions import partition_key
from patx_core.storage.artifacts import read_json
from tests.dagster.harness import DATASET, cell_paths, grid_for, materialized


def _variants(tmp_path, trials: int = 2):
    """``smoke`` with two short trials, and ``seed`` (no search table)."""
    smoke = get_variant("smoke")
    smoke = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, max_epochs=3, patience=2),
                                search=dataclasses.replace(smoke.search, trials=trials))
    path = tmp_path / "variants.toml"
    path.write_text(variant_toml(smoke) + variant_toml(get_variant("seed")))
    return path


def _run(planted_raw, data_dir, variants, variant: str, selection: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(ALL_ASSETS, partition_key=partition_key(DATASET, variant), selection=selection,
                          resources={"grid": grid_for(planted_raw, data_dir, variants_file=variants), **IO_MANAGERS},
                          raise_on_error=False)


def test_search_study_writes_the_search_and_shows_it_in_the_ui(tmp_path, planted_raw):
    data_dir = tmp_path / "data"
    result = _run(planted_raw, data_dir, _variants(tmp_path), "smoke", ["search_study"])
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["finished"].value == 2 and meta["objective"].value == "val_roc_auc"
    assert "val_roc_auc on val by trial" in meta["search"].value and "data:image/png;base64," in meta["search"].value
    paths = cell_paths(data_dir, "smoke")
    assert paths.search_best.exists() and "smoke_tuned" in load_variants(paths.search_best)


def test_a_variant_without_a_search_materializes_nothing_and_succeeds(tmp_path, planted_raw):
    result = _run(planted_raw, tmp_path / "data", _variants(tmp_path), "seed", ["search_study"])
    assert result.success and "search_study" not in materialized(result)


def test_the_nightly_retrain_never_searches():
    assert "search_study" not in {k.to_user_string() for k in retrain_job.selection.resolve(ALL_ASSETS)}


@pytest.mark.slow
def test_best_toml_materializes_and_is_judged_as_one_look(tmp_path, planted_raw):
    """The judge command's path: ``PATX_VARIANTS=<best.toml>`` and an ordinary materialization."""
    from tests.dagster.test_cli import REPO, _shell_env

    data_dir = tmp_path / "data"
    assert _run(planted_raw, data_dir, _variants(tmp_path), "smoke", ["search_study"]).success
    best = cell_paths(data_dir, "smoke").search_best
    env = {**_shell_env(tmp_path, planted_raw), "PATX_VARIANTS": str(best)}
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster) if dagster.exists() else "dagster", "asset", "materialize", "-m", "patx_dagster",
           "--select", "*latest_signal", "--partition", f"{DATASET}|smoke_tuned"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    evaluation = read_json(cell_paths(data_dir, "smoke_tuned").evaluation_json)
    assert evaluation["config"]["train"]["lr"] == load_variants(best)["smoke_tuned"].train.lr
    # The selection gate's looks ledger counts how often a cell was judged on test; the search's
    # trials never were, so the tuned variant's one materialization is its one look.
    assert evaluation["checks"]["precision_gate_selection"]["n_looks"] == 1
