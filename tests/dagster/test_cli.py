"""The shell paths a user takes: `dagster asset materialize … --partition 'nasdaq|smoke'`, and `make
materialize`, whose last lines are the verdict or the failing step's own error."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from patx_core.storage.artifacts import read_json
from patx_core.model.checkpoint import load_checkpoint
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


@pytest.mark.slow  # a whole smoke graph through the CLI: ~20 s on an idle core
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
    # The shell prints INFO (instance.yaml), not Dagster's DEBUG events: the run's status is read
    # from the instance the command recorded it in.
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
        runs = instance.get_runs()
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]


def _make_command(target: str, venv: Path, env: dict[str, str], *variables: str) -> list[str]:
    """``make -s <target>`` on the running venv, which it never reinstalls (``-o``): a pyproject.toml
    newer than the venv would have each test rebuild the venv the other tests are running from."""
    if not (venv / ".installed").exists():
        pytest.skip(f"{venv} was not built by `make setup` (run the suite with `make test`)")
    return ["make", "-s", "-o", f"{venv}/.installed", target, *variables, f"VENV={venv}",
            f"DAGSTER_HOME={env['DAGSTER_HOME']}"]


def _make(tmp_path: Path, env: dict[str, str], variant: str = "smoke") -> subprocess.CompletedProcess:
    return subprocess.run(_make_command("materialize", Path(sys.prefix), env, "DATASET=nasdaq", f"VARIANT={variant}"),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_make_materialize_ends_with_the_rule_of_a_bad_input_and_fails(tmp_path, planted_raw):
    bad = tmp_path / "bad.parquet"
    frame = pl.read_parquet(planted_raw)
    frame.with_columns(pl.when(pl.int_range(pl.len()) == 321).then(-1.0).otherwise(pl.col("close"))
                       .alias("close")).write_parquet(bad)
    out = _make(tmp_path, _shell_env(tmp_path, bad))
    assert out.returncode != 0
    last = (out.stdout + out.stderr).strip().splitlines()[-3:]
    assert any("rule 'prices > 0' failed for column 'close'" in line and "row 321" in line for line in last), last


@pytest.mark.slow  # a whole smoke graph through the CLI: ~20 s on an idle core
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
    # the very last line of the output, make's own "Makefile:N: *** … Stop." around our message
    last = (out.stdout + out.stderr).strip().splitlines()[-1]
    assert re.match(r"Makefile:\d+: \*\*\* ", last), last
    assert last.split(" *** ", 1)[1].startswith(
        f"variants file {variants}: variant 'my_smoke' [train]: unknown field(s) ['max_epoch']; "
        "did you mean 'max_epochs'?"), last
    assert "Traceback" not in out.stdout + out.stderr, "one line, not pages of tracebacks"


def _readme_python_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use it from Python", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_python_example_runs_as_written(tmp_path, good_run, monkeypatch, capsys):
    # The example's relative paths, under a tmp working dir: the bundled sample, and the smoke
    # checkpoint that `make materialize VARIANT=smoke` leaves (here: the graph tests' run).
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw").symlink_to(REPO / "data" / "raw")
    checkpoint = tmp_path / "data" / "nasdaq" / "checkpoints" / "smoke" / "best_model.pth"
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(cell_paths(good_run[0]).checkpoint, checkpoint)
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_python_block(), "README.md", "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert "406785" in lines, "the guide's parameter count"
    best_epoch, best_loss = lines[-2].split()
    assert best_epoch in ("1", "2") and float(best_loss) > 0
    rows = ast.literal_eval(lines[-1])  # the printed list of row dicts
    assert len(rows) == 2 and {r["signal"] for r in rows} <= {"buy", "hold"}
    assert all(0.0 <= r["probability"] <= 1.0 for r in rows)


def _patx_verdict(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # `patx verdict` comes from patx_dagster through the `patx.commands` entry point, as installed.
    from tests.cli_entry_points import installed_env

    return subprocess.run([sys.executable, "-m", "patx_core.cli", "verdict", "nasdaq", "smoke", *args], cwd=REPO,
                          env=installed_env(tmp_path / "site", **env), capture_output=True, text=True, timeout=300)


def test_patx_verdict_of_a_successful_run_prints_the_gate_diagnosis_and_report(tmp_path, good_run, planted_raw):
    import dagster as dg

    from patx_dagster.assets import ALL_ASSETS
    from patx_dagster.io_manager import IO_MANAGERS
    from patx_dagster.partitions import partition_key
    from tests.dagster.harness import grid_for

    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    env = _shell_env(tmp_path, planted_raw)
    grid = grid_for(planted_raw, data_dir)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        run = dg.materialize(ALL_ASSETS, selection=["latest_signal"], partition_key=partition_key("nasdaq", "smoke"),
                             resources={"grid": grid, **IO_MANAGERS}, instance=instance)
    assert run.success
    out = _patx_verdict(tmp_path, {**env, "PATX_DATA_DIR": str(data_dir)}, "--run-exit-code", "0", "--since", "0")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("nasdaq|smoke: precision gate PASSED on test — ")
    assert lines[1] == "diagnosis: none" and lines[2].startswith("backtest: ")
    assert lines[-1] == f"report: {cell_paths(data_dir).report_md}"


def test_patx_verdict_of_a_failed_run_exits_with_its_code_and_says_where_to_look(tmp_path, planted_raw):
    out = _patx_verdict(tmp_path, _shell_env(tmp_path, planted_raw), "--run-exit-code", "3", "--since", "0")
    assert out.returncode == 3
    assert out.stderr.splitlines()[-2:] == [
        "nasdaq|smoke: the run failed; README: 'When a run fails'",
        "no step failure was recorded: the error is the last message above"]


def test_the_readmes_stop_command_ends_a_background_ui_session_whatever_the_width_of_its_id():
    # `ps -o sid=` pads a session id shorter than its column (" 9009"); a quoted padded id is
    # refused by pkill ("invalid session id"). `ps` is wrapped here to pad every id that way.
    [stop] = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("pkill -TERM -s ")]
    # aimed at this test's stand-in only, never at a `dagster dev` the user has running
    stop = stop.split("   #")[0].replace("'dagster dev'", "'dagster dev [(]readme stop test[)]'")
    assert "readme stop test" in stop
    ui = subprocess.Popen(["bash", "-c", "exec -a 'dagster dev (readme stop test)' sleep 120"],
                          start_new_session=True)
    try:
        subprocess.run(["bash", "-c", "sleep 0.2; ps() { printf '  '; command ps \"$@\"; }; " + stop], timeout=30)
        assert ui.wait(timeout=10) == -15, "SIGTERM reached the session"
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()


@pytest.mark.slow
def test_a_volume_less_hourly_fx_file_runs_through_make_materialize_and_make_score(tmp_path):
    """What a new user types for FX quotes: `volume = false` in the dataset's table, then the
    README's two targets, from the shell."""
    from tests.core.data.test_volume_option import _hourly

    raw = tmp_path / "eurusd.parquet"
    _hourly(1500).write_parquet(raw)
    assert "volume" not in pl.read_parquet(raw).columns
    env = _shell_env(tmp_path, raw)
    write_datasets_file(Path(env["PATX_DATASETS"]), {"eurusd": {"source": str(raw), "interval": "1h",
                                                                "volume": False}})
    outs = [subprocess.run(_make_command(target, Path(sys.prefix), env, "DATASET=eurusd", "VARIANT=smoke"),
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            for target in ("materialize", "score")]
    for out in outs:
        assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    materialized, scored = (out.stdout.strip().splitlines() for out in outs)
    assert materialized[-1] == f"report: {tmp_path / 'data' / 'eurusd' / 'reports' / 'smoke' / 'report.md'}"
    assert any(line.startswith("eurusd|smoke: precision gate ") for line in materialized)
    assert scored[-2].startswith("eurusd|smoke: ") and scored[-1].startswith("track record: ")
    ledger = pl.read_parquet(tmp_path / "data" / "eurusd" / "ledger" / "smoke" / "signals.parquet")
    assert ledger.height > 0
