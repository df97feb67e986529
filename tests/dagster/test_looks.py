"""Every model judged on a dataset's test window is a look; the selection gate pays for them, and
promotion needs it as well as the literal gate."""

from __future__ import annotations

import math
import shutil
from datetime import datetime, timezone

import dagster as dg
import pytest

from patx_core.evaluation.looks import Look, read_looks, record_looks, seed_identity
from patx_core.storage.artifacts import read_json
from patx_dagster.assets import ALL_ASSETS
from patx_dagster.io_manager import IO_MANAGERS
from patx_dagster.partitions import partition_key
from tests.dagster.harness import DATASET, cell_paths, failure_text, grid_for, materialize, snapshot

UP_TO_EVALUATION = ["ingested_candles", "raw_prices", "features", "splits", "windows", "trained_model",
                    "evaluation_report"]

# Four cells of one dataset (partition names of the shipped grid, smoke-sized here): three
# single-seed candidates with different seeds, and a seed study of three seeds.
_SMALL = """
[{name}]
[{name}.data]
window_size = 32
[{name}.model]
d_model = 32
n_heads = 4
n_layers = 1
d_ff = 64
head_hidden = 16
[{name}.train]
max_epochs = 3
patience = 2
lr = 3e-3
batch_size = 64
{seeds}
"""


def _variants(tmp_path):
    path = tmp_path / "variants.toml"
    path.write_text("".join(_SMALL.format(name=n, seeds=s) for n, s in (
        ("smoke", "seed = 0"), ("long_context", "seed = 1"), ("large", "seed = 2"),
        ("relative_smoke", "seeds = [3, 4, 5]"))))
    return path


def _evaluate(grid, data_dir, variant: str, selection=UP_TO_EVALUATION) -> dict:
    result = dg.materialize(ALL_ASSETS, partition_key=partition_key(DATASET, variant), selection=selection,
                            resources={"grid": grid, **IO_MANAGERS}, raise_on_error=False)
    assert result.success, failure_text(result)
    return read_json(cell_paths(data_dir, variant).evaluation_json)


@pytest.mark.slow
def test_each_variant_of_a_dataset_is_one_more_look_and_a_reevaluation_or_a_seed_is_none(tmp_path, planted_raw):
    data_dir = tmp_path / "data"
    grid = grid_for(planted_raw, data_dir, variants_file=_variants(tmp_path))
    looks = []
    for variant in ("smoke", "long_context", "large"):
        ev = _evaluate(grid, data_dir, variant)
        looks.append(ev["checks"]["precision_gate_selection"]["n_looks"])
    assert looks == [1, 2, 3]
    block = ev["checks"]["precision_gate_selection"]
    assert [(look["variant"]) for look in block["looks"]] == ["smoke", "long_context"]
    ledger_path = data_dir / DATASET / "looks.parquet"
    assert read_looks(ledger_path).height == 3
    # The same checkpoint evaluated again adds no look and keeps its count.
    again = _evaluate(grid, data_dir, "large", selection=["evaluation_report"])
    assert again["checks"]["precision_gate_selection"]["n_looks"] == 3
    assert again["checkpoint_sha256"] == ev["checkpoint_sha256"] and read_looks(ledger_path).height == 3
    # A seed study is one candidate (its first seed) and two diagnostics that are not counted.
    study = _evaluate(grid, data_dir, "relative_smoke")
    assert study["checks"]["precision_gate_selection"]["n_looks"] == 4
    ledger = read_looks(ledger_path)
    rows = ledger.filter(ledger["variant"] == "relative_smoke")
    assert rows["eligible"].to_list() == [True, False, False]
    assert rows["checkpoint_sha256"].to_list() == [study["checkpoint_sha256"],
                                                   seed_identity(study["checkpoint_sha256"], 4),
                                                   seed_identity(study["checkpoint_sha256"], 5)]
    # each row is the judged figures on the gate window the evaluation reports
    first = ledger.row(0, named=True)
    test = read_json(cell_paths(data_dir, "smoke").evaluation_json)
    assert (first["n_signals"], first["hits"]) == (test["metrics"]["test"]["n_signals"],
                                                   test["metrics"]["test"]["true_positives"])
    assert first["window_start"] == datetime.fromisoformat(test["splits"]["test"]["start"])
    assert first["window_end"] == datetime.fromisoformat(test["splits"]["test"]["end"])
    assert (first["dataset"], first["gate_split"]) == (DATASET, "test")
    # the report's first lines and the leaderboard say how many looks each verdict paid for
    report = cell_paths(data_dir, "relative_smoke").report_md.read_text()
    assert report.splitlines()[2].startswith("**Selection gate ") and ": 4 looks, confidence " in report.splitlines()[2]


def test_a_literal_pass_that_does_not_survive_its_looks_is_not_promoted(tmp_path, good_run, planted_raw):
    """The champion of the good run stays byte-identical when its window has been looked at by
    enough other models; the run stays green and only the selection check fails."""
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    paths = cell_paths(data_dir)
    ev = read_json(paths.evaluation_json)
    assert ev["checks"]["precision_gate"]["passed"] and ev["checks"]["precision_gate_selection"]["passed"]
    p = ev["checks"]["precision_gate_selection"]["p_value"]
    assert p > 1e-5, f"the planted smoke model is too good for this test (p = {p})"
    others = math.ceil(0.75 / p)  # with them, 1 − (others + 1) · p < 0.25 < 0.5
    window = ev["splits"]["test"]
    judged = datetime(2026, 1, 1, tzinfo=timezone.utc)
    record_looks(paths.dataset.looks, paths.dataset.looks_lock, [
        Look(dataset=DATASET, variant=f"other{i}", checkpoint_sha256=f"other{i}", gate_split="test",
             window_start=datetime.fromisoformat(window["start"]), window_end=datetime.fromisoformat(window["end"]),
             n_signals=40, hits=30, eligible=True, judged_at=judged) for i in range(others)])
    champion_before = snapshot(paths.champion_dir)
    result = materialize(planted_raw, data_dir, selection=["evaluation_report", "champion_model"])
    assert result.success, failure_text(result)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["evaluation_report_precision_gate"].passed
    assert not checks["evaluation_report_selection_gate"].passed
    assert checks["evaluation_report_selection_gate"].metadata["n_looks"].value == others + 1
    (promotion,) = result.asset_materializations_for_node("champion_model")
    assert promotion.metadata["promoted"].value is False
    reason = promotion.metadata["reason"].value
    assert reason.startswith("selection gate failed: test precision ") and "would pass alone, but " in reason
    assert f"{others + 1} models were judged on this test window" in reason
    assert snapshot(paths.champion_dir) == champion_before


@pytest.mark.slow
def test_a_retrain_on_a_barely_grown_window_is_one_more_look_and_a_moved_window_a_fresh_test(tmp_path, good_run):
    """The nightly retrain of the same cell: 100 new candles keep most of the test window (one
    more look); 3,000 new candles move it past the old one entirely (a fresh test, one look)."""
    from tests.dagster.harness import write_raw
    from tests.synthetic import planted_candles

    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)  # smoke judged once on planted_candles(3000, seed=1)
    counts = []
    for n in (3100, 6000):
        raw = write_raw(planted_candles(n, seed=1), tmp_path / f"planted_{n}.parquet")
        grid = grid_for(raw, data_dir)
        counts.append(_evaluate(grid, data_dir, "smoke")["checks"]["precision_gate_selection"]["n_looks"])
    assert counts == [2, 1]
    assert read_looks(cell_paths(data_dir).dataset.looks).height == 3
