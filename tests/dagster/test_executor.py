"""Choosing the executor, the number of walk-forward fold steps, and each step's Celery queue."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from patx_dagster import defs
from patx_dagster import executor as ex
from patx_dagster.placement import QUEUE_TAG, worker_metadata
from tests.tools import free_port

REPO = Path(__file__).resolve().parents[2]
GPU_STEPS = {"trained_model", "evaluation_report", "train_fold_group", "search_study"}  # a search trains too


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("PATX_EXECUTOR", "PATX_FOLD_STEPS", "PATX_CELERY_BROKER", "PATX_CELERY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return monkeypatch


def test_in_process_is_the_default_and_runs_the_folds_as_one_step(clean_env):
    assert ex.executor_kind() == "in_process"
    assert ex.fold_steps(6) == 1


@pytest.mark.parametrize("kind", ["multiprocess", "celery"])
def test_executors_that_spread_steps_run_one_step_per_fold(clean_env, kind):
    clean_env.setenv("PATX_EXECUTOR", kind)
    assert ex.executor_kind() == kind
    assert ex.fold_steps(6) == 6


def test_fold_steps_setting_overrides_and_is_bounded_by_the_folds(clean_env):
    clean_env.setenv("PATX_FOLD_STEPS", "4")
    assert ex.fold_steps(6) == 4
    clean_env.setenv("PATX_EXECUTOR", "celery")
    assert ex.fold_steps(6) == 4
    assert ex.fold_steps(3) == 3
    for bad in ("0", "two", "-1"):
        clean_env.setenv("PATX_FOLD_STEPS", bad)
        with pytest.raises(ValueError, match="PATX_FOLD_STEPS"):
            ex.fold_steps(6)
    clean_env.setenv("PATX_EXECUTOR", "dask")
    with pytest.raises(ValueError, match="PATX_EXECUTOR"):
        ex.executor_kind()


def test_a_celery_config_copied_into_the_instance_home_switches_to_celery(clean_env, tmp_path):
    shutil.copy(REPO / "deploy" / "celery" / "celery.yaml", tmp_path / "celery.yaml")
    assert ex.executor_kind() == "celery"
    assert ex.celery_config_file() == tmp_path / "celery.yaml"
    clean_env.setenv("PATX_EXECUTOR", "in_process")
    assert ex.executor_kind() == "in_process"


def test_celery_settings_resolve_the_broker_with_its_default(clean_env):
    config = ex.celery_executor_config()
    assert config["broker"] == config["backend"] == ex.DEFAULT_BROKER == "redis://127.0.0.1:6379/0"
    source = config["config_source"]
    assert (source["task_acks_late"], source["task_reject_on_worker_lost"], source["worker_prefetch_multiplier"]) \
        == (True, True, 1)
    clean_env.setenv("PATX_CELERY_BROKER", "redis://queue.internal:6380/2")
    assert ex.celery_executor_config()["broker"] == "redis://queue.internal:6380/2"


def test_an_unreachable_broker_is_one_line_naming_it_and_make_workers():
    port = free_port()  # closed again: nothing listens there
    url = f"redis://127.0.0.1:{port}/0"
    with pytest.raises(ex.BrokerUnreachable) as info:
        ex.require_broker(url, timeout=2.0)
    message = str(info.value)
    assert "\n" not in message and url in message and "`make workers`" in message


def _loaded(env: dict[str, str]) -> dict:
    code = ("import json; from patx_dagster import defs; "
            "print(json.dumps({j: defs.resolve_job_def(j).executor_def.name for j in "
            "('retrain_variant', 'walk_forward_job', 'ingest_candles', 'refresh_leaderboard')}))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         cwd=REPO, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_code_location_jobs_follow_patx_executor(tmp_path):
    pytest.importorskip("dagster_celery")
    base = {"DAGSTER_HOME": str(tmp_path), "PATX_EXECUTOR": ""}
    assert set(_loaded(base).values()) == {"in_process"}
    assert set(_loaded({**base, "PATX_EXECUTOR": "celery"}).values()) == {"celery"}
    assert set(_loaded({**base, "PATX_EXECUTOR": "multiprocess"}).values()) == {"multiprocess"}


def _ops(assets_def: dg.AssetsDefinition) -> list[dg.OpDefinition]:
    node = assets_def.node_def
    return list(node.iterate_op_defs()) if isinstance(node, dg.GraphDefinition) else [node]


def test_accelerator_steps_go_to_the_gpu_queue_and_the_rest_to_cpu():
    graph = defs.resolve_asset_graph()
    queues = {}
    for key in graph.get_all_asset_keys():
        for op in _ops(graph.assets_def_for_key(key) if hasattr(graph, "assets_def_for_key")
                       else defs.resolve_assets_def(key)):
            queues[op.name] = op.tags.get(QUEUE_TAG)
    assert {name for name, q in queues.items() if q == "gpu"} == GPU_STEPS
    assert {name for name, q in queues.items() if q != "gpu"} == set(queues) - GPU_STEPS
    assert all(q == "cpu" for name, q in queues.items() if name not in GPU_STEPS), queues
    assert {"plan_walk_forward", "stitch_walk_forward"} <= set(queues)


def test_a_step_outside_celery_records_the_host_name():
    assert worker_metadata() == {"patx/worker": socket.gethostname()}


@pytest.mark.slow
def test_walk_forward_in_process_is_one_fold_step_through_files_under_the_cell(clean_env, tmp_path):
    from patx_dagster.assets import ALL_ASSETS
    from patx_dagster.io_manager import IO_MANAGERS
    from patx_dagster.partitions import partition_key
    from tests.dagster.harness import DATASET, cell_paths, grid_for, write_raw
    from tests.synthetic import planted_candles

    raw = write_raw(planted_candles(1500, seed=3, every=3), tmp_path / "raw.parquet")  # 4 folds fit
    grid = grid_for(raw, tmp_path / "data")
    result = dg.materialize(ALL_ASSETS, partition_key=partition_key(DATASET, "smoke"),
                            selection=["raw_prices", "features", "walk_forward"],
                            resources={"grid": grid, **IO_MANAGERS})
    fold_steps = {e.step_key for e in result.all_events
                  if e.event_type_value == "STEP_SUCCESS" and "train_fold_group" in (e.step_key or "")}
    assert fold_steps == {"walk_forward.train_fold_group[g0]"}
    paths = cell_paths(tmp_path / "data")
    assert sorted(p.name for p in (paths.work_dir / "walk_forward").iterdir()) == [
        "walk_forward.plan_walk_forward.result.g0.json", "walk_forward.train_fold_group_g0_.result.json"]
    body = json.loads((paths.report_dir / "walk_forward.json").read_text())
    assert (body["summary"]["concurrency"], body["summary"]["workers"]) == ("in_process", 1)
    assert len(body["folds"]) == body["summary"]["n_folds"] >= 2
    [mat] = result.asset_materializations_for_node("walk_forward")
    assert mat.metadata["patx/worker"].value == socket.gethostname()
    assert "walk_forward_gate_stable" in [c.check_name for c in result.get_asset_check_evaluations()]


def test_workers_stop_never_signals_a_process_that_is_no_longer_a_worker(tmp_path, monkeypatch, capsys):
    # After a reboot the recorded PIDs may belong to other programs: those must not be killed.
    import subprocess
    import sys

    from patx_dagster import workers

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        (tmp_path / "workers.pids").write_text(f"{stranger.pid} gpu0\n999999999 cpu0\n")
        assert workers.main(["stop"]) == 0
        out = capsys.readouterr().out
        assert f"skipped gpu0 (pid {stranger.pid}): now another program" in out
        assert "skipped cpu0 (pid 999999999): not running" in out
        assert stranger.poll() is None, "the stranger still runs"
        assert not (tmp_path / "workers.pids").exists()
    finally:
        stranger.kill()
        stranger.wait()
