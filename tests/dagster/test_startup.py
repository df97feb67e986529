"""Loading the code location and ``patx verdict`` start without torch: only a step that trains or
predicts loads it, so the webserver, the daemon, every run's launcher process and the verdict
line do not pay its seconds of import."""

from __future__ import annotations

from tests.cli_entry_points import first_to_load_torch, installed_env, patx_script


def test_the_code_location_and_patx_verdict_start_without_torch(tmp_path):
    # An empty instance: the verdict reads no run and says so; torch is never needed to say it.
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = installed_env(tmp_path, DAGSTER_HOME=str(home))
    steps = ["import patx_dagster, patx_dagster.definitions", patx_script("verdict", "nasdaq", "baseline")]
    assert first_to_load_torch(steps, env) is None
