"""`dagster dev` serves the patx graph on the dataset × variant grid, and a `nasdaq|smoke`
materialization launched through its GraphQL API (what the UI's Materialize button calls) runs to
the end: on the bundled NASDAQ sample the smoke model is refused, which is a successful run whose
precision-gate check failed.

The server and the run are shared with test_browser.py (conftest.py, package scope).
"""

from __future__ import annotations

import pytest

from patx_core.storage.artifacts import read_json
from patx_core.settings.datasets import load_datasets
from patx_core.storage.paths import DatasetPaths
from patx_core.settings.variants import load_variants
from patx_dagster import defs
from patx_dagster.checks import CHECKS
from tests.ui.conftest import DATASET, DATASETS_FILE, GATE, GATE_ASSET, PARTITION, VARIANT, VARIANTS_FILE

pytestmark = [pytest.mark.ui, pytest.mark.slow]

EXPECTED_ASSETS = {"ingested_candles", "raw_prices", "features", "splits", "windows", "trained_model",
                   "evaluation_report", "champion_model", "latest_signal", "signal_ledger", "track_record",
                   "walk_forward", "variant_leaderboard", "search_study"}
UNPARTITIONED = {"ingested_candles", "variant_leaderboard"}

GRAPH_QUERY = """
{ assetNodes { assetKey { path } groupName isPartitioned partitionKeys pools
    partitionDefinition { type dimensionTypes { name } }
    partitionKeysByDimension { name partitionKeys }
    dependencyKeys { path }
    assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } } } }
"""

CHECK_QUERY = """
query Check($key: AssetKeyInput!, $name: String!, $partition: String) {
  assetCheckExecutions(assetKey: $key, checkName: $name, partition: $partition, limit: 5) {
    runId status partition evaluation { success severity description } } }
"""

REPORT_QUERY = """
query Report($partitions: [String!]) {
  assetNodes(assetKeys: [{path: ["evaluation_report"]}]) {
    latestMaterializationByPartition(partitions: $partitions) {
      runId partition metadataEntries { label __typename ... on MarkdownMetadataEntry { mdStr } } } } }
"""

PROMOTION_QUERY = """
query Promotion($partitions: [String!]) {
  assetNodes(assetKeys: [{path: ["champion_model"]}]) {
    latestMaterializationByPartition(partitions: $partitions) {
      runId partition metadataEntries { label __typename ... on BoolMetadataEntry { boolValue }
                                        ... on TextMetadataEntry { text } } } } }
"""

FAILURES_QUERY = """
query Failures($runId: ID!) { logsForRun(runId: $runId, limit: 5000) { __typename
  ... on EventConnection { events { __typename
      ... on ExecutionStepFailureEvent { stepKey error { message } } } } } }
"""


@pytest.fixture(scope="module")
def served(dagster_server) -> dict[str, dict]:
    nodes = dagster_server.server.graphql(GRAPH_QUERY)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n for n in nodes}


def test_the_whole_asset_graph_is_served(served):
    assert set(served) == EXPECTED_ASSETS
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        expected = {p.to_user_string() for p in graph.get(key).parent_keys}
        assert {"/".join(d["path"]) for d in served[name]["dependencyKeys"]} == expected, name
    assert {"/".join(d["path"]) for d in served["evaluation_report"]["dependencyKeys"]} >= {"trained_model"}
    assert served["trained_model"]["pools"] == ["gpu"]


def test_every_dataset_variant_pair_is_a_served_partition(served):
    datasets, variants = list(load_datasets(DATASETS_FILE)), list(load_variants(VARIANTS_FILE))
    assert DATASET in datasets and VARIANT in variants and len(datasets) > 1
    grid = {f"{d}|{v}" for d in datasets for v in variants}
    assert PARTITION in grid
    for name, node in served.items():
        if name in UNPARTITIONED:
            assert not node["isPartitioned"], name
            continue
        assert node["isPartitioned"], name
        assert node["partitionDefinition"]["type"] == "MULTIPARTITIONED", (name, node["partitionDefinition"])
        assert [d["name"] for d in node["partitionDefinition"]["dimensionTypes"]] == ["dataset", "variant"], name
        assert {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]} == {
            "dataset": datasets, "variant": variants}, name
        assert len(node["partitionKeys"]) == len(grid) and set(node["partitionKeys"]) == grid, name


def test_asset_checks_are_served_with_their_blocking_flag(served):
    got = {}
    for name, node in served.items():
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        got.update({c["name"]: (name, c["blocking"]) for c in checks["checks"]})
    assert got == {check: (asset, blocking) for check, (asset, blocking, _sev, _desc) in CHECKS.items()}
    # A refused model is an ordinary outcome: the gate records it without stopping the run.
    assert got[GATE] == (GATE_ASSET, False)


