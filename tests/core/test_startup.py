"""Importing the library and starting a ``patx`` command that neither trains nor predicts does not
load torch: torch costs seconds per process, paid by every CLI call and every subprocess a test or
an orchestrator starts."""

from __future__ import annotations

from tests.cli_entry_points import first_to_load_torch, installed_env, patx_script

LIBRARY = ["patx_core", "patx_core.pipeline", "patx_core.evaluation.walk_forward", "patx_core.evaluation.fold_store",
           "patx_core.serving.ledger"]
COMMANDS = [("--help",), ("check",), ("ledger", "--help"), ("ingest", "--help"), ("predict", "--help")]


def test_importing_the_library_does_not_import_torch(tmp_path):
    assert first_to_load_torch([f"import {m}" for m in LIBRARY], installed_env(tmp_path)) is None


def test_a_patx_command_that_does_not_predict_starts_without_torch(tmp_path):
    assert first_to_load_torch([patx_script(*args) for args in COMMANDS], installed_env(tmp_path)) is None


def test_the_probe_names_the_step_that_loads_torch(tmp_path):
    # The pin must be able to fail, and say where: importing the training loop loads torch.
    steps = ["import patx_core", "import patx_core.model.trainer", "import patx_core.pipeline"]
    assert first_to_load_torch(steps, installed_env(tmp_path)) == "import patx_core.model.trainer"
