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

from patx_core.storage.artifacts import read_json
from patx_core.model.checkpoint import load_checkpoint
from tests.numbers import FLOAT32_RTOL, assert_same_numbers
from tests.dagster.harness import PER_VARIANT, cell_paths, materialize, materialized, snapshot


def test_smoke_graph_builds_every_artifact_with_a_consistent_report(good_run):
    data_dir, result = good_run
    assert materialized(result) == set(PER_VARIANT)
    paths = cell_paths(data_dir)
    for path in (paths.checkpoint, paths.scaler, paths.evaluation_json, paths.report_md,
                 paths.champion_checkpoint, paths.champion_manifest, paths.signal_json):
        assert path.exists(), path
    ev = read_json(paths.evaluation_json)
    assert ev["variant"] == "smoke" and ev["diagnosis"] == []
    splits = ev["splits"]
    assert list(splits) == ["train", "val", "test"]
    for a, b in (("train", "val"), ("val", "test")):
        assert datetime.fromisoformat(splits[a]["end"]) < datetime.fromisoformat(splits[b]["start"])
    for s in splits.values():
        assert 0 < s["sequences"] <= s["rows"]
    assert 0.0 < ev["threshold"]["value"] < 1.0 and ev["threshold"]["rule"] != "abstain"
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
    # the checkpoint keeps its documented format (docs/ARCHITECTURE.md) and loads with weights_only
    raw = torch.load(paths.checkpoint, weights_only=True)
    assert {"model_state_dict", "feature_columns", "window_size", "input_dim"} <= set(raw)
    assert raw["window_size"] == 32


def test_data_assets_carry_row_counts_date_ranges_and_schema(good_run):
    _, result = good_run
    meta = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert meta["raw_prices"]["dagster/row_count"].value == 3000
    assert [c.name for c in meta["raw_prices"]["dagster/column_schema"].value.columns] == [
        "symbol", "timestamp", "open", "high", "low", "close", "volume"]
    assert meta["features"]["first_timestamp"].value < meta["features"]["last_timestamp"].value
    assert 0.05 < meta["features"]["positive_rate"].value < 0.95
    assert "label" in [c.name for c in meta["features"]["dagster/column_schema"].value.columns]
    assert set(meta["splits"]["splits"].value) == {"train", "val", "test"}
    assert meta["trained_model"]["epochs_run"].value >= 1 and meta["trained_model"]["device"].value == "cpu"


def test_report_files_and_ui_markdown_hold_the_plots(good_run):
    data_dir, result = good_run
    paths = cell_paths(data_dir)
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
    paths = cell_paths(data_dir)
    manifest = read_json(paths.champion_manifest)
    ev = read_json(paths.evaluation_json)
    assert manifest["threshold"] == ev["threshold"]
    assert manifest["precision_gate"]["passed"] is True
    assert manifest["variant_config"]["model"]["d_model"] == 32
    assert paths.champion_checkpoint.read_bytes() == paths.checkpoint.read_bytes()


def test_latest_signal_and_the_predict_cli_agree(good_run, planted_raw):
    data_dir, _ = good_run
    paths = cell_paths(data_dir)
    signal = read_json(paths.signal_json)
    (line,) = signal["signals"]  # one line per symbol; the planted file is one symbol
    out = subprocess.run([sys.executable, "-m", "patx_core.cli", "predict",
                          "--checkpoint", str(paths.champion_checkpoint), "--raw", str(planted_raw), "--last", "3"],
                         capture_output=True, text=True, check=True)
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(rows) == 3
    assert rows[-1]["timestamp"] == line["timestamp"] and rows[-1]["symbol"] == line["symbol"] == "planted"
    assert rows[-1]["probability"] == pytest.approx(line["probability"], abs=1e-6)
    assert rows[-1]["threshold"] == line["threshold"] and rows[-1]["signal"] == line["signal"]
    assert line["signal"] in ("buy", "hold")
    # the champion's rule: buy exactly when the probability reaches the promoted threshold
    assert line["signal"] == ("buy" if line["probability"] >= line["threshold"] else "hold")
    assert line["threshold"] == read_json(paths.champion_manifest)["threshold"]["value"]
    assert signal["model"]["checkpoint_sha256"] == read_json(paths.champion_manifest)["checkpoint_sha256"]


