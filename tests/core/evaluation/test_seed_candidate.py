"""A seed study's champion candidate is the model of the configured first seed, whatever the
other seeds did on test: choosing the seed that did best on test and labelling it the first would
select on the very split the gate judges, and the checkpoint, the seed-0 row and the gate would
still agree with one another. Only a model trained from that seed alone can tell."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from patx_core import pipeline
from patx_core.data.contract import validate_raw
from patx_core.settings.variants import get_variant
from patx_core.model.checkpoint import load_checkpoint
from tests.cells import make_cell
from tests.synthetic import planted_candles

# Seeds whose study has its best test ROC-AUC at a later seed (asserted below, so that a change of
# training engine that makes the first seed the best says so instead of passing vacuously).
SEEDS = (3, 0, 1)


def _train(tmp_path, seeds: tuple[int, ...], seed: int):  # type: ignore[no-untyped-def]
    smoke = get_variant("smoke")
    variant = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, max_epochs=4, seeds=seeds, seed=seed))
    cell = make_cell(tmp_path, validate_raw(planted_candles(1500, seed=3)), variant)
    table = pipeline.build_features(pipeline.load_raw_prices(cell).value, cell).value
    frame = pipeline.build_splits(table, cell).value
    pipeline.build_windows(frame, cell)
    pipeline.train_model(cell)
    pipeline.evaluate_model(table, frame, cell)
    return cell


def test_the_candidate_of_a_seed_study_is_the_model_trained_from_the_first_seed(tmp_path) -> None:
    study = _train(tmp_path / "study", SEEDS, SEEDS[0])
    body = json.loads(study.paths.evaluation_json.read_text())
    rows = body["seeds"]["per_seed"]
    alone = _train(tmp_path / "alone", (), SEEDS[0])
    candidate = load_checkpoint(study.paths.checkpoint).model.state_dict()
    first = load_checkpoint(alone.paths.checkpoint).model.state_dict()
    # Fused training of several seeds agrees with training one alone up to float rounding, grown over
    # four epochs (measured: 0.0065 at most, per weight); another seed's weights differ by ~0.7.
    gap = max(float((candidate[name] - value).abs().max()) for name, value in first.items())
    assert gap < 0.05, f"the checkpoint is not the model of the first seed {SEEDS[0]} (max weight gap {gap:.3f})"
    # not vacuous: here another seed did better on test (the gate split), so picking by test would show
    auc = {r["seed"]: r["roc_auc"] for r in rows}  # on the gate split (test): every seed abstains at 4 epochs
    best = max(auc, key=auc.get)
    assert best != SEEDS[0], f"the first seed did best on test here (ROC-AUC {auc}): pick other SEEDS"
    assert body["seeds"]["champion_seed"] == SEEDS[0] and body["training"]["seed"] == SEEDS[0]
    assert body["checks"]["precision_gate"]["precision"] == rows[0]["precision"]
    # and the seeds did train different models (else agreement with the first would say nothing)
    recorded = pipeline.read_seed_predictions(study)
    assert not np.allclose(recorded[f"val_{SEEDS[0]}"], recorded[f"val_{best}"], atol=1e-3)
