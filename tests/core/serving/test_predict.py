"""Inference without Dagster scores exactly what evaluation scored, and refuses mismatched files."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from patx_core import pipeline
from patx_core.storage.artifacts import sha256_file
from patx_core.model.checkpoint import load_checkpoint
from patx_core.cli import main as patx
from patx_core.serving.predict import NO_THRESHOLD, SHORT_HISTORY, predict_frame, recorded_threshold
from patx_core.model.inference import predict_proba
from patx_core.data.contract import validate_raw
from patx_core.settings.variants import get_variant
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
    assert all(r["signal"] == "hold" and r["reason"] == "no decision threshold given" for r in rows)


def test_cli_prints_one_json_line_per_candle_with_a_threshold(trained, tmp_path, capsys):
    raw, _, paths = trained
    raw_path = tmp_path / "raw.parquet"
    raw.write_parquet(raw_path)
    assert patx(["predict", "--checkpoint", str(paths.checkpoint), "--raw", str(raw_path), "--last", "4",
                 "--threshold", "0.5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4 and [x["timestamp"] for x in lines] == sorted(x["timestamp"] for x in lines)
    assert all(x["signal"] == ("buy" if x["probability"] >= 0.5 else "hold") for x in lines)
    assert all(x["reason"] is None for x in lines)


def _cli_rows(paths, tmp_path, capsys, *extra: str) -> list[dict]:
    raw_path = tmp_path / "raw.parquet"
    if not raw_path.exists():
        trained_raw = planted_candles(1500, seed=3)
        trained_raw.write_parquet(raw_path)
    assert patx(["predict", "--checkpoint", str(paths.checkpoint), "--raw", str(raw_path), "--last", "3",
                 *extra]) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_a_checkpoint_without_a_threshold_holds_and_says_why(trained, tmp_path, capsys):
    _, _, paths = trained
    rows = _cli_rows(paths, tmp_path, capsys)
    assert len(rows) == 3
    assert all(r["signal"] == "hold" and r["threshold"] is None and r["reason"] == NO_THRESHOLD for r in rows)
    assert all(0.0 <= r["probability"] <= 1.0 for r in rows)  # still scored


def _evaluation_file(paths, tmp_path, threshold: dict) -> str:
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"threshold": threshold, "checkpoint_sha256": sha256_file(paths.checkpoint)}))
    return str(path)


def test_an_abstaining_evaluation_holds_with_its_reason(trained, tmp_path, capsys):
    _, _, paths = trained
    evaluation = _evaluation_file(paths, tmp_path, {
        "value": None, "rule": "abstain", "explanation": "no val threshold had a 95% Wilson lower bound",
        "diagnostic": {"threshold": 0.0}})  # a diagnostic point that would say "buy" to everything
    rows = _cli_rows(paths, tmp_path, capsys, "--evaluation", evaluation)
    assert all(r["signal"] == "hold" and r["threshold"] is None for r in rows)
    assert all(r["reason"].startswith("the model abstains") and "Wilson" in r["reason"] for r in rows)


def test_an_evaluations_threshold_decides(trained, tmp_path, capsys):
    _, _, paths = trained
    evaluation = _evaluation_file(paths, tmp_path, {"value": 0.0, "rule": "wilson_lower_bound"})
    rows = _cli_rows(paths, tmp_path, capsys, "--evaluation", evaluation)
    assert all(r["signal"] == "buy" and r["threshold"] == 0.0 and r["reason"] is None for r in rows)


def test_an_evaluation_of_another_checkpoint_is_refused(trained, tmp_path, capsys):
    _, _, paths = trained
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"threshold": {"value": 0.5}, "checkpoint_sha256": "0" * 64}))
    raw_path = tmp_path / "raw.parquet"
    planted_candles(1500, seed=3).write_parquet(raw_path)
    assert patx(["predict", "--checkpoint", str(paths.checkpoint), "--raw", str(raw_path),
                 "--evaluation", str(path)]) == 2
    assert "does not match" in capsys.readouterr().err


def test_recorded_threshold_reads_both_manifest_shapes():
    assert recorded_threshold({"threshold": 0.61}, "m") == (0.61, None)  # manifests before the block
    assert recorded_threshold({"threshold": {"value": 0.61, "rule": "wilson_lower_bound"}}, "m") == (0.61, None)
    value, reason = recorded_threshold({"threshold": {"value": None, "rule": "abstain", "explanation": "x"}}, "e")
    assert value is None and reason == "the model abstains (e: x)"
    assert recorded_threshold({}, "m") == (None, "m records no threshold")


def test_help_says_how_to_pass_a_threshold(capsys):
    with pytest.raises(SystemExit) as exit_:
        patx(["predict", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--threshold P" in text and "buy when probability >= P" in text
    assert '"signal": "hold"' in text and "threshold.value" in text


@pytest.mark.parametrize(("trained_on", "warns"), [(3600.0, True), (86_400.0 * 1.2, False), (None, False)])
def test_candles_of_another_interval_are_warned_about(trained, caplog, trained_on, warns):
    raw, _, paths = trained  # daily candles
    checkpoint = dataclasses.replace(load_checkpoint(paths.checkpoint), interval_seconds=trained_on)
    with caplog.at_level(logging.WARNING, logger="patx_core.serving.predict"):
        predict_frame(checkpoint, raw)
    assert ("1d apart" in caplog.text and "trained on 1h candles" in caplog.text) is warns


def test_a_manifest_that_does_not_match_the_checkpoint_is_refused(trained, tmp_path, capsys):
    raw, _, paths = trained
    raw_path = tmp_path / "raw.parquet"
    raw.write_parquet(raw_path)
    (paths.checkpoint_dir / "manifest.json").write_text(json.dumps({"threshold": 0.4, "checkpoint_sha256": "0" * 64}))
    try:
        assert patx(["predict", "--checkpoint", str(paths.checkpoint), "--raw", str(raw_path)]) == 2
        assert "does not match" in capsys.readouterr().err
    finally:
        (paths.checkpoint_dir / "manifest.json").unlink()


def test_a_short_history_is_warned_about(trained, caplog):
    raw, _, paths = trained
    checkpoint = load_checkpoint(paths.checkpoint)
    with caplog.at_level(logging.WARNING, logger="patx_core.serving.predict"):
        predict_frame(checkpoint, raw[-400:])
    assert f">= {SHORT_HISTORY} candles" in caplog.text


def test_a_symbol_the_model_cannot_score_holds_with_the_reason_and_the_others_still_signal(trained):
    import polars as pl

    from patx_core.serving.predict import predict_universe
    from patx_core.data.scaler import UniverseScaler

    raw, _, paths = trained
    checkpoint = load_checkpoint(paths.checkpoint)
    only_a = UniverseScaler(feature_columns=checkpoint.scaler.feature_columns,
                            per_symbol={"A": checkpoint.scaler.for_symbol(None)})
    model = dataclasses.replace(checkpoint, scaler=only_a)
    universe = pl.concat([raw.select(pl.lit(s).alias("symbol"), pl.all()) for s in ("A", "B")])
    rows = predict_universe(model, universe, last=1, threshold=0.5)
    assert [r["symbol"] for r in rows] == ["A", "B"]
    assert rows[0]["probability"] is not None and rows[0]["signal"] in ("buy", "hold") and rows[0]["reason"] is None
    assert rows[1]["signal"] == "hold" and rows[1]["probability"] is None
    assert "no scaler for symbol 'B'" in rows[1]["reason"]


def test_each_symbol_is_scored_on_its_own_candles_only(trained):
    """A symbol's features come from its own rows: a universe scores B exactly as B alone, so no
    indicator (EMA200 and the Wilder averages remember their whole input) runs across symbols."""
    import polars as pl

    from patx_core.serving.predict import predict_universe
    from tests.conftest import make_candles

    raw, _, paths = trained
    checkpoint = load_checkpoint(paths.checkpoint)
    # B: a short history at ~100; A before it in the frame, at ~1000, ending the day before B
    # starts (so A's rows followed by B's would even pass as one valid series)
    b = raw.tail(400)
    a = make_candles(1500, seed=11, start_price=1000.0)
    a = a.with_columns(pl.col("timestamp") + (b["timestamp"][0] - a["timestamp"][-1] - pl.duration(days=1)))
    universe = pl.concat([part.select(pl.lit(s).alias("symbol"), pl.all()) for s, part in (("A", a), ("B", b))])
    rows = predict_universe(checkpoint, universe, last=150, threshold=0.5)
    got = np.array([r["probability"] for r in rows if r["symbol"] == "B"], dtype=float)
    alone = np.array([r["probability"] for r in predict_frame(checkpoint, b, last=150, threshold=0.5)])
    assert got.shape == alone.shape == (150,)
    # same process, same model: float32 outputs within 1e-6
    np.testing.assert_allclose(got, alone, rtol=0, atol=1e-6)
