"""What `make materialize` prints last: every failed WARN check of the run, one line each, above the verdict."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import yaml

from patx_dagster.assets import ALL_ASSETS
from patx_dagster.io_manager import IO_MANAGERS
from patx_dagster.partitions import partition_key
from patx_dagster.verdict import failed_warnings, verdict_lines
from tests.conftest import make_candles
from tests.dagster.harness import DATASET, grid_for

REPO = Path(__file__).resolve().parents[2]


def test_a_failed_warn_check_of_the_run_is_one_readable_line(tmp_path, planted_raw):
    instance = dg.DagsterInstance.ephemeral()

    def run(max_staleness: str) -> str:
        grid = grid_for(planted_raw, tmp_path / max_staleness, max_staleness=max_staleness)
        result = dg.materialize(ALL_ASSETS, partition_key=partition_key(DATASET, "smoke"), selection=["raw_prices"],
                                resources={"grid": grid, **IO_MANAGERS},
                                instance=instance)
        assert result.success, "a failed WARN check does not fail the run"
        return result.run_id

    # The planted candles end years ago: a 4-day limit is long past; a 1000-week one is not.
    (line,) = failed_warnings(instance, run("4d"))
    assert line.startswith("warning: check raw_prices_fresh failed: 1 symbol(s) stale: 'planted''s newest candle is ")
    assert " years old, " in line and "past max_staleness=4d" in line and "\n" not in line
    assert failed_warnings(instance, run("1000w")) == [], "passed checks are not listed"


def test_the_verdict_says_how_many_symbols_were_tested_when_one_was_not():
    evaluation = {"dataset": {"name": "us_daily"}, "variant": "baseline", "diagnosis": [], "backtest": {},
                  "checks": {"precision_gate": {"passed": False, "split": "test", "reason": "abstains"}},
                  "per_symbol": {"split": "test", "symbols": {"SPX": {}},
                                 "untested": {"GOOG": {"reason": "its last candle (2013-12-31) is before …"}}}}
    assert verdict_lines(evaluation)[0] == "us_daily|baseline: precision gate FAILED on test (tested on 1 of 2 symbols) — abstains"
    evaluation["per_symbol"]["untested"] = {}
    assert verdict_lines(evaluation)[0] == "us_daily|baseline: precision gate FAILED on test — abstains"


def test_patx_core_warnings_are_run_events_and_each_stage_is_announced(tmp_path, planted_raw):
    """With the shipped instance.yaml, a library warning is a formatted event of the run, never a raw
    stderr line, and a step says what it starts doing at INFO (shell runs log at INFO)."""
    settings = {"python_logs": yaml.safe_load((REPO / "instance.yaml").read_text())["python_logs"]}
    instance = dg.DagsterInstance.ephemeral(settings=settings)
    folder = tmp_path / "universe"
    folder.mkdir()
    pl.read_parquet(planted_raw).write_parquet(folder / "long.parquet")
    make_candles(60, seed=3).write_parquet(folder / "short.parquet")  # too few rows: skipped with a warning
    grid = grid_for(folder, tmp_path / "data")
    result = dg.materialize(ALL_ASSETS, partition_key=partition_key(DATASET, "smoke"), selection=["raw_prices"],
                            resources={"grid": grid, **IO_MANAGERS},
                            instance=instance)
    assert result.success
    messages = [(r.level, r.user_message) for r in instance.all_logs(result.run_id) if r.dagster_event is None]
    assert any(level == 30 and "symbol 'short'" in text for level, text in messages), messages
    assert any(level == 20 and "raw_prices: reading and validating every symbol" in text for level, text in messages)


def test_the_verdict_line_ends_with_the_selection_gate_looks_and_confidence():
    from patx_core.evaluation.selection import selection_gate

    evaluation = {"dataset": {"name": "nasdaq"}, "variant": "smoke", "diagnosis": [], "backtest": {},
                  "checks": {"precision_gate": {"passed": True, "split": "test", "reason": "test precision 0.74"},
                             "precision_gate_selection": selection_gate(46, 62, 12, target=0.7, min_confidence=0.5)}}
    assert verdict_lines(evaluation)[0] == ("nasdaq|smoke: precision gate PASSED on test — test precision 0.74; "
                                            "selection gate FAILED: 12 looks, confidence 0.00 < 0.5")


def test_the_verdict_names_the_seed_study_and_what_the_candidate_is():
    evaluation = {"dataset": {"name": "nasdaq"}, "variant": "ensemble", "diagnosis": [], "backtest": {},
                  "checks": {"precision_gate": {"passed": False, "split": "test", "reason": "abstains"}},
                  "seeds": {"n_seeds": 5, "passed": 1, "champion_seed": 0, "ensemble": True}}
    assert verdict_lines(evaluation)[1] == "seeds: 1 of 5 pass; the candidate is the 5-seed ensemble"
    evaluation["seeds"]["ensemble"] = False
    assert verdict_lines(evaluation)[1] == "seeds: 1 of 5 pass; the candidate is seed 0's model"
    evaluation["seeds"] = {"n_seeds": 1, "passed": 0, "champion_seed": 42, "ensemble": False}
    assert not any(line.startswith("seeds:") for line in verdict_lines(evaluation))  # one seed: nothing to add
