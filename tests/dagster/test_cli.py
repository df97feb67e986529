"""The shell paths a user takes: `dagster asset materialize … --partition 'nasdaq|smoke'`, and `make
materialize`, whose last lines are the verdict or the failing step's own error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from patx_core.storage.artifacts import read_json
from patx_core.storage.checkpoint import load_checkpoint
from tests.cells import write_datasets_file
from tests.dagster.harness import cell_paths

REPO = Path(__file__).resolve().parents[2]


def _shell_env(tmp_path: Path, raw: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "instance.yaml", home / "dagster.yaml")
    datasets = write_datasets_file(tmp_path / "datasets.toml", {"nasdaq": {"source": str(raw), "interval": "1d"}})
    return {**os.environ, "DAGSTER_HOME": str(home), "PATX_DATA_DIR": str(tmp_path / "data"),
            "PATX_DATASETS": str(datasets)}


def test_dagster_asset_materialize_from_the_shell_leaves_the_three_artifacts(tmp_path, planted_raw):
    env = _shell_env(tmp_path, planted_raw)
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster) if dagster.exists() else "dagster", "asset", "materialize", "-m", "patx_dagster",
           "--select", "*latest_signal,variant_leaderboard", "--partition", "nasdaq|smoke"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    paths = cell_paths(tmp_path / "data")
    ckpt = load_checkpoint(paths.checkpoint)
    assert ckpt.variant.name == "smoke" and ckpt.window_size == 32 and ckpt.interval_seconds == 86_400
    scaler = __import__("pickle").loads(paths.scaler.read_bytes())  # the guide's scaler.pkl format
    assert set(scaler) == {"mean", "std", "feature_columns"}
    assert list(scaler["feature_columns"]) == list(ckpt.feature_columns)
    assert (scaler["mean"] == ckpt.scaler.mean).all()
    ev = read_json(paths.evaluation_json)
    assert ev["dataset"]["path"] == str(planted_raw) and ev["dataset"]["name"] == "nasdaq"
    assert ev["dataset"]["symbols"] == ["planted"] and ev["dataset"]["rows"] == 3000
    assert ev["training"]["params"] > 0 and ev["training"]["device"] == "cpu"
    assert ev["checks"]["precision_gate"]["passed"] is True
    assert (tmp_path / "data" / "leaderboard.md").exists()
    assert "RUN_SUCCESS" in out.stderr + out.stdout


def _make(tmp_path: Path, env: dict[str, str], variant: str = "smoke") -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip(f"{venv} was not built by `make setup` (run the suite with `make test`)")
    return subprocess.run(["make", "-s", "materialize", "DATASET=nasdaq", f"VARIANT={variant}", f"VENV={venv}",
                           f"DAGSTER_HOME={env['DAGSTER_HOME']}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_make_materialize_ends_with_the_rule_of_a_bad_input_and_fails(tmp_path, planted_raw):
    bad = tmp_path / "bad.parquet"
    frame = pl.read_parquet(planted_raw)
    frame.with_columns(pl.when(pl.int_range(pl.len()) == 321).then(-1.0).otherwise(pl.col("close"))
                       .alias("close")).write_parquet(bad)
    out = _make(tmp_path, _shell_env(tmp_path, bad))
    assert out.returncode != 0
    last = (out.stdout + out.stderr).strip().splitlines()[-3:]
    assert any("rule 'prices > 0' failed for column 'close'" in line and "row 321" in line for line in last), last


def test_make_materialize_exits_0_on_a_refused_model_and_ends_with_the_verdict(tmp_path, noise_raw):
    out = _make(tmp_path, _shell_env(tmp_path, noise_raw))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-4].startswith("nasdaq|smoke: precision gate FAILED on test")
    assert lines[-3].startswith("diagnosis: ") and lines[-1].startswith("report: ")
    # an abstaining model has F1 0: its failed WARN check is a line of its own just above the verdict
    assert lines[-5].startswith("warning: check evaluation_report_f1_above_0_5 failed: "), lines[-8:]
    assert " DEBUG " not in out.stdout + out.stderr, "shell runs log at INFO"
    assert "epoch 1:" in out.stdout + out.stderr, "the per-epoch progress lines stay"


def test_make_materialize_ends_with_a_variant_typo_and_its_near_match_before_dagster_starts(tmp_path, planted_raw):
    variants = tmp_path / "variants.toml"
    variants.write_text((REPO / "variants.toml").read_text() + "\n[my_smoke]\n[my_smoke.train]\nmax_epoch = 2\n")
    env = {**_shell_env(tmp_path, planted_raw), "PATX_VARIANTS": str(variants)}
    out = _make(tmp_path, env, variant="my_smoke")
    assert out.returncode != 0
    ours = [line for line in (out.stdout + out.stderr).strip().splitlines() if not line.startswith("make: ***")]
    assert ours[-1].startswith(f"variants file {variants}: variant 'my_smoke' [train]: unknown field(s) "
                               "['max_epoch']; did you mean 'max_epochs'?"), ours[-5:]
    assert "Traceback" not in out.stdout + out.stderr, "one line, not pages of tracebacks"
