"""``patx search``: trials see train and val only, the study resumes after a kill, outputs are complete."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from patx_core.data.contract import validate_raw
from patx_core.data.splits import build_feature_table, split_dataset
from patx_core.search import study as study_module
from patx_core.search.study import open_study, run_search, search_windows
from patx_core.settings.config import VariantConfig
from patx_core.settings.variants import get_variant, load_variants
from patx_core.storage.locks import exclusive
from tests.cells import make_cell, write_datasets_file
from tests.synthetic import planted_candles

REPO = Path(__file__).resolve().parents[3]


def tiny_smoke(trials: int = 2, **search: object) -> VariantConfig:
    """``smoke`` with its shipped search, cut to a couple of short epochs per trial."""
    v = get_variant("smoke")
    train = dataclasses.replace(v.train, max_epochs=3, patience=2)
    return dataclasses.replace(v, train=train, search=dataclasses.replace(v.search, trials=trials, **search))


def _val_end(raw: pl.DataFrame, v: VariantConfig):
    table = build_feature_table(raw, v.data, v.labels)
    return split_dataset(table, v.split, v.labels, v.data).cutoffs["val"][1]


def test_search_windows_are_the_judged_variants_train_and_val_exactly():
    v = get_variant("smoke")
    raw = validate_raw(planted_candles(1200, seed=3))
    full = split_dataset(build_feature_table(raw, v.data, v.labels), v.split, v.labels, v.data).to_windows()
    searched = search_windows(raw, v)
    assert set(searched.ends) == {"train", "val"}  # no test window at all
    for split in ("train", "val"):
        np.testing.assert_array_equal(searched.split_labels(split), full.split_labels(split))
        # Same scaler (train rows only) and causal features: the windows agree to float rounding.
        np.testing.assert_allclose(searched.windows(split), full.windows(split), rtol=0, atol=1e-6)


def test_trials_never_read_the_test_split(tmp_path):
    """Two datasets equal up to the end of val and different after it give identical trials."""
    v = tiny_smoke(trials=2)
    first = planted_candles(1200, seed=3)
    end = _val_end(validate_raw(first), v)
    after = pl.col("timestamp") >= end
    # After val: prices 40 % higher and volume tripled, so every test feature and label moves.
    second = first.with_columns([pl.when(after).then(pl.col(c) * 1.4).otherwise(pl.col(c)).alias(c)
                                 for c in ("open", "high", "low", "close")]
                                + [pl.when(after).then(pl.col("volume") * 3).otherwise(pl.col("volume"))])
    assert not first.equals(second) and first.filter(~after).equals(second.filter(~after))
    frames = []
    for name, candles in (("a", first), ("b", second)):
        report = run_search(make_cell(tmp_path / name, candles, v))
        frames.append(report.trials.drop("seconds"))
    assert frames[0].height == 2 and (frames[0]["state"] == "COMPLETE").all()
    assert frames[0].equals(frames[1]), f"{frames[0]}\n{frames[1]}"


def test_search_writes_trials_report_and_a_loadable_best_toml(tmp_path):
    v = tiny_smoke(trials=3)
    cell = make_cell(tmp_path, planted_candles(1200, seed=3), v)
    report = run_search(cell)
    paths = cell.paths
    frame = pl.read_parquet(paths.search_trials)
    assert frame.columns == ["number", "train.lr", "model.dropout", "model.d_model", "objective", "state",
                             "best_epoch", "seconds"]
    assert frame["number"].to_list() == [0, 1, 2] and set(frame["state"]) <= {"COMPLETE", "PRUNED", "FAIL"}
    md = paths.search_md.read_text()
    assert "objective_by_trial.png" in md and "best_params.png" in md and (paths.search_dir / "objective_by_trial.png").exists()
    tuned = load_variants(paths.search_best)["smoke_tuned"]  # loads as PATX_VARIANTS would
    assert tuned.search is None and tuned.nightly is False
    best = report.best
    assert tuned.train.lr == pytest.approx(best.params["train.lr"], rel=1e-12)
    assert tuned.model.d_model == best.params["model.d_model"]
    assert best.objective == frame.filter(pl.col("state") == "COMPLETE")["objective"].max()
    assert re.fullmatch(r"best trial #\d+: val_roc_auc 0\.\d+ \(train\.lr=.*\); wrote .*/search/smoke/best\.toml",
                        report.final_line())
    assert "VARIANT=smoke_tuned" in report.judge_command and str(paths.search_best) in report.judge_command


def test_a_second_search_of_the_cell_waits_for_the_lock(tmp_path, monkeypatch):
    cell = make_cell(tmp_path, planted_candles(1200, seed=3), tiny_smoke())
    monkeypatch.setattr(study_module, "SEARCH_LOCK_TIMEOUT_S", 0.3)
    with exclusive(cell.paths.search_lock, timeout_s=1, busy=RuntimeError, what="test"):
        with pytest.raises(RuntimeError, match="another search has held"):
            run_search(cell)
    assert not cell.paths.search_journal.exists()  # it waited instead of starting a second study


def test_an_orphaned_running_trial_is_failed_and_the_study_finishes(tmp_path):
    """A trial left RUNNING (its search was killed) is told FAIL; the rerun ends with N finished."""
    cell = make_cell(tmp_path, planted_candles(1200, seed=3), tiny_smoke(trials=2))
    study = open_study(cell.paths.search_journal, cell.variant.name, cell.variant.search)
    study.ask()  # asked and never told: what SIGKILL leaves
    report = run_search(cell)
    states = report.trials["state"].to_list()
    assert states.count("FAIL") == 1 and states.count("COMPLETE") + states.count("PRUNED") == 2
    assert report.trials["number"].is_unique().all()


@pytest.mark.slow
def test_patx_search_killed_and_rerun_ends_with_exactly_n_finished_trials(tmp_path):
    variants = tmp_path / "variants.toml"
    from patx_core.settings.variants import variant_toml

    variants.write_text(variant_toml(dataclasses.replace(tiny_smoke(trials=5), name="smoke")))
    source = tmp_path / "raw.parquet"
    planted_candles(1200, seed=3).write_parquet(source)
    datasets = write_datasets_file(tmp_path / "datasets.toml", {"gen": {"source": str(source), "interval": "1d"}})
    env = {**os.environ, "PATX_VARIANTS": str(variants), "PATX_DATASETS": str(datasets),
           "PATX_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "patx_core.cli", "search", "--dataset", "gen", "--variant", "smoke"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = tmp_path / "data" / "gen" / "search" / "smoke" / "study.journal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and study_module.finished_count(
                open_study(journal, "smoke", tiny_smoke().search)) >= 2:  # read as the search writes it
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the first search must be killed mid-study, not finish"
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    frame = pl.read_parquet(journal.parent / "trials.parquet")
    assert frame["state"].is_in(["COMPLETE", "PRUNED"]).sum() == 5
    assert frame["number"].is_unique().all()
    last, judge = out.stdout.strip().splitlines()[-2:]
    assert last.startswith("best trial #") and last.endswith(f"wrote {journal.parent / 'best.toml'}")
    assert judge == f"PATX_VARIANTS={journal.parent / 'best.toml'} make materialize DATASET=gen VARIANT=smoke_tuned"


def test_the_pruner_reads_each_epochs_val_loss_and_stops_a_trial_that_trails(tmp_path):
    """Five earlier trials with val loss 0 at every epoch: a real trial trails their median at
    epoch 1 (its val loss is above 0), so it is pruned there and its fused run stops."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    v = tiny_smoke(trials=6)
    cell = make_cell(tmp_path, planted_candles(1200, seed=3), v)
    study = open_study(cell.paths.search_journal, v.name, v.search)
    dists = {"train.lr": FloatDistribution(1e-3, 1e-2, log=True), "model.dropout": FloatDistribution(0.0, 0.2),
             "model.d_model": CategoricalDistribution([16, 32])}
    for _ in range(5):  # MedianPruner starts pruning after 5 finished trials
        study.add_trial(optuna.trial.create_trial(
            params={"train.lr": 3e-3, "model.dropout": 0.1, "model.d_model": 16}, distributions=dists,
            value=0.99, intermediate_values={e: -0.0 for e in range(1, 4)}))  # -val_loss: maximized objective
    report = run_search(cell)
    last = report.trials.filter(pl.col("number") == 5).row(0, named=True)
    assert last["state"] == "PRUNED" and last["best_epoch"] == 1


