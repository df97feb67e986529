"""The documented PostgreSQL instance (deploy/dagster.yaml) runs the `nasdaq|smoke` cell end to end.

A real server is started by the fixture (conftest.py); the run is launched the way an operator
would, with the `dagster` CLI, and the run and its events are then read back from PostgreSQL
itself and through a `DagsterInstance` opened on the same home. On the bundled NASDAQ sample the
smoke model is refused: a successful run whose precision-gate check failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from patx_core.storage.artifacts import read_json
from patx_core.storage.paths import DatasetPaths

REPO = Path(__file__).resolve().parents[2]
DATASET, VARIANT = "nasdaq", "smoke"
PARTITION = f"{DATASET}|{VARIANT}"
GATE = "evaluation_report_precision_gate"

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def cell_assets() -> list[str]:
    """What one cell's run materializes: the retrain job's assets (ingestion first, then the
    partitioned chain; not the leaderboard, nor the walk-forward, which have their own jobs)."""
    from patx_dagster import defs

    job = defs.resolve_job_def("retrain_variant")
    return sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)


def instance_yaml_without_k8s() -> dict:
    """deploy/dagster.yaml as documented, minus the K8sRunLauncher (dagster-k8s is not installed)."""
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    del config["run_launcher"]
    config["telemetry"] = {"enabled": False}
    return config


def test_smoke_run_is_stored_in_postgres(postgres_server, tmp_path, monkeypatch):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml_without_k8s()))
    env = {**os.environ, **postgres_server.env(), "DAGSTER_HOME": str(home), "PATX_DATA_DIR": str(data),
           "PATX_DATASETS": str(REPO / "datasets.toml"),  # the bundled NASDAQ sample
           # One torch thread: much faster than two on shared CI cores (see tests/ui/conftest.py).
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    assets = cell_assets()
    assert set(assets) == {"ingested_candles", "raw_prices", "features", "splits", "windows", "trained_model",
                           "evaluation_report", "champion_model", "latest_signal", "signal_ledger", "track_record"}

    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "patx_dagster",
         "--select", ",".join(assets), "--partition", PARTITION],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    log = (out.stdout + out.stderr)[-6000:]

    # Nothing went to the default SQLite storage: the run exists only in PostgreSQL.
    assert not list(home.rglob("*.db")), f"SQLite storage was used: {list(home.rglob('*.db'))}"

    # 1. Straight from PostgreSQL: the run row and its events.
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT run_id, status FROM runs")
            rows = cur.fetchall()
            assert len(rows) == 1, f"expected one run in PostgreSQL, found {rows}\n{log}"
            run_id, sql_status = rows[0]
            cur.execute("SELECT dagster_event_type, step_key, asset_key, partition FROM event_logs "
                        "WHERE run_id = %s AND dagster_event_type IS NOT NULL", (run_id,))
            events = cur.fetchall()
    finally:
        conn.close()
    types = {t for t, *_ in events}
    assert {"PIPELINE_START", "STEP_START", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"} <= types, types
    materialized = {(json.loads(key)[0], part) for t, _s, key, part in events if t == "ASSET_MATERIALIZATION"}

    # 2. Through Dagster, from the same home: what the UI on this instance would show.
    for name, value in {**postgres_server.env(), "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        run = instance.get_run_by_id(run_id)
        assert run is not None
        # A multi-partition key is tagged whole and once per dimension.
        assert {k: v for k, v in run.tags.items() if k.split("/")[:2] == ["dagster", "partition"]} == {
            "dagster/partition": PARTITION, "dagster/partition/dataset": DATASET,
            "dagster/partition/variant": VARIANT}, run.tags
        assert run.status.value == sql_status
        records = instance.all_logs(run_id)
    failures = {r.step_key: r.dagster_event.step_failure_data.error.message
                for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_FAILURE"}
    checks = {r.dagster_event.event_specific_data.check_name: r.dagster_event.event_specific_data.passed
              for r in records if r.dagster_event and r.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"}

    # A refused model is an ordinary outcome: every step succeeds, the gate check records the verdict.
    assert run.status == dg.DagsterRunStatus.SUCCESS, f"run ended {run.status}; failed steps {failures}\n{log}"
    assert out.returncode == 0, log
    # The unpartitioned ingestion runs first; every other asset is this cell's partition.
    expected = {(a, None if a == "ingested_candles" else PARTITION) for a in assets}
    assert materialized == expected, f"materialized {sorted(materialized)}, expected {sorted(expected)}"
    assert checks.get(GATE) is False, checks

    paths = DatasetPaths.for_dataset(DATASET, data).variant(VARIANT)
    assert paths.evaluation_json.exists(), f"{paths.evaluation_json} not written\n{log}"
    assert read_json(paths.evaluation_json)["checks"]["precision_gate"]["passed"] is False
    title = paths.report_md.read_text(encoding="utf-8").splitlines()[0]
    assert title.startswith(f"# {DATASET} | {VARIANT} — gate FAILED · diagnosis: "), title
    assert not paths.champion_dir.exists(), "a refused model was promoted"
    assert read_json(paths.signal_json)["reason"] == "no champion"
