"""The selection gate (a pass priced for every model judged on one test window) and the looks ledger."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import binom

from patx_core.evaluation.looks import Look, counted_looks, read_looks, record_looks, seed_identity
from patx_core.evaluation.selection import selection_gate, selection_summary

T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
#: p-values are one betainc evaluation against scipy's binom.sf: equal up to float rounding.
P_RTOL = 1e-9


@pytest.mark.parametrize("n", [1, 7, 30, 62, 200, 750])
@pytest.mark.parametrize("looks", [1, 2, 12, 50])
def test_selection_gate_equals_the_bonferroni_adjusted_binomial_tail(n: int, looks: int) -> None:
    for hits in sorted({0, 1, n // 2, int(0.7 * n), int(0.8 * n), n - 1, n}):
        if not 0 <= hits <= n:
            continue
        block = selection_gate(hits, n, looks, target=0.7, min_confidence=0.5)
        p = binom.sf(hits - 1, n, 0.7)  # P(X >= hits)
        adjusted = min(1.0, looks * p)
        assert block["p_value"] == pytest.approx(p, rel=P_RTOL, abs=1e-300)
        assert block["adjusted_p_value"] == pytest.approx(adjusted, rel=P_RTOL, abs=1e-300)
        assert block["confidence"] == pytest.approx(1.0 - adjusted, rel=P_RTOL, abs=1e-12)
        assert block["n_looks"] == looks and block["min_confidence"] == 0.5
        assert block["passed"] is bool(n > 0 and 1.0 - adjusted >= 0.5), (hits, n, looks, block)


def test_the_bar_is_inclusive_at_min_confidence_and_more_looks_ask_for_more() -> None:
    at = selection_gate(46, 62, 3, target=0.7, min_confidence=0.5)
    exact = at["confidence"]
    assert selection_gate(46, 62, 3, target=0.7, min_confidence=exact)["passed"] is True
    assert selection_gate(46, 62, 3, target=0.7, min_confidence=float(np.nextafter(exact, 1.0)))["passed"] is False
    # 46 / 62 = 0.74 passes alone; 12 models judged on the window leave no confidence
    alone, twelve = selection_gate(46, 62, 1, target=0.7, min_confidence=0.5), \
        selection_gate(46, 62, 12, target=0.7, min_confidence=0.5)
    assert alone["passed"] and not twelve["passed"]
    assert twelve["reason"].startswith("test precision 0.74 on 62 signals would pass alone, but 12 models were "
                                       "judged on this test window: confidence ")
    assert "< 0.5" in twelve["reason"]


def test_one_look_at_min_confidence_one_half_is_the_literal_precision_above_target() -> None:
    # at the binomial median: exactly 35 / 50 (= the target) fails, 36 / 50 passes, as "precision > 0.7" does
    assert not selection_gate(35, 50, 1, target=0.7, min_confidence=0.5)["passed"]
    assert selection_gate(36, 50, 1, target=0.7, min_confidence=0.5)["passed"]
    assert not selection_gate(0, 0, 1, target=0.7, min_confidence=0.5)["passed"], "no signals never pass"


def test_selection_gate_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="n_looks must be >= 1"):
        selection_gate(3, 5, 0, target=0.7, min_confidence=0.5)
    with pytest.raises(ValueError, match=r"hits must be in \[0, n_signals=5\]"):
        selection_gate(6, 5, 1, target=0.7, min_confidence=0.5)


def test_selection_summary_names_looks_and_confidence() -> None:
    block = selection_gate(46, 62, 12, target=0.7, min_confidence=0.5)
    assert selection_summary(block) == "selection gate FAILED: 12 looks, confidence 0.00 < 0.5"
    assert selection_summary(selection_gate(46, 62, 1, target=0.7, min_confidence=0.5)) == \
        "selection gate PASSED: 1 look, confidence 0.72 >= 0.5"


# ------------------------------------------------------------------------------ the looks ledger

def _window(start: int, n: int) -> pl.Series:
    return pl.Series("timestamp", [T0 + timedelta(days=start + i) for i in range(n)], dtype=pl.Datetime("us", "UTC"))


def _look(sha: str, window: pl.Series, *, variant: str = "v", eligible: bool = True, minute: int = 0) -> Look:
    return Look(dataset="d", variant=variant, checkpoint_sha256=sha, gate_split="test",
                window_start=window.min(), window_end=window.max(), n_signals=40, hits=30, eligible=eligible,
                judged_at=T0 + timedelta(days=1000, minutes=minute))


def test_a_window_moved_on_by_more_than_half_is_a_fresh_test(tmp_path: Path) -> None:
    path, lock = tmp_path / "looks.parquet", tmp_path / "looks.lock"
    old = _window(0, 100)
    record_looks(path, lock, [_look("a", old), _look("b", old, minute=1)])
    # a nightly retrain on a window that moved by 10 candles still counts both earlier models
    assert counted_looks(record_looks(path, lock, [_look("c", _window(10, 100), minute=2)]),
                         _window(10, 100)).height == 3
    # exactly half of this window's candles inside an earlier window: counted (the bar is >= half)
    assert counted_looks(read_looks(path), _window(50, 100))["checkpoint_sha256"].to_list() == ["a", "b", "c"]
    # 51 candles past the old window's end: only 49 of 100 overlap a and b, 59 overlap c
    ledger = record_looks(path, lock, [_look("e", _window(51, 100), minute=3)])
    assert counted_looks(ledger, _window(51, 100))["checkpoint_sha256"].to_list() == ["c", "e"]
    # moved on by more than half of everything: only itself
    ledger = record_looks(path, lock, [_look("f", _window(200, 100), minute=4)])
    assert counted_looks(ledger, _window(200, 100))["checkpoint_sha256"].to_list() == ["f"]


def test_the_same_model_on_the_same_window_is_one_row_and_diagnostics_never_count(tmp_path: Path) -> None:
    path, lock = tmp_path / "looks.parquet", tmp_path / "looks.lock"
    w = _window(0, 60)
    record_looks(path, lock, [_look("a", w)])
    ledger = record_looks(path, lock, [_look("a", w, minute=9)])  # re-evaluating the same checkpoint
    assert ledger.height == 1 and ledger["judged_at"].to_list() == [T0 + timedelta(days=1000)]
    seeds = [_look(seed_identity("a", s), w, eligible=False) for s in (1, 2)]
    ledger = record_looks(path, lock, seeds)
    assert ledger.height == 3 and ledger["eligible"].to_list() == [True, False, False]
    assert counted_looks(ledger, w)["checkpoint_sha256"].to_list() == ["a"]
    # the same model judged again on a grown window is a new row but still one model
    ledger = record_looks(path, lock, [_look("a", _window(0, 61), minute=10)])
    assert ledger.height == 4 and counted_looks(ledger, w).height == 1
    assert read_looks(path).equals(ledger)
    assert seed_identity("a", 1) != seed_identity("a", 2) != seed_identity("b", 1)


def _append_many(args: tuple[str, str, str, int]) -> None:
    path, lock, tag, n = args
    w = _window(0, 30)
    for i in range(n):
        record_looks(path, lock, [_look(f"{tag}{i}", w, variant=tag, minute=i)])


def test_two_processes_evaluating_one_dataset_at_once_both_land(tmp_path: Path) -> None:
    path, lock = str(tmp_path / "looks.parquet"), str(tmp_path / "looks.lock")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_append_many, [(path, lock, "x", 25), (path, lock, "y", 25)])
    ledger = read_looks(path)
    assert ledger.height == 50, "a row written by one process was lost to the other's rewrite"
    assert sorted(ledger["checkpoint_sha256"].to_list()) == sorted([f"x{i}" for i in range(25)] +
                                                                   [f"y{i}" for i in range(25)])