def test_a_seed_ensemble_variant_is_searched_one_seed_per_trial(tmp_path):
    v = tiny_smoke(trials=1)
    v = dataclasses.replace(v, train=dataclasses.replace(v.train, seeds=(5, 6), ensemble=True))
    report = run_search(make_cell(tmp_path, planted_candles(1200, seed=3), v))
    assert report.trials["state"].to_list() == ["COMPLETE"]
    tuned = load_variants(report.best_toml)["smoke_tuned"]
    assert tuned.train.ensemble and tuned.train.seeds == (5, 6)  # the judged run trains the ensemble


def test_a_study_begun_under_other_settings_or_data_is_not_resumed(tmp_path):
    v = tiny_smoke(trials=1)
    candles = planted_candles(1200, seed=3)
    run_search(make_cell(tmp_path, candles, v))
    more = dataclasses.replace(v, search=dataclasses.replace(v.search, trials=2, parallel=2))
    assert run_search(make_cell(tmp_path, candles, more)).trials.height == 2  # more trials: the same study
    other = dataclasses.replace(v, train=dataclasses.replace(v.train, max_epochs=2))
    with pytest.raises(ValueError, match=r"under other settings \(changed: train\)"):
        run_search(make_cell(tmp_path, candles, other))
    with pytest.raises(ValueError, match=r"changed: input_sha256"):
        run_search(make_cell(tmp_path, planted_candles(1200, seed=4), v))


