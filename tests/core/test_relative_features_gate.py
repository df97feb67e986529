"""Why the scale-free features exist: a planted pattern on a strongly trending price.

With the guide's raw price columns the test period's z-scores fall far outside anything seen in
training, and the pattern learned on train is lost on test; with the scale-free features the
same model keeps it. Runs the real pipeline steps (no Dagster) on the smoke-sized variants.
"""

from __future__ import annotations

import numpy as np
import pytest

from patx_core import pipeline
from patx_core.data.contract import validate_raw
from tests.cells import make_cell
from tests.synthetic import planted_candles


def _run(raw, name: str, root) -> tuple[dict, float]:
    cell = make_cell(root / name, raw, name)
    table = pipeline.build_features(pipeline.load_raw_prices(cell).value, cell).value
    frame = pipeline.build_splits(table, cell).value
    data = pipeline.build_windows(frame, cell).value
    pipeline.train_model(cell)
    evaluation = pipeline.evaluate_model(table, frame, cell).value
    max_abs_z = float(np.abs(data.matrix[data.ends["test"]]).max())
    return evaluation, max_abs_z


@pytest.fixture(scope="module")
def trending_raw():
    # 20x price rise over the series; the pattern is a long lower wick + rally, no volume tell.
    return validate_raw(planted_candles(3000, seed=2, trend=np.log(20), volume_signal=False))


def test_relative_features_pass_the_gate_where_the_guides_features_do_not(tmp_path, trending_raw):
    relative, z_relative = _run(trending_raw, "relative_smoke", tmp_path)
    seed, z_seed = _run(trending_raw, "smoke", tmp_path)
    assert relative["checks"]["precision_gate"]["passed"], relative["checks"]["precision_gate"]["reason"]
    assert relative["diagnosis"] == []  # a model that learned the pattern names no failure mode
    assert not seed["checks"]["precision_gate"]["passed"]
    assert relative["metrics"]["test"]["roc_auc"] > seed["metrics"]["test"]["roc_auc"]
    # the mechanism: raw price levels leave the train range, relative ones do not
    assert z_seed > 1.5 * z_relative
