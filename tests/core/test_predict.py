"""Inference without Dagster scores exactly what evaluation scored, and refuses mismatched files."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from patx_core import pipeline
from patx_core.checkpoint import load_checkpoint
from patx_core.predict import SHORT_HISTORY, main, predict_frame
from patx_core.train import predict_proba
from patx_core.validation import validate_raw
from patx_core.variants import get_variant
from tests.cells import make_cell
from tests.synthetic import planted_candles


@pytest.fixture(scope="module", params=["smoke", "relative_smoke"])
def trained(request, tmp_path_factory):
    variant = get_variant(request.param)
    variant = dataclasses.replace(variant, train=dataclasses.replace(variant.train, max_epochs=1))
    raw = validate_raw(planted_candles(1500, seed=3))
    cell = make_cell(tmp_path_factory.mktemp(variant.name), raw, variant)
    table = pipeline.build_features(pipeline.load_raw_prices(cell).value, cell).value
    frame = pipeline.build_splits(table, cell).value
    data = pipeline.build_windows(frame, cell).value
    pipeline.train_model(cell)
    return raw, data, cell.paths


def test_predict_frame_matches_the_probabilities_evaluation_used(trained):
    raw, data, paths = trained
    checkpoint = load_checkpoint(paths.checkpoint)
    expected = predict_proba(checkpoint.model, data, "test")
    n = expected.size
    # the test split's samples run to the last labelled row, `horizon` candles before the end
    horizon = checkpoint.variant.labels.horizon
    rows = predict_frame(checkpoint, raw[: raw.height - horizon], last=n)
    got = np.array([r["probability"] for r in rows])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert all(r["signal"] is None for r in rows)  # no threshold given, no decision made


def test_cli_prints_one_json_line_per_candle_with_a_threshold(trained, tmp_path, capsys):
    raw, _, paths = trained
    raw_path = tmp_path / "raw.parquet"
    raw.write_parquet(raw_path)
    assert main(["--checkpoint", str(paths.checkpoint), "--raw", str(raw_path), "--last", "4",
                 "--threshold", "0.5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4 and [x["timestamp"] for x in lines] == sorted(x["timestamp"] for x in lines)
    assert all(x["signal"] == ("buy" if x["probability"] >= 0.5 else "hold") for x in lines)


def test_a_manifest_that_does_not_match_the_checkpoint_is_refused(trained, tmp_path, capsys):
    raw, _, paths = trained
    raw_path = tmp_path / "raw.parquet"
    raw.write_parquet(raw_path)
    (paths.checkpoint_dir / "manifest.json").write_text(json.dumps({"threshold": 0.4, "checkpoint_sha256": "0" * 64}))
    try:
        assert main(["--checkpoint", str(paths.checkpoint), "--raw", str(raw_path)]) == 2
        assert "does not match" in capsys.readouterr().err
    finally:
        (paths.checkpoint_dir / "manifest.json").unlink()


def test_a_short_history_is_warned_about(trained, caplog):
    raw, _, paths = trained
    checkpoint = load_checkpoint(paths.checkpoint)
    with caplog.at_level(logging.WARNING, logger="patx_core.predict"):
        predict_frame(checkpoint, raw[-400:])
    assert f">= {SHORT_HISTORY} candles" in caplog.text
