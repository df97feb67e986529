"""The code location as Dagster loads it: assets, checks, the partition grid, schedules, sensors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from patx_core.settings.datasets import load_datasets
from patx_core.settings.variants import load_variants
from patx_dagster import defs
from patx_dagster.schedules import weekly_walk_forward

REPO = Path(__file__).resolve().parents[2]

EXPECTED_ASSETS = {"ingested_candles", "raw_prices", "features", "splits", "windows", "trained_model",
                   "evaluation_report", "champion_model", "latest_signal", "signal_ledger", "track_record", "walk_forward",
                   "variant_leaderboard", "search_study"}
UNPARTITIONED = {"ingested_candles", "variant_leaderboard"}


def test_definitions_load_with_every_asset_and_check():
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == EXPECTED_ASSETS
    checks = {k.name: k for k in graph.asset_check_keys}
    gate = checks["evaluation_report_precision_gate"]
    assert gate.asset_key == dg.AssetKey("evaluation_report")
    assert not graph.get_check_spec(gate).blocking, "a refused model must not fail the run"
    assert {"raw_prices_schema", "raw_prices_fresh", "features_finite", "features_label_positive_rate",
            "splits_purged_disjoint", "splits_scaler_std_positive", "evaluation_report_f1_above_0_5",
            "walk_forward_gate_stable", "track_record_live_precision"} <= set(checks)
    assert not graph.get_check_spec(checks["raw_prices_fresh"]).blocking
    live = checks["track_record_live_precision"]
    assert live.asset_key == dg.AssetKey("track_record")
    assert not graph.get_check_spec(live).blocking, "a suspension is recorded, not a failed run"


def test_every_dataset_and_variant_pair_is_a_partition_of_the_per_cell_assets():
    datasets, variants = list(load_datasets()), list(load_variants())
    graph = defs.resolve_asset_graph()
    for key in EXPECTED_ASSETS - UNPARTITIONED:
        partitions = graph.get(dg.AssetKey(key)).partitions_def
        assert isinstance(partitions, dg.MultiPartitionsDefinition), key
        assert [d.name for d in partitions.partitions_defs] == ["dataset", "variant"]
        keys = set(partitions.get_partition_keys())
        assert keys == {f"{d}|{v}" for d in datasets for v in variants}, key
    assert "nasdaq|baseline" in keys and "us_daily|smoke" in keys
    for key in UNPARTITIONED:
        assert graph.get(dg.AssetKey(key)).partitions_def is None


def test_the_nightly_job_leaves_walk_forward_and_the_leaderboard_out():
    job = defs.resolve_job_def("retrain_variant")
    selected = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert selected == EXPECTED_ASSETS - {"walk_forward", "variant_leaderboard", "search_study"}  # a search is asked for
    score = defs.resolve_job_def("score")
    assert {k.to_user_string() for k in score.asset_layer.executable_asset_keys} == {
        "ingested_candles", "latest_signal", "signal_ledger", "track_record"}, "scoring retrains nothing"
    walk = defs.resolve_job_def("walk_forward_job")
    assert {k.to_user_string() for k in walk.asset_layer.executable_asset_keys} == {
        "ingested_candles", "raw_prices", "features", "walk_forward"}


def test_weekly_walk_forward_requests_one_run_per_nightly_pair_and_week():
    when = datetime(2026, 11, 28, 4, 0, tzinfo=timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=when, resources={"grid": defs.resources["grid"]}) \
            as context:
        requests = weekly_walk_forward(context)
    keys = {str(r.partition_key) for r in requests}
    nightly = {c.key for c in defs.resources["grid"].settings().nightly_cells()}
    assert keys == nightly and "nasdaq|baseline" in keys and not any(k.endswith("|smoke") for k in keys)
    assert {r.run_key for r in requests} == {f"walk-forward-{k}-2026-W48" for k in keys}, "once per pair and ISO week"
    assert all(r.tags == {"patx/trigger": "weekly-walk-forward"} for r in requests)


def _partition_keys_as_loaded(env: dict[str, str], asset: str) -> list[str]:
    """The partition keys of ``asset`` when a fresh process loads the code location with ``env``."""
    code = ("import json; from patx_dagster import defs; import dagster as dg; "
            "g = defs.resolve_asset_graph(); "
            f"print(json.dumps(g.get(dg.AssetKey('{asset}')).partitions_def.get_partition_keys()))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_variant_added_to_the_variants_file_appears_as_a_partition(tmp_path):
    text = (REPO / "variants.toml").read_text() + '\n[my_new_variant]\ndescription = "added by a user"\n' \
        '[my_new_variant.train]\nlr = 3e-4\n'
    path = tmp_path / "variants.toml"
    path.write_text(text)
    keys = _partition_keys_as_loaded({"PATX_VARIANTS": str(path)}, "trained_model")
    assert "nasdaq|my_new_variant" in keys and "us_daily|my_new_variant" in keys


def test_a_dataset_added_to_the_datasets_file_appears_as_a_row_of_the_grid(tmp_path):
    path = tmp_path / "datasets.toml"
    path.write_text(f'[fx]\nsource = "{REPO}/data/raw/nasdaq_daily_1999_2018.parquet"\ninterval = "1d"\n')
    keys = _partition_keys_as_loaded({"PATX_DATASETS": str(path)}, "raw_prices")
    assert "fx|baseline" in keys and not any(k.startswith("nasdaq|") for k in keys)


def _load_code_location(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import patx_dagster"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env})


def test_an_unknown_variant_or_dataset_field_is_refused_naming_the_field(tmp_path):
    variants = tmp_path / "variants.toml"
    variants.write_text('[bad]\n[bad.train]\nlearning_rate = 0.1\n')
    out = _load_code_location({"PATX_VARIANTS": str(variants)})
    assert out.returncode != 0
    assert "learning_rate" in out.stderr and "[train]" in out.stderr
    datasets = tmp_path / "datasets.toml"
    datasets.write_text('[bad]\nsource = "x.parquet"\ncosts_bps = 2\n')
    out = _load_code_location({"PATX_DATASETS": str(datasets)})
    assert out.returncode != 0
    assert "costs_bps" in out.stderr and "dataset 'bad'" in out.stderr