def _check(result, name: str):
    (evaluation,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return evaluation


def test_a_refused_model_is_a_successful_run_with_a_failed_gate_check(tmp_path, noise_raw):
    result = materialize(noise_raw, tmp_path)
    assert result.success, "a completed evaluation that refuses the model is not a broken run"
    assert materialized(result) == set(PER_VARIANT)
    paths = cell_paths(tmp_path)
    gate = read_json(paths.evaluation_json)["checks"]["precision_gate"]
    assert gate["passed"] is False and gate["reason"]
    check = _check(result, "evaluation_report_precision_gate")
    assert check.passed is False and check.severity.value == "ERROR"
    assert check.metadata["reason"].value == gate["reason"]
    assert check.metadata["target_precision"].value == pytest.approx(0.7, abs=0), "the bar is in the metadata"
    (promotion,) = [e.step_materialization_data.materialization.metadata for e in
                    result.get_asset_materialization_events() if e.asset_key.to_user_string() == "champion_model"]
    assert promotion["promoted"].value is False and "precision gate failed" in promotion["reason"].value
    assert not paths.champion_dir.exists()
    signal = read_json(paths.signal_json)
    assert signal["reason"] == "no champion"
    assert [(x["signal"], x["reason"]) for x in signal["signals"]] == [("hold", "no champion")]


def test_a_refused_model_leaves_the_earlier_champion_byte_identical_and_refreshes_its_signal(
        tmp_path, good_run, noise_raw):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    paths = cell_paths(data_dir)
    before_models = snapshot(paths.champion_dir)
    before = read_json(paths.signal_json)["signals"][0]
    result = materialize(noise_raw, data_dir)
    assert result.success and read_json(paths.evaluation_json)["checks"]["precision_gate"]["passed"] is False
    assert snapshot(paths.champion_dir) == before_models
    signal = read_json(paths.signal_json)
    assert signal["model"]["checkpoint_sha256"] == read_json(paths.champion_manifest)["checkpoint_sha256"]
    (line,) = signal["signals"]
    assert line["timestamp"] == pl.read_parquet(noise_raw)["timestamp"][-1].isoformat()
    assert line["probability"] != before["probability"], "scored the new candles, not the old ones"
    # scored by the champion, not by the model this run trained (and refused)
    from patx_core.serving.predict import predict_frame
    from patx_core.data.contract import validate_raw

    noise = validate_raw(pl.read_parquet(noise_raw))
    (by_champion,) = predict_frame(load_checkpoint(paths.champion_checkpoint), noise, last=1)
    (by_latest,) = predict_frame(load_checkpoint(paths.checkpoint), noise, last=1)
    assert by_champion["probability"] != pytest.approx(by_latest["probability"], abs=1e-4)
    assert line["probability"] == pytest.approx(by_champion["probability"], abs=1e-6)


def test_same_data_variant_and_seed_give_identical_metrics(tmp_path, good_run, planted_raw):
    result = materialize(planted_raw, tmp_path, selection=PER_VARIANT[:7])
    assert result.success
    first = read_json(cell_paths(good_run[0]).evaluation_json)
    second = read_json(cell_paths(tmp_path).evaluation_json)
    # Two runs on this machine, at different times and memory layouts: counts exact, float32
    # model figures within FLOAT32_RTOL (another seed moves them by far more).
    assert_same_numbers(second["metrics"], first["metrics"], rtol=FLOAT32_RTOL, where="metrics")
    assert_same_numbers(second["threshold"], first["threshold"], rtol=FLOAT32_RTOL, where="threshold")
    assert second["training"]["seed"] == first["training"]["seed"] == 42
    a = load_checkpoint(cell_paths(good_run[0]).checkpoint).model.state_dict()
    b = load_checkpoint(cell_paths(tmp_path).checkpoint).model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=FLOAT32_RTOL, atol=1e-7, msg=k)


def test_leaderboard_lists_exactly_the_variants_with_reports(tmp_path, good_run):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    result = materialize(tmp_path / "unused.parquet", data_dir, selection=["variant_leaderboard"])
    assert result.success
    (event,) = result.get_asset_materialization_events()
    table = event.step_materialization_data.materialization.metadata["leaderboard"].value
    assert [r.data["variant"] for r in table.records] == ["smoke"]
    assert [r.data["dataset"] for r in table.records] == ["nasdaq"]
    text = (data_dir / "leaderboard.md").read_text()
    assert "smoke" in text and "baseline" not in text
    assert np.isfinite(float(table.records[0].data["signals"]))
