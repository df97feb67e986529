"""One `dagster dev` for the whole tests/ui package, and one `nasdaq|smoke` run launched through it.

The server is started as a user starts it (``dagster dev`` from the repo root, which reads
workspace.yaml) on a free loopback port, with a temporary DAGSTER_HOME holding the repo's
instance.yaml, the repo's datasets.toml (the bundled NASDAQ sample) and a temporary
PATX_DATA_DIR. Its whole process group (webserver, daemon, code server, run workers) is killed
on teardown. Missing tools skip, except under ``CI``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.tools import free_port, require

REPO = Path(__file__).resolve().parents[2]
DATASETS_FILE = REPO / "datasets.toml"
VARIANTS_FILE = REPO / "variants.toml"
DATASET, VARIANT = "nasdaq", "smoke"
# A multi-partition key: "<dataset>|<variant>" (Dagster orders the dimensions by name).
PARTITION = f"{DATASET}|{VARIANT}"
GATE = "evaluation_report_precision_gate"
GATE_ASSET = "evaluation_report"
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 420
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
# The code location's own executor (in-process) and defaults: the run is launched exactly as the
# UI's "Materialize" button launches it.
RUN_CONFIG: dict[str, Any] = {}


class GraphQLError(AssertionError):
    pass


@dataclass
class DagsterServer:
    url: str
    home: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def graphql(self, query: str, variables: dict[str, Any] | None = None, *, timeout: float = 60) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())
        if payload.get("errors"):
            raise GraphQLError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]


LOCATION_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename
          ... on RepositoryLocation { repositories { name } }
          ... on PythonError { message stack } } } }
    ... on PythonError { message } } }
"""


def _wait_until_loaded(server: DagsterServer) -> tuple[str, str]:
    """Block until the webserver answers and the patx code location has loaded; its selector."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            data = server.graphql(LOCATION_QUERY, timeout=10)["workspaceOrError"]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = repr(exc)
            time.sleep(1)
            continue
        for entry in data.get("locationEntries", []):
            loc = entry["locationOrLoadError"]
            if loc and loc["__typename"] == "PythonError":
                raise AssertionError(f"code location {entry['name']} failed to load: {loc['message']}\n{loc['stack']}")
            if entry["loadStatus"] == "LOADED" and loc and loc["__typename"] == "RepositoryLocation":
                return entry["name"], loc["repositories"][0]["name"]
        last = json.dumps(data)[:500]
        time.sleep(1)
    raise AssertionError(f"dagster dev not ready after {START_TIMEOUT_S} s (last: {last}):\n{server.log_tail()}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole group, then SIGKILL it: webserver, daemon, code servers and any run worker.

    `dagster dev` does not always finish its own shutdown (it can hang after the daemon stops),
    so the group is killed after a grace period whatever the leader did.
    """
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@dataclass
class Workspace:
    server: DagsterServer
    location: str
    repository: str


