"""The shell path a user takes: `dagster asset materialize … --partition smoke` in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from patx_core.artifacts import read_json
from patx_core.checkpoint import load_checkpoint
from patx_core.paths import VariantPaths

REPO = Path(__file__).resolve().parents[2]


def test_dagster_asset_materialize_from_the_shell_leaves_the_three_artifacts(tmp_path, planted_raw):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PATX_DATA_DIR": str(tmp_path / "data"),
           "PATX_RAW_PARQUET": str(planted_raw)}
    dagster = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "dagster"
    cmd = [str(dagster) if dagster.exists() else "dagster", "asset", "materialize", "-m", "patx_dagster",
           "--select", "*", "--partition", "smoke"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    paths = VariantPaths.for_variant("smoke", tmp_path / "data")
    ckpt = load_checkpoint(paths.checkpoint)
    assert ckpt.variant.name == "smoke" and ckpt.window_size == 32
    scaler = __import__("pickle").loads(paths.scaler.read_bytes())  # we wrote it in this test's run
    assert list(scaler["feature_columns"]) == list(ckpt.feature_columns)
    assert (scaler["mean"] == ckpt.scaler.mean).all()
    ev = read_json(paths.evaluation_json)
    assert ev["dataset"]["path"] == str(planted_raw)
    assert ev["dataset"]["rows"] == 3000
    assert ev["training"]["params"] > 0 and ev["training"]["device"] == "cpu"
    assert ev["checks"]["precision_gate"]["passed"] is True
    assert (tmp_path / "data" / "reports" / "leaderboard.md").exists()  # '*' includes the leaderboard
    assert "RUN_SUCCESS" in out.stderr + out.stdout