def test_patx_search_refuses_a_variant_without_a_search_table_in_one_line(tmp_path, monkeypatch, capsys):
    from patx_core import cli

    source = tmp_path / "raw.parquet"
    planted_candles(600, seed=3).write_parquet(source)
    datasets = write_datasets_file(tmp_path / "datasets.toml", {"gen": {"source": str(source), "interval": "1d"}})
    monkeypatch.setenv("PATX_DATASETS", str(datasets))
    monkeypatch.setenv("PATX_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["search", "--dataset", "gen", "--variant", "seed"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: variant 'seed' has no [seed.search] table to search "
                       "(README: \"Search without fooling yourself\")")
    assert not (tmp_path / "data" / "gen" / "search").exists()
    assert "search" in cli.COMMANDS


def test_trials_of_one_architecture_train_together_parallel_at_a_time(tmp_path, monkeypatch):
    from patx_core.model import fused
    from patx_core.settings.search import SearchParam

    v = tiny_smoke(trials=3)
    v = dataclasses.replace(v, search=dataclasses.replace(
        v.search, parallel=2, space=(SearchParam("train.lr", low=1e-3, high=1e-2, log=True),)))
    runs = []
    real = fused.train_many
    monkeypatch.setattr(fused, "train_many", lambda m, configs, datas, **k: runs.append(len(configs))
                        or real(m, configs, datas, **k))
    run_search(make_cell(tmp_path, planted_candles(1200, seed=3), v))
    assert runs == [2, 1]  # a round of two trials in one fused run, then the third alone

    small, large = (dataclasses.replace(v, model=dataclasses.replace(v.model, d_model=d)) for d in (16, 32))
    groups = study_module._by_architecture([("a", small, None), ("b", large, None), ("c", small, None)])
    assert [[t for t, _, _ in g] for g in groups] == [["a", "c"], ["b"]]  # one fused run per shape
