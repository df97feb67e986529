"""Importing the library and starting a ``patx`` command that neither trains nor predicts does not
load torch: torch costs seconds per process, paid by every CLI call and every subprocess a test or
an orchestrator starts."""

from __future__ import annotations

import pytest

from tests.cli_entry_points import installed_env, patx_script, torch_loaded


@pytest.mark.parametrize("module", ["patx_core", "patx_core.pipeline", "patx_core.evaluation.walk_forward",
                                    "patx_core.evaluation.fold_store", "patx_core.serving.ledger"])
def test_importing_the_library_does_not_import_torch(module, tmp_path):
    assert not torch_loaded(f"import {module}", installed_env(tmp_path)), f"`import {module}` loaded torch"


@pytest.mark.parametrize("args", [("--help",), ("check",), ("ledger", "--help"), ("ingest", "--help"),
                                  ("predict", "--help")])
def test_a_patx_command_that_does_not_predict_starts_without_torch(args, tmp_path):
    assert not torch_loaded(patx_script(*args), installed_env(tmp_path)), f"`patx {' '.join(args)}` loaded torch"


def test_the_probe_sees_torch_when_a_command_loads_it(tmp_path):
    # The pin must be able to fail: a script that imports the training loop reports torch.
    assert torch_loaded("import patx_core.model.trainer", installed_env(tmp_path))
