"""The code location as Dagster loads it: assets, checks, partitions, schedule, sensor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from patx_core.variants import load_variants
from patx_dagster import defs
from patx_dagster.schedules import nightly_retrain

REPO = Path(__file__).resolve().parents[2]

EXPECTED_ASSETS = {"raw_prices", "features", "splits", "windows", "trained_model", "evaluation_report",
                   "champion_model", "latest_signal", "variant_leaderboard"}


def test_definitions_load_with_every_asset_and_check():
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == EXPECTED_ASSETS
    checks = {k.name: k for k in graph.asset_check_keys}
    gate = checks["evaluation_report_precision_above_0_7"]
    assert gate.asset_key == dg.AssetKey("evaluation_report")
    spec = graph.get_check_spec(gate)
    assert spec.blocking, "the precision gate must block promotion"
    assert {"raw_prices_schema", "features_finite", "features_label_positive_rate", "splits_purged_disjoint",
            "splits_scaler_std_positive", "evaluation_report_f1_above_0_5"} <= set(checks)


def test_every_variant_is_a_partition_of_the_per_variant_assets():
    variants = list(load_variants())
    graph = defs.resolve_asset_graph()
    for key in EXPECTED_ASSETS - {"variant_leaderboard"}:
        node = graph.get(dg.AssetKey(key))
        assert node.partitions_def is not None, key
        assert node.partitions_def.get_partition_keys() == variants, key
    assert graph.get(dg.AssetKey("variant_leaderboard")).partitions_def is None


def test_training_runs_in_the_gpu_pool():
    node = defs.resolve_asset_graph().get(dg.AssetKey("trained_model"))
    assert node.pools == {"gpu"}


def test_schedule_tick_yields_one_run_per_nightly_variant():
    nightly = [name for name, v in load_variants().items() if v.nightly]
    assert "smoke" not in nightly and "baseline" in nightly
    when = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=when) as context:
        requests = list(nightly_retrain(context))
    assert [r.partition_key for r in requests] == nightly
    assert len({r.run_key for r in requests}) == len(nightly)
    assert all("2026-11-28" in r.run_key for r in requests)
    assert nightly_retrain.cron_schedule == "0 2 * * *"
    assert nightly_retrain.execution_timezone == "UTC"


def test_a_variant_added_to_the_variants_file_appears_as_a_partition(tmp_path):
    text = (REPO / "variants.toml").read_text() + '\n[my_new_variant]\ndescription = "added by a user"\n' \
        '[my_new_variant.train]\nlr = 3e-4\n'
    path = tmp_path / "variants.toml"
    path.write_text(text)
    code = ("import json; from patx_dagster import defs; import dagster as dg; "
            "g = defs.resolve_asset_graph(); "
            "print(json.dumps(g.get(dg.AssetKey('trained_model')).partitions_def.get_partition_keys()))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PATX_VARIANTS": str(path)},
                         capture_output=True, text=True, check=True, cwd=REPO)
    keys = json.loads(out.stdout.strip().splitlines()[-1])
    assert keys[-1] == "my_new_variant" and "baseline" in keys


def test_an_unknown_variant_field_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "variants.toml"
    path.write_text('[bad]\n[bad.train]\nlearning_rate = 0.1\n')
    code = "import patx_dagster"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PATX_VARIANTS": str(path)},
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0
    assert "learning_rate" in out.stderr and "[train]" in out.stderr


def test_after_a_failed_gate_the_existing_champion_refreshes_the_signal(tmp_path):
    from patx_core.paths import VariantPaths
    from patx_dagster.sensors import requests_after_retrain

    assert [r.job_name for r in requests_after_retrain("baseline", str(tmp_path), gate_failed=True)] == [
        "refresh_leaderboard"], "no champion yet: nothing to signal with"
    champion = VariantPaths.for_variant("baseline", tmp_path).champion_checkpoint
    champion.parent.mkdir(parents=True)
    champion.write_bytes(b"model")
    after_failure = requests_after_retrain("baseline", str(tmp_path), gate_failed=True)
    assert [(r.job_name, r.partition_key) for r in after_failure] == [
        ("refresh_leaderboard", None), ("refresh_latest_signal", "baseline")]
    after_success = requests_after_retrain("baseline", str(tmp_path), gate_failed=False)
    assert [r.job_name for r in after_success] == ["refresh_leaderboard"], "the run itself refreshed the signal"