@pytest.fixture(scope="package")
def dagster_server() -> Iterator[Workspace]:
    # The CLI of the interpreter running the tests (the project's venv), else the one on PATH.
    dagster = require(shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster"),
                      "the dagster CLI")
    try:
        import dagster_webserver  # noqa: F401
    except ImportError:
        require(None, "dagster-webserver")
    tmp = Path(tempfile.mkdtemp(prefix="patx-ui-"))
    home, data = tmp / "dagster_home", tmp / "data"
    home.mkdir()
    data.mkdir()
    shutil.copy(REPO / "instance.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PATX_DATA_DIR": str(data), "PATX_DATASETS": str(DATASETS_FILE),
           # One intra-op thread: on 2 shared cores a 2-thread torch run slows ~6x whenever another
           # process holds a core (measured: smoke training 9 s vs 53 s under load).
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("PATX_VARIANTS", None)
    log_path = tmp / "dagster_dev.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([dagster, "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = DagsterServer(url=f"http://127.0.0.1:{port}", home=home, data_dir=data, log_path=log_path, process=proc)
    try:
        location, repository = _wait_until_loaded(server)
        yield Workspace(server=server, location=location, repository=repository)
    finally:
        _stop(proc)
        if not os.environ.get("PATX_UI_KEEP_TMP"):  # set it to inspect the server log and data
            shutil.rmtree(tmp, ignore_errors=True)


RUN_QUERY = """
query Run($runId: ID!) { runOrError(runId: $runId) { __typename
  ... on Run { runId status tags { key value } stepStats { stepKey status } }
  ... on PythonError { message } } }
"""

LAUNCH_MUTATION = """
mutation Launch($executionParams: ExecutionParams!) { launchRun(executionParams: $executionParams) {
  __typename
  ... on LaunchRunSuccess { run { runId status } }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on PythonError { message stack }
  ... on Error { message } } }
"""

ASSET_NODES_QUERY = """
{ assetNodes { assetKey { path } isPartitioned jobNames } }
"""

# What the UI's partition dialog asks before a single-partition launch: the run tags of the key
# (for a multi-partition key, the key and one tag per dimension).
PARTITION_TAGS_QUERY = """
query PartitionTags($selector: PipelineSelector!, $partition: String!, $assets: [AssetKeyInput!]) {
  pipelineOrError(params: $selector) { __typename
    ... on Pipeline { partition(partitionName: $partition, selectedAssetKeys: $assets) {
        tagsOrError { __typename ... on PartitionTags { results { key value } } ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""


@dataclass
class RunOutcome:
    run_id: str
    status: str
    tags: dict[str, str]
    steps: dict[str, str | None]
    selected: list[str]
    seconds: float


def launch_and_wait(ws: Workspace, assets: list[str], partition: str) -> RunOutcome:
    """Launch the assets for one partition the way the UI's "Materialize" does; wait for the end."""
    server = ws.server
    nodes = server.graphql(ASSET_NODES_QUERY)["assetNodes"]
    jobs = {j for n in nodes if n["assetKey"]["path"][0] in assets for j in n["jobNames"]}
    job = "__ASSET_JOB" if "__ASSET_JOB" in jobs else sorted(j for j in jobs if j.startswith("__ASSET_JOB"))[0]
    asset_keys = [{"path": [a]} for a in assets]
    selector = {"repositoryLocationName": ws.location, "repositoryName": ws.repository}
    job_or_error = server.graphql(PARTITION_TAGS_QUERY, {"selector": {**selector, "pipelineName": job},
                                                          "partition": partition, "assets": asset_keys})
    tags = job_or_error["pipelineOrError"]["partition"]["tagsOrError"]
    assert tags["__typename"] == "PartitionTags", f"tags of partition {partition}: {tags}"
    params = {
        "selector": {**selector, "jobName": job, "assetSelection": asset_keys},
        "executionMetadata": {"tags": tags["results"]},
        "mode": "default",
        "runConfigData": RUN_CONFIG,
    }
    start = time.monotonic()
    result = server.graphql(LAUNCH_MUTATION, {"executionParams": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", f"launchRun: {result}"
    run_id = result["run"]["runId"]
    deadline = start + RUN_TIMEOUT_S
    while True:
        run = server.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {RUN_TIMEOUT_S} s:\n{server.log_tail()}")
        time.sleep(2)
    return RunOutcome(run_id=run_id, status=run["status"], tags={t["key"]: t["value"] for t in run["tags"]},
                      steps={s["stepKey"]: s["status"] for s in run["stepStats"]}, selected=assets,
                      seconds=time.monotonic() - start)


def cell_assets() -> list[str]:
    """What one cell's run materializes: the retrain job's assets (ingestion first, then the
    partitioned chain; not the leaderboard, nor the walk-forward, which have their own jobs)."""
    from patx_dagster import defs

    job = defs.resolve_job_def("retrain_variant")
    return sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)


@pytest.fixture(scope="package")
def smoke_run(dagster_server: Workspace) -> RunOutcome:
    """Cell `nasdaq|smoke` materialized through the server's GraphQL API (shared by both modules)."""
    return launch_and_wait(dagster_server, cell_assets(), PARTITION)