def test_refused_smoke_model_is_a_successful_run_with_its_gate_check_failed(dagster_server, smoke_run):
    server = dagster_server.server
    # A multi-partition key is tagged whole and once per dimension, as the UI's launch tags it.
    assert {k: v for k, v in smoke_run.tags.items() if k.split("/")[:2] == ["dagster", "partition"]} == {
        "dagster/partition": PARTITION, "dagster/partition/dataset": DATASET, "dagster/partition/variant": VARIANT}

    events = server.graphql(FAILURES_QUERY, {"runId": smoke_run.run_id})["logsForRun"]["events"]
    failures = {e["stepKey"]: e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"}
    assert smoke_run.status == "SUCCESS", f"run ended {smoke_run.status}; failed steps {failures}\n{server.log_tail()}"
    assert set(smoke_run.steps) == set(smoke_run.selected), smoke_run.steps
    assert set(smoke_run.steps.values()) == {"SUCCESS"}, smoke_run.steps

    paths = DatasetPaths.for_dataset(DATASET, server.data_dir).variant(VARIANT)
    assert paths.evaluation_json.exists(), f"{paths.evaluation_json} not written"
    gate_json = read_json(paths.evaluation_json)["checks"]["precision_gate"]
    assert gate_json["passed"] is False, f"the smoke model passed the gate on the NASDAQ sample: {gate_json}"

    # The checks are partitioned like their asset: ask for this cell's results only.
    gate = server.graphql(CHECK_QUERY, {"key": {"path": [GATE_ASSET]}, "name": GATE, "partition": PARTITION})
    gate = [e for e in gate["assetCheckExecutions"] if e["runId"] == smoke_run.run_id]
    assert len(gate) == 1, f"{len(gate)} {GATE} results for run {smoke_run.run_id}"
    gate = gate[0]
    assert gate["partition"] == PARTITION, gate
    assert gate["status"] == "FAILED" and gate["evaluation"]["success"] is False, gate
    assert gate["evaluation"]["severity"] == "ERROR", gate
    # Why the gate failed is shown with the check result, not only in a file.
    assert gate_json["reason"] in (gate["evaluation"]["description"] or ""), gate

    # Promotion ran and refused; the signal says so rather than keeping an old one.
    promotion = server.graphql(PROMOTION_QUERY, {"partitions": [PARTITION]})
    promotion = promotion["assetNodes"][0]["latestMaterializationByPartition"][0]
    assert promotion and promotion["runId"] == smoke_run.run_id, promotion
    entries = {m["label"]: m for m in promotion["metadataEntries"]}
    assert entries["promoted"]["boolValue"] is False, entries
    assert "precision gate failed" in entries["reason"]["text"], entries
    assert not paths.champion_dir.exists(), sorted(paths.champion_dir.rglob("*"))
    signal = read_json(paths.signal_json)
    assert signal["reason"] == "no champion" and {x["signal"] for x in signal["signals"]} == {"hold"}, signal

    # The report the UI shows for this cell is this run's, its first line the verdict.
    mats = server.graphql(REPORT_QUERY, {"partitions": [PARTITION]})["assetNodes"][0]["latestMaterializationByPartition"]
    assert mats and mats[0] and mats[0]["runId"] == smoke_run.run_id, mats
    report = {m["label"]: m for m in mats[0]["metadataEntries"]}["report"]["mdStr"]
    assert report.startswith(f"# {DATASET} | {VARIANT} — gate FAILED · diagnosis: "), report[:500]
    assert "Gate FAILED" in report, report[:500]


AUTOMATION_QUERY = """
query Automation($from: Float) { repositoriesOrError { __typename ... on RepositoryConnection { nodes {
    schedules { name scheduleState { status } futureTicks(cursor: $from, limit: 2) { results { timestamp } } }
    sensors { name sensorState { status } } } } } }
"""


def test_schedules_and_sensors_are_served_off_until_switched_on_with_their_utc_ticks(dagster_server):
    from datetime import datetime, timezone

    midnight = datetime(2026, 11, 28, tzinfo=timezone.utc)  # a Saturday
    result = dagster_server.server.graphql(AUTOMATION_QUERY, {"from": midnight.timestamp()})["repositoriesOrError"]
    (repo,) = result["nodes"]
    schedules = {s["name"]: s for s in repo["schedules"]}
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    assert {n: s["scheduleState"]["status"] for n, s in schedules.items()} == {
        "nightly_retrain": "STOPPED", "weekly_walk_forward": "STOPPED"}
    assert sensors == {"new_candles": "STOPPED", "leaderboard_after_run": "STOPPED"}

    def ticks(name: str) -> list[str]:
        return [datetime.fromtimestamp(t["timestamp"], timezone.utc).isoformat()
                for t in schedules[name]["futureTicks"]["results"]]

    assert ticks("nightly_retrain") == ["2026-11-28T02:00:00+00:00", "2026-11-29T02:00:00+00:00"]
    assert ticks("weekly_walk_forward") == ["2026-11-28T04:00:00+00:00", "2026-12-05T04:00:00+00:00"]
