"""`dagster dev` serves the patx graph, and a `smoke` materialization launched through its GraphQL
API (what the UI's Materialize button calls) runs to the end.

The server and the run are shared with test_browser.py (conftest.py, package scope).
"""

from __future__ import annotations

import json

import pytest

from patx_core.variants import load_variants
from patx_dagster import defs
from patx_dagster.checks import CHECKS
from tests.ui.conftest import GATE, GATE_ASSET, PARTITION

pytestmark = [pytest.mark.ui, pytest.mark.slow]

EXPECTED_ASSETS = {"raw_prices", "features", "splits", "windows", "trained_model", "evaluation_report",
                   "champion_model", "latest_signal", "variant_leaderboard"}

GRAPH_QUERY = """
{ assetNodes { assetKey { path } groupName isPartitioned partitionKeys pools
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


def test_every_variant_is_a_served_partition(served):
    variants = list(load_variants())
    assert PARTITION in variants
    for name, node in served.items():
        if name == "variant_leaderboard":
            assert not node["isPartitioned"]
        else:
            assert node["isPartitioned"] and node["partitionKeys"] == variants, name


def test_asset_checks_are_served_with_their_blocking_flag(served):
    got = {}
    for name, node in served.items():
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", checks
        got.update({c["name"]: (name, c["blocking"]) for c in checks["checks"]})
    assert got == {check: (asset, blocking) for check, (asset, blocking, _sev, _desc) in CHECKS.items()}
    assert got[GATE] == (GATE_ASSET, True)


def test_smoke_materialization_launched_through_graphql_finishes(dagster_server, smoke_run):
    server = dagster_server.server
    assert smoke_run.tags.get("dagster/partition") == PARTITION
    upstream = set(smoke_run.selected) - {"champion_model", "latest_signal"}
    assert smoke_run.status in {"SUCCESS", "FAILURE"}, f"run ended {smoke_run.status}:\n{server.log_tail()}"

    events = server.graphql(FAILURES_QUERY, {"runId": smoke_run.run_id})["logsForRun"]["events"]
    failures = {e["stepKey"]: e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"}
    # The checks are partitioned like their asset: ask for this variant's results only.
    gate = server.graphql(CHECK_QUERY, {"key": {"path": [GATE_ASSET]}, "name": GATE, "partition": PARTITION})
    gate = [e for e in gate["assetCheckExecutions"] if e["runId"] == smoke_run.run_id]
    assert len(gate) == 1, f"{len(gate)} {GATE} results for run {smoke_run.run_id} (failures: {failures})"
    gate = gate[0]
    assert gate["partition"] == PARTITION, gate

    if smoke_run.status == "SUCCESS":
        assert set(smoke_run.steps.values()) == {"SUCCESS"}, smoke_run.steps
        assert gate["status"] == "SUCCEEDED" and gate["evaluation"]["success"] is True
    else:
        # The one acceptable failure: the blocking precision gate (expected on the NASDAQ sample).
        assert set(failures) == {GATE_ASSET}, f"failed steps: {failures}\n{server.log_tail()}"
        assert GATE in failures[GATE_ASSET] and "blocking asset check" in failures[GATE_ASSET]
        assert {k for k, v in smoke_run.steps.items() if v == "SUCCESS"} == upstream - {GATE_ASSET}, smoke_run.steps
        assert gate["status"] == "FAILED" and gate["evaluation"]["success"] is False, gate
        assert gate["evaluation"]["severity"] == "ERROR"

    evaluation_json = server.data_dir / "reports" / PARTITION / "evaluation.json"
    assert evaluation_json.exists(), f"{evaluation_json} not written"
    evaluation = json.loads(evaluation_json.read_text())
    assert evaluation["checks"]["precision_gate"]["passed"] is gate["evaluation"]["success"]
    # Why the gate passed or failed is shown with the check result, not only in a file.
    assert evaluation["checks"]["precision_gate"]["reason"] in (gate["evaluation"]["description"] or ""), gate

    # The report the UI shows for this partition is this run's, with its verdict.
    mats = server.graphql(REPORT_QUERY, {"partitions": [PARTITION]})["assetNodes"][0]["latestMaterializationByPartition"]
    assert mats and mats[0] and mats[0]["runId"] == smoke_run.run_id, mats
    report = {m["label"]: m for m in mats[0]["metadataEntries"]}["report"]
    word = "PASSED" if evaluation["checks"]["precision_gate"]["passed"] else "FAILED"
    assert f"Gate {word}" in report["mdStr"], report["mdStr"][:500]
