"""The `score` job on the graph: no retraining, a ledger and a track record for the cell."""

from __future__ import annotations

import shutil

import dagster as dg
import polars as pl

from patx_core.serving.ledger import read_ledger
from patx_core.storage.artifacts import read_json
from tests.dagster.harness import cell_paths, materialize, materialized

SCORE = ["ingested_candles", "latest_signal", "signal_ledger", "track_record"]


def test_score_records_champion_and_shadow_rows_without_retraining(tmp_path, good_run, planted_raw):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    paths = cell_paths(data_dir)
    checkpoint = paths.checkpoint.read_bytes()
    result = materialize(planted_raw, data_dir, selection=SCORE)
    assert result.success
    assert materialized(result) == set(SCORE)
    assert paths.checkpoint.read_bytes() == checkpoint, "score trains nothing"
    rows = read_ledger(paths.ledger).rows
    assert set(rows["role"].unique()) == {"champion", "shadow"}
    # the history is all in sample for a model trained on it: rows recorded, none counted yet
    assert not rows["out_of_sample"].any()
    record = read_json(paths.track_record_json)
    assert record["monitor"]["decision"] == "watching" and record["roles"]["champion"]["n_scored"] == 0
    # ...and the record says so, rather than showing an empty table
    for role in ("champion", "shadow"):
        mine = rows.filter(pl.col("role") == role)
        assert record["roles"][role]["n_in_sample"] == mine.height > 0
        assert record["roles"][role]["in_sample_until"] == mine["model_data_end"].max().isoformat()
    assert f"shadow: {record['roles']['shadow']['n_in_sample']} recorded row(s) fall on or before" \
        in paths.track_record_md.read_text()
    [check] = [e for e in result.get_asset_check_evaluations()]
    assert check.check_name == "track_record_live_precision" and check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    before = paths.ledger.read_bytes()
    assert materialize(planted_raw, data_dir, selection=SCORE).success
    assert paths.ledger.read_bytes() == before, "the same night again adds nothing"
    assert pl.read_parquet(paths.ledger).height == rows.height


def test_make_score_ends_with_one_verdict_line_from_the_track_record():
    from patx_dagster.verdict import track_record_line

    figures = {"n_scored": 5, "n_signals": 2, "n_resolved": 1, "precision": 1.0}
    record = {"cell": "nasdaq|baseline", "champion_present": False, "monitor": None,
              "roles": {"champion": {**figures, "n_scored": 0, "precision": None},
                        "shadow": {**figures, "n_in_sample": 500}}}
    line = track_record_line(record)
    assert line == ("nasdaq|baseline: no champion; champion 0 scored, 0 counted, 2 signals, 1 resolved, precision n/a; "
                    "shadow 505 scored, 5 counted (500 in sample), 2 signals, 1 resolved, precision 1.000")
    # with bets: how many bets the signals make, and the resolved bets the precision is over
    betted = {**record, "roles": {"shadow": {**figures, "n_signals": 12, "n_bets": 4, "n_bets_resolved": 3}}}
    assert track_record_line(betted).endswith("shadow 5 scored, 5 counted, 12 signals in 4 bets, 3 resolved, "
                                              "precision 1.000")
    watched = {**record, "champion_present": True, "monitor": {"decision": "watching", "statistic": 1.2,
                                                               "threshold": 5.6}}
    assert track_record_line(watched).startswith("nasdaq|baseline: monitor watching (1.2/5.6); ")
