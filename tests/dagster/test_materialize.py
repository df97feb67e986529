"""The whole graph for one variant, in-process: artifacts, the gate, promotion, inference."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime

import numpy as np
import polars as pl
import pytest
import torch

from patx_core.artifacts import read_json
from patx_core.checkpoint import load_checkpoint
from patx_core.paths import VariantPaths
from tests.dagster.harness import PER_VARIANT, failure_text, materialize, materialized, snapshot


def test_smoke_graph_builds_every_artifact_with_a_consistent_report(good_run):
    data_dir, result = good_run
    assert materialized(result) == set(PER_VARIANT)
    paths = VariantPaths.for_variant("smoke", data_dir)
    for path in (paths.checkpoint, paths.scaler, paths.evaluation_json, paths.report_md,
                 paths.champion_checkpoint, paths.champion_manifest, paths.signal_json):
        assert path.exists(), path
    ev = read_json(paths.evaluation_json)
    assert ev["variant"] == "smoke"
    splits = ev["splits"]
    assert list(splits) == ["train", "val", "test"]
    for a, b in (("train", "val"), ("val", "test")):
        assert datetime.fromisoformat(splits[a]["end"]) < datetime.fromisoformat(splits[b]["start"])
    for s in splits.values():
        assert 0 < s["sequences"] <= s["rows"]
    assert 0.0 < ev["threshold"] < 1.0
    assert set(ev["metrics"]) == {"val", "test"}
    test = ev["metrics"]["test"]
    lo, hi = test["precision_ci95"]
    assert lo <= test["precision"] <= hi
    gate = ev["checks"]["precision_gate"]
    assert gate == {**gate, "passed": True, "split": "test", "min_precision": 0.7,
                    "precision": test["precision"], "n_signals": test["n_signals"]}
    assert gate["n_signals"] >= 30 and gate["precision"] > 0.7
    assert ev["training"]["epochs_run"] >= ev["training"]["best_epoch"] >= 1
    assert ev["backtest"]["trades"] >= 1 and ev["backtest"]["cost_bps"] == 5.0
    # the checkpoint follows the training issue's format and loads safely
    raw = torch.load(paths.checkpoint, weights_only=True)
    assert {"model_state_dict", "feature_columns", "window_size", "input_dim"} <= set(raw)
    assert raw["window_size"] == 32


def test_data_assets_carry_row_counts_date_ranges_and_schema(good_run):
    _, result = good_run
    meta = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert meta["raw_prices"]["dagster/row_count"].value == 3000
    assert [c.name for c in meta["raw_prices"]["dagster/column_schema"].value.columns] == [
        "timestamp", "open", "high", "low", "close", "volume"]
    assert meta["features"]["first_timestamp"].value < meta["features"]["last_timestamp"].value
    assert 0.05 < meta["features"]["positive_rate"].value < 0.95
    assert "label" in [c.name for c in meta["features"]["dagster/column_schema"].value.columns]
    assert set(meta["splits"]["splits"].value) == {"train", "val", "test"}
    assert meta["trained_model"]["epochs_run"].value >= 1 and meta["trained_model"]["device"].value == "cpu"


def test_report_files_and_ui_markdown_hold_the_plots(good_run):
    data_dir, result = good_run
    paths = VariantPaths.for_variant("smoke", data_dir)
    pngs = sorted(p.name for p in paths.report_dir.glob("*.png"))
    assert {"training_curves.png", "precision_recall.png", "calibration.png", "confusion.png",
            "equity.png"} <= set(pngs)
    for name in pngs:
        assert (paths.report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in paths.report_md.read_text()
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "evaluation_report"]
    md = event.step_materialization_data.materialization.metadata["report"].value
    assert md.count("data:image/png;base64,") >= 5
    assert "Gate PASSED" in md


def test_champion_manifest_records_what_was_promoted(good_run):
    data_dir, _ = good_run
    paths = VariantPaths.for_variant("smoke", data_dir)
    manifest = read_json(paths.champion_manifest)
    ev = read_json(paths.evaluation_json)
    assert manifest["threshold"] == ev["threshold"]
    assert manifest["precision_gate"]["passed"] is True
    assert manifest["variant_config"]["model"]["d_model"] == 32
    assert paths.champion_checkpoint.read_bytes() == paths.checkpoint.read_bytes()


def test_latest_signal_and_the_predict_cli_agree(good_run, planted_raw):
    data_dir, _ = good_run
    paths = VariantPaths.for_variant("smoke", data_dir)
    signal = read_json(paths.signal_json)
    out = subprocess.run([sys.executable, "-m", "patx_core.predict", "--checkpoint", str(paths.champion_checkpoint),
                          "--raw", str(planted_raw), "--last", "3"], capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 3
    assert rows[-1]["timestamp"] == signal["timestamp"]
    assert rows[-1]["probability"] == pytest.approx(signal["probability"], abs=1e-6)
    assert rows[-1]["threshold"] == signal["threshold"] and rows[-1]["signal"] == signal["signal"]
    assert signal["signal"] in ("buy", "hold")
    assert signal["model"]["checkpoint_sha256"] == read_json(paths.champion_manifest)["checkpoint_sha256"]


def test_gate_fails_on_noise_but_the_report_says_why(tmp_path, noise_raw):
    result = materialize(noise_raw, tmp_path)
    assert not result.success
    assert "blocking asset check failed" in failure_text(result)
    assert "champion_model" not in materialized(result)
    paths = VariantPaths.for_variant("smoke", tmp_path)
    ev = read_json(paths.evaluation_json)
    gate = ev["checks"]["precision_gate"]
    assert gate["passed"] is False and gate["reason"]
    assert not paths.champion_dir.exists()
    (evaluation,) = [c for c in result.get_asset_check_evaluations()
                     if c.check_name == "evaluation_report_precision_above_0_7"]
    assert evaluation.passed is False
    assert evaluation.metadata["reason"].value == gate["reason"]


def test_a_failed_gate_leaves_the_earlier_champion_byte_identical(tmp_path, good_run, noise_raw):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    before = snapshot(data_dir / "models")
    result = materialize(noise_raw, data_dir)
    assert not result.success and "champion_model" not in materialized(result)
    assert read_json(VariantPaths.for_variant("smoke", data_dir).evaluation_json)["checks"]["precision_gate"][
        "passed"] is False
    assert snapshot(data_dir / "models") == before


def test_after_a_failed_gate_the_old_champion_still_signals_on_new_candles(tmp_path, good_run, noise_raw):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    paths = VariantPaths.for_variant("smoke", data_dir)
    before = read_json(paths.signal_json)
    assert not materialize(noise_raw, data_dir).success
    result = materialize(noise_raw, data_dir, selection=["latest_signal"])  # the refresh_latest_signal job
    assert result.success
    signal = read_json(paths.signal_json)
    assert signal["model"]["checkpoint_sha256"] == read_json(paths.champion_manifest)["checkpoint_sha256"]
    last = pl.read_parquet(noise_raw)["timestamp"][-1].isoformat()
    assert signal["timestamp"] == last
    assert signal["probability"] != before["probability"], "scored the new candles, not the old ones"


def test_same_data_variant_and_seed_give_identical_metrics(tmp_path, good_run, planted_raw):
    result = materialize(planted_raw, tmp_path, selection=PER_VARIANT[:6])
    assert result.success
    first = read_json(VariantPaths.for_variant("smoke", good_run[0]).evaluation_json)
    second = read_json(VariantPaths.for_variant("smoke", tmp_path).evaluation_json)
    assert second["metrics"] == first["metrics"]
    assert second["threshold"] == first["threshold"]
    assert second["training"]["seed"] == first["training"]["seed"] == 42
    a = load_checkpoint(VariantPaths.for_variant("smoke", good_run[0]).checkpoint).model.state_dict()
    b = load_checkpoint(VariantPaths.for_variant("smoke", tmp_path).checkpoint).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_leaderboard_lists_exactly_the_variants_with_reports(tmp_path, good_run):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    result = materialize(tmp_path / "unused.parquet", data_dir, selection=["variant_leaderboard"])
    assert result.success
    (event,) = result.get_asset_materialization_events()
    table = event.step_materialization_data.materialization.metadata["leaderboard"].value
    assert [r.data["variant"] for r in table.records] == ["smoke"]
    text = (data_dir / "reports" / "leaderboard.md").read_text()
    assert "smoke" in text and "baseline" not in text
    assert np.isfinite(float(table.records[0].data["signals"]))
