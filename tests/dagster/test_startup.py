"""Loading the code location and ``patx verdict`` start without torch: only a step that trains or
predicts loads it, so the webserver, the daemon, every run's launcher process and the verdict
line do not pay its seconds of import."""

from __future__ import annotations

from tests.cli_entry_points import installed_env, patx_script, torch_loaded


def test_importing_the_code_location_does_not_import_torch(tmp_path):
    assert not torch_loaded("import patx_dagster, patx_dagster.definitions", installed_env(tmp_path))


def test_patx_verdict_starts_without_torch(tmp_path):
    # An empty instance: the verdict reads no run and says so; torch is never needed to say it.
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = installed_env(tmp_path, DAGSTER_HOME=str(home))
    assert not torch_loaded(patx_script("verdict", "nasdaq", "baseline"), env)
