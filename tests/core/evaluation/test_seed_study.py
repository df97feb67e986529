"""A seed study: ``train.seeds`` trains the cell's model under each seed, fused; the evaluation
reports every seed's gate and the champion candidate stays the first seed's model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from patx_core import pipeline
from patx_core.data.contract import validate_raw
from patx_core.settings.variants import get_variant
from tests.cells import make_cell
from tests.synthetic import planted_candles


def _evaluate(tmp_path, seeds):  # type: ignore[no-untyped-def]
    smoke = get_variant("smoke")
    variant = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, max_epochs=4, seeds=seeds))
    cell = make_cell(tmp_path, validate_raw(planted_candles(1500, seed=3)), variant)
    table = pipeline.build_features(pipeline.load_raw_prices(cell).value, cell).value
    frame = pipeline.build_splits(table, cell).value
    pipeline.build_windows(frame, cell)
    trained = pipeline.train_model(cell)
    pipeline.evaluate_model(table, frame, cell)
    return cell, trained, json.loads(cell.paths.evaluation_json.read_text()), table, frame


def test_three_seeds_are_judged_by_the_gate_and_the_candidate_is_the_first_seeds(tmp_path) -> None:
    cell, trained, body, table, frame = _evaluate(tmp_path, (0, 1, 2))
    block = body["seeds"]
    assert [r["seed"] for r in block["per_seed"]] == [0, 1, 2] and block["n_seeds"] == 3
    assert block["champion_seed"] == 0 and body["training"]["seed"] == 0
    assert block["passed"] == sum(r["passed"] for r in block["per_seed"])
    # seed 0's row is the checkpoint's own gate: the same figures through the same rules
    gate, first = body["checks"]["precision_gate"], block["per_seed"][0]
    for key in ("passed", "precision", "n_signals", "threshold", "precision_ci95"):
        assert first[key] == gate[key], key
    assert first["best_epoch"] == body["training"]["best_epoch"]
    # the seeds trained different models (else the study would say nothing)
    recorded = pipeline.read_seed_predictions(cell)
    assert not np.array_equal(recorded["val_0"], recorded["val_1"])
    assert trained.metadata["seeds"] == [0, 1, 2]
    report = cell.paths.report_md.read_text()
    assert f"## Seeds — {block['passed']} of 3 pass the gate" in report
    for r in block["per_seed"]:
        assert f"| {r['seed']} | {'pass' if r['passed'] else 'fail'} |" in report

    # an evaluation refuses a seed study recorded for another checkpoint
    npz = dict(recorded)
    npz["checkpoint_sha256"] = np.asarray("0" * 64)
    with open(cell.paths.seed_predictions, "wb") as fh:
        np.savez(fh, **npz)
    with pytest.raises(RuntimeError, match="belongs to another training run"):
        pipeline.evaluate_model(table, frame, cell)


def test_one_seed_is_the_default_and_reports_the_checkpoints_own_gate(tmp_path) -> None:
    cell, _, body, _, _ = _evaluate(tmp_path, ())
    block = body["seeds"]
    assert block["n_seeds"] == 1 and block["per_seed"][0]["seed"] == get_variant("smoke").train.seed
    assert block["per_seed"][0]["passed"] == body["checks"]["precision_gate"]["passed"]
    assert "## Seeds" not in cell.paths.report_md.read_text()
