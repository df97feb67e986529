"""The code location on real Celery workers: a real ``redis-server`` on a free loopback port, real
``dagster-celery`` worker processes (one ``cpu``, two ``gpu``), runs launched with the ``dagster``
CLI the way an operator would. Every process started here is ended by its fixture's finalizer
(process groups, SIGTERM then SIGKILL), whatever the test's outcome.

Each Celery run is compared with the same run in process (``PATX_EXECUTOR=in_process``) on the
same generated candles, at one torch thread on both sides, so the numbers must be identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest
import torch
import yaml

from patx_core.storage.paths import DatasetPaths, VariantPaths
from patx_dagster import workers as patx_workers
from patx_dagster.workers import Process, start_redis, start_worker, worker_env
from tests.cells import write_datasets_file
from tests.dagster.harness import PER_VARIANT, write_raw
from tests.tools import free_port
from tests.synthetic import planted_candles
from tests.tools import require

REPO = Path(__file__).resolve().parents[2]
DATASET, VARIANT = "nasdaq", "smoke"
PARTITION = f"{DATASET}|{VARIANT}"
DAGSTER = str(Path(sys.executable).parent / "dagster")
#: Every wait in this module is bounded by one of these (seconds).
RUN_TIMEOUT = 420
CLI_TIMEOUT = 240  # a CLI call that loads the code location (~10 s idle, much more on loaded shared cores)
FAIL_FAST = 15  # from the run's start to its failure when the broker is missing

pytestmark = [pytest.mark.slow, pytest.mark.celery]


def _require_celery() -> None:
    require(shutil.which("redis-server"), "redis-server (Debian package redis-server)")
    for module in ("dagster_celery", "redis"):
        try:
            __import__(module)
        except ImportError:
            require(None, f"Python package {module}", install="pip install -e '.[distributed]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    """Generated candles (the planted pattern every ~3 candles: four walk-forward folds fit), a datasets file
    naming them ``nasdaq``, and the Celery instance home (deploy/celery/dagster.yaml as shipped)."""
    root = tmp_path_factory.mktemp("celery")
    raw = write_raw(planted_candles(1500, seed=3, every=3), root / "raw" / "candles.parquet")
    datasets = write_datasets_file(root / "datasets.toml", {DATASET: {"source": str(raw), "interval": "1d"}})
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "celery" / "dagster.yaml", home / "dagster.yaml")
    return {"root": root, "datasets": datasets, "home": home}


def _env(site: dict[str, Path], data: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DAGSTER_HOME": str(site["home"]), "PATX_DATA_DIR": str(data),
           "PATX_DATASETS": str(site["datasets"]), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "PYTHONWARNINGS": "ignore"}
    env.pop("PATX_FOLD_STEPS", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def broker(site) -> Iterator[str]:
    _require_celery()
    port = free_port()
    server = start_redis(port, site["root"] / "redis")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def celery_workers(site, broker) -> Iterator[dict[str, Process]]:
    """cpu1 on `cpu`, gpu1 and gpu2 on `gpu`, one task process each; the `gpu` pool allows two."""
    env = worker_env(broker, _env(site, site["root"] / "celery_data"))
    started: dict[str, Process] = {}
    # The instance's tables first: workers starting together would each try to create them.
    with dg.DagsterInstance.from_config(str(site["home"])) as instance:
        instance.event_log_storage.set_concurrency_slots("gpu", 2)
    try:
        for queue, name in (("cpu", "cpu1"), ("gpu", "gpu1"), ("gpu", "gpu2")):
            started[name] = start_worker(queue, name, site["root"] / "logs" / f"{name}.log", env=env, wait=False)
        for w in started.values():
            patx_workers.wait_ready(w)
        yield started
    finally:
        for w in started.values():
            w.stop()


def _materialize(env: dict[str, str], select: list[str], *,
                 wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [DAGSTER, "asset", "materialize", "-m", "patx_dagster", "--select", ",".join(select),
           "--partition", PARTITION]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def _paths(data: Path) -> VariantPaths:
    return DatasetPaths.for_dataset(DATASET, data).variant(VARIANT)


def _sha(path: Path) -> str:
    """sha256 of a checkpoint's content, loaded with ``weights_only=True``: every tensor and every
    other field, except the wall-clock timings in its metrics (the file's bytes hold those, so
    two identical trainings never give identical files)."""
    checkpoint = torch.load(path, weights_only=True)
    h = hashlib.sha256()
    for name, tensor in checkpoint.pop("model_state_dict").items():
        h.update(name.encode())
        h.update(tensor.cpu().numpy().tobytes())

    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if "seconds" not in k}
        return value

    h.update(json.dumps(untimed(checkpoint), sort_keys=True, default=str).encode())
    return h.hexdigest()


def _last_run(home: Path) -> tuple[dg.DagsterRun, list]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        return run, instance.all_logs(run.run_id)


def _materialized_workers(records) -> dict[str, str]:
    out = {}
    for r in records:
        ev = r.dagster_event
        if ev is not None and ev.event_type_value == "ASSET_MATERIALIZATION":
            mat = ev.event_specific_data.materialization
            out[mat.asset_key.to_user_string()] = mat.metadata["patx/worker"].value
    return out


def _celery_workers_of(records, step_prefix: str) -> list[str]:
    """The worker of each Celery task that began a step starting with ``step_prefix``, in order."""
    names = []
    for r in records:
        ev = r.dagster_event
        if (ev is not None and ev.event_type_value == "ENGINE_EVENT" and (ev.step_key or "").startswith(step_prefix)
                and "in celery worker" in (ev.message or "")):
            names.append(ev.engine_event_data.metadata["Celery worker"].value)
    return names


def _evaluation(data: Path) -> dict:
    return json.loads(_paths(data).evaluation_json.read_text())


def _fold_rows(data: Path) -> list[dict]:
    body = json.loads((_paths(data).report_dir / "walk_forward.json").read_text())
    return [{k: v for k, v in f.items() if k != "seconds"} for f in body["folds"]]


@pytest.fixture(scope="module")
def in_process_runs(site) -> Path:
    """The reference: the cell and its walk-forward in process, one step per fold (the Celery
    default; the setting is bounded by the folds), same threads."""
    data = site["root"] / "in_process_data"
    env = _env(site, data, PATX_EXECUTOR="in_process", PATX_FOLD_STEPS="64")
    for select in (PER_VARIANT, ["walk_forward"]):
        out = _materialize(env, select)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return data


def test_no_broker_fails_fast_naming_it_and_make_workers(site):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = _env(site, site["root"] / "no_broker_data", PATX_EXECUTOR="celery", PATX_CELERY_BROKER=url)
    out = subprocess.run([DAGSTER, "asset", "materialize", "-m", "patx_dagster", "--select", "ingested_candles"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    lines = [line for line in text.splitlines() if url in line and "make workers" in line]
    assert lines, f"no line names {url} and `make workers`:\n{text[-3000:]}"
    # Fast: the run failed within seconds of starting (the CLI's own start-up aside), no step queued.
    run, records = _last_run(site["home"])
    assert run.status == dg.DagsterRunStatus.FAILURE
    times = {r.dagster_event.event_type_value: r.timestamp for r in records if r.dagster_event}
    start, failure = dg.DagsterEventType.RUN_START.value, dg.DagsterEventType.RUN_FAILURE.value
    assert times[failure] - times[start] < FAIL_FAST, times
    assert "STEP_START" not in times


def test_smoke_cell_on_celery_matches_in_process(site, broker, celery_workers, in_process_runs):
    data = site["root"] / "celery_data"
    out = _materialize(_env(site, data, PATX_EXECUTOR="celery", PATX_CELERY_BROKER=broker), PER_VARIANT)
    log = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, log
    run, records = _last_run(site["home"])
    assert run.status == dg.DagsterRunStatus.SUCCESS, log
    where = _materialized_workers(records)
    assert set(where) == set(PER_VARIANT), where
    assert where["trained_model"].startswith(("gpu1@", "gpu2@")), where
    assert where["evaluation_report"].startswith(("gpu1@", "gpu2@")), where
    assert where["features"].startswith("cpu1@") and where["raw_prices"].startswith("cpu1@"), where
    # The artifacts are the in-process run's.
    assert _evaluation(data)["metrics"] == _evaluation(in_process_runs)["metrics"]
    assert _sha(_paths(data).checkpoint) == _sha(_paths(in_process_runs).checkpoint)


def test_walk_forward_folds_spread_over_two_gpu_workers(site, broker, celery_workers, in_process_runs):
    data = site["root"] / "celery_data"
    if not _paths(data).evaluation_json.exists():  # run alone: the cell first
        assert _materialize(_env(site, data, PATX_CELERY_BROKER=broker, PATX_EXECUTOR="celery"),
                            PER_VARIANT).returncode == 0
    # Default under Celery: one step per fold (four here), the same grouping as the reference.
    out = _materialize(_env(site, data, PATX_EXECUTOR="celery", PATX_CELERY_BROKER=broker), ["walk_forward"])
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    run, records = _last_run(site["home"])
    trained_by = _celery_workers_of(records, "walk_forward.train_fold_group")
    summary = json.loads((_paths(data).report_dir / "walk_forward.json").read_text())["summary"]
    assert summary["n_folds"] >= 3 and len(trained_by) == summary["n_folds"], (summary["n_folds"], trained_by)
    assert {w.split("@")[0] for w in trained_by} == {"gpu1", "gpu2"}, trained_by
    assert _fold_rows(data) == _fold_rows(in_process_runs)
    assert (summary["concurrency"], summary["workers"]) == ("celery", summary["n_folds"])
    assert _materialized_workers(records)["walk_forward"].startswith("cpu1@")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


def _is_celery(pid: int) -> bool:
    try:
        return b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _task_processes(worker: Process) -> list[int]:
    """The worker's task (pool) processes: the Celery main process under the dagster-celery
    launcher, then its forked children that are Celery too (not the `tail` processes Dagster's
    log capture starts)."""
    mains = [p for p in _children(worker.pid) if _is_celery(p)]
    return [c for m in mains for c in _children(m) if _is_celery(c)]


def test_sigkilled_gpu_worker_process_mid_training_is_redelivered(site, broker, celery_workers, in_process_runs):
    # The workers' artifact root (steps write where the worker's PATX_DATA_DIR points), run again.
    data = site["root"] / "celery_data"
    env = _env(site, data, PATX_EXECUTOR="celery", PATX_CELERY_BROKER=broker)
    proc = _materialize(env, PER_VARIANT, wait=False)
    killed = None
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        with dg.DagsterInstance.from_config(str(site["home"])) as instance:
            while killed is None and time.monotonic() < deadline and proc.poll() is None:
                runs = instance.get_runs(limit=1)
                records = instance.all_logs(runs[0].run_id) if runs else []
                workers = _celery_workers_of(records, "trained_model")
                epochs = [r for r in records if r.step_key == "trained_model" and "epoch 1:" in (r.user_message or "")]
                if workers and epochs:
                    # The training process: the task process under the worker that took the step.
                    worker = celery_workers[workers[0].split("@")[0]]
                    task_procs = _task_processes(worker)
                    assert len(task_procs) == 1, task_procs
                    os.kill(task_procs[0], signal.SIGKILL)
                    killed = workers[0]
                time.sleep(0.2)
        assert killed is not None, "trained_model never reached its first epoch on a gpu worker"
        stdout, _ = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 0, stdout[-4000:]
    run, records = _last_run(site["home"])
    assert run.status == dg.DagsterRunStatus.SUCCESS
    # The event log shows the task begun twice: on the killed process, then redelivered.
    attempts = _celery_workers_of(records, "trained_model")
    assert len(attempts) == 2 and attempts[0] == killed, attempts
    # Whole artifacts: the checkpoint loads with weights_only=True and holds the reference run's
    # weights and settings; the scaler is the reference's byte for byte.
    paths = _paths(data)
    assert _sha(paths.checkpoint) == _sha(_paths(in_process_runs).checkpoint)
    assert _evaluation(data)["metrics"] == _evaluation(in_process_runs)["metrics"]
    assert (paths.checkpoint_dir / "scaler.pkl").read_bytes() == \
        (_paths(in_process_runs).checkpoint_dir / "scaler.pkl").read_bytes()
    assert not [p for p in paths.checkpoint_dir.iterdir() if p.name.startswith(".")]


def test_the_shipped_celery_config_holds_the_fault_settings(tmp_path):
    with open(REPO / "deploy" / "celery" / "celery.yaml") as fh:
        source = yaml.safe_load(fh)["execution"]["config"]["config_source"]
    assert source["task_acks_late"] is True and source["task_reject_on_worker_lost"] is True
    assert source["worker_prefetch_multiplier"] == 1
    shutil.copy(REPO / "deploy" / "celery" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds > 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
