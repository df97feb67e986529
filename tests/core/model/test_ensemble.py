"""A seed ensemble (``train.ensemble = true``): the candidate is the mean of its seeds' probabilities,
saved as one checkpoint, and everything downstream (evaluation, predict, latest signal, ledger,
walk-forward) scores the ensemble."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import polars as pl
import pytest
import torch

from patx_core.data.windows import WindowedData
from patx_core import pipeline
from patx_core.data.contract import validate_raw
from patx_core.model.ensemble import SeedEnsemble
from patx_core.model.inference import predict_proba
from patx_core.serving.predict import predict_frame
from patx_core.settings.config import TrainConfig
from patx_core.settings.variants import get_variant, load_variants
from patx_core.model.checkpoint import load_checkpoint
from tests.cells import make_cell
from tests.synthetic import planted_candles

# The ensemble's probability passes through a logit and back (float64 logit, float32 sigmoid in
# predict_proba): members' mean and ensemble agree to float32 rounding of a probability.
MEAN_ATOL = 1e-6


def _ensemble_variant(seeds=(0, 1, 2)):
    smoke = get_variant("smoke")
    train = dataclasses.replace(smoke.train, max_epochs=4, patience=2, seeds=seeds, ensemble=True)
    return dataclasses.replace(smoke, name="smoke_ens", train=train)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cell = make_cell(tmp_path_factory.mktemp("ens"), validate_raw(planted_candles(3000, seed=1)), _ensemble_variant())
    table = pipeline.build_features(pipeline.load_raw_prices(cell).value, cell).value
    frame = pipeline.build_splits(table, cell).value
    pipeline.build_windows(frame, cell)
    step = pipeline.train_model(cell)
    pipeline.evaluate_model(table, frame, cell)
    return cell, step, table, frame


def test_ensemble_needs_seeds():
    with pytest.raises(ValueError, match="ensemble"):
        TrainConfig(ensemble=True)
    with pytest.raises(ValueError, match="ensemble"):
        TrainConfig(ensemble=True, seeds=(3,))


def test_shipped_ensemble_is_baseline_with_five_seeds_off_the_nightly():
    ens, base = load_variants()["ensemble"], load_variants()["baseline"]
    assert ens.train.ensemble and len(ens.train.seeds) == 5 and ens.nightly is False
    assert (ens.model, ens.data, ens.labels, ens.split) == (base.model, base.data, base.labels, base.split)


def test_the_checkpoint_holds_every_seed_and_loads_weights_only(trained):
    cell, step, _, _ = trained
    raw = torch.load(io.BytesIO(cell.paths.checkpoint.read_bytes()), weights_only=True)
    prefixes = {k.split(".")[1] for k in raw["model_state_dict"]}
    assert prefixes == {"0", "1", "2"}  # members.<k>.… for the three seeds
    loaded = load_checkpoint(cell.paths.checkpoint)
    assert isinstance(loaded.model, SeedEnsemble) and len(loaded.model.members) == 3
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, raw["model_state_dict"][k]), k
    assert step.metadata["candidate"] == "3-seed ensemble"


def test_ensemble_probabilities_are_the_mean_of_its_members(trained):
    cell, _, _, _ = trained
    data = WindowedData.load(cell.paths.windows)
    ensemble = load_checkpoint(cell.paths.checkpoint).model
    members = np.stack([predict_proba(m, data, "test") for m in ensemble.members])
    np.testing.assert_allclose(predict_proba(ensemble, data, "test"), members.mean(axis=0), rtol=0, atol=MEAN_ATOL)
    # The members differ (else the mean would pin nothing) and are the seed study's own models.
    assert np.abs(members[0] - members[1]).max() > 1e-3
    recorded = pipeline.read_seed_predictions(cell)
    for seed, member in zip((0, 1, 2), members):
        np.testing.assert_allclose(recorded[f"test_{seed}"], member, rtol=0, atol=1e-12)


def test_the_evaluation_judges_the_ensemble_and_still_reports_each_seed(trained):
    cell, _, _, _ = trained
    body = json.loads(cell.paths.evaluation_json.read_text())
    block = body["seeds"]
    assert block["ensemble"] is True and [r["seed"] for r in block["per_seed"]] == [0, 1, 2]
    assert "the champion candidate is the 3-seed ensemble" in cell.paths.report_md.read_text()


def test_predict_prints_the_ensembles_probability_and_each_members(trained):
    cell, _, _, _ = trained
    checkpoint = load_checkpoint(cell.paths.checkpoint)
    raw = validate_raw(planted_candles(3000, seed=1))
    rows = predict_frame(checkpoint, raw, last=3, threshold=0.5)
    for row in rows:
        assert len(row["member_probabilities"]) == 3
        assert row["probability"] == pytest.approx(float(np.mean(row["member_probabilities"])), abs=MEAN_ATOL)


def test_latest_signal_and_the_ledger_read_the_ensemble(trained):
    cell, _, _, _ = trained
    checkpoint = load_checkpoint(cell.paths.checkpoint)
    raw = validate_raw(planted_candles(3000, seed=1))
    [expected] = predict_frame(checkpoint, raw, last=1, threshold=0.5)
    promoted = pipeline.promote_champion(cell)
    assert promoted.metadata["promoted"], promoted.metadata["reason"]  # the planted pattern passes the gate
    pipeline.latest_signal(cell)
    [line] = json.loads(cell.paths.signal_json.read_text())["signals"]
    assert line["probability"] == pytest.approx(expected["probability"], abs=MEAN_ATOL)
    assert line["member_probabilities"] == pytest.approx(expected["member_probabilities"], abs=MEAN_ATOL)
    pipeline.signal_ledger(cell)
    rows = pl.read_parquet(cell.paths.ledger).sort("timestamp")
    newest = rows.filter(pl.col("timestamp") == rows["timestamp"].max())
    assert newest["probability"].to_list() == pytest.approx([expected["probability"]] * newest.height,
                                                            abs=MEAN_ATOL)
    members = np.mean(expected["member_probabilities"])
    assert newest["probability"][0] == pytest.approx(members, abs=MEAN_ATOL)


def test_a_walk_forward_fold_trains_and_judges_the_ensemble(trained, monkeypatch):
    from patx_core.evaluation import walk_forward as wf
    from patx_core.model import ensemble as ens_module

    cell, _, table, _ = trained
    calls = []
    real = ens_module.train_seeds
    monkeypatch.setattr(ens_module, "train_seeds", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    variant = dataclasses.replace(cell.variant, walk_forward=dataclasses.replace(cell.variant.walk_forward, folds=2))
    plans = wf.plan_folds(table, variant)[:1]
    [result] = wf.run_fold_group(table, plans, variant, device="cpu")
    assert calls == [1]  # one fold, its three seeds in one fused run
    assert result.row["gate_passed"] in (True, False)
