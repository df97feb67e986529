"""Many symbols in one dataset: the semantic rules of patx_core.data.splits and patx_core.data.universe.

Each test names one rule and builds the case that breaks it: windows and label horizons that
would cross from one symbol into the next, splits that would cut each symbol at its own row
fractions instead of shared calendar dates, a purge applied to the pooled rows only, a scaler
fitted on the wrong rows, a short symbol that would stop the whole dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pandera.errors import SchemaErrors

from patx_core import pipeline
from patx_core.settings.config import DataConfig, LabelConfig, SplitConfig
from patx_core.data.splits import build_feature_table, split_dataset
from patx_core.data.scaler import Scaler
from patx_core.data.universe import SYMBOL, UNIVERSE_PRICES_SCHEMA, validate_symbols
from patx_core.data.contract import RawDataError, validate_raw
from patx_core.settings.variants import get_variant
from tests.cells import make_cell
from tests.conftest import make_candles
from tests.synthetic import planted_candles

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
LABELS = LabelConfig()
DATA = DataConfig(window_size=32)


def _universe(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    parts = {s: [(f, f"{s}.parquet")] for s, f in frames.items()}
    return validate_symbols(parts).frame


def _shifted(frame: pl.DataFrame, days: int) -> pl.DataFrame:
    return frame.with_columns(pl.col("timestamp") + pl.duration(days=days))


@pytest.fixture(scope="module")
def ragged() -> pl.DataFrame:
    """Three symbols on different calendars: B starts 300 days after A, C 600 days after A and shorter."""
    return _universe({"A": make_candles(1500, seed=1), "B": _shifted(make_candles(1400, seed=2, start_price=30.0), 300),
                      "C": _shifted(make_candles(1000, seed=3, start_price=5.0), 600)})


def test_labels_and_indicators_are_computed_per_symbol(ragged):
    table = build_feature_table(ragged, DATA, LABELS)
    for symbol in ("A", "B", "C"):
        alone = build_feature_table(ragged.filter(pl.col(SYMBOL) == symbol).drop(SYMBOL), DATA, LABELS)
        inside = table.filter(pl.col(SYMBOL) == symbol).drop(SYMBOL)
        # exact: the same candles through the same per-symbol code in this process
        assert inside.equals(alone), f"{symbol}: features or labels changed by the symbols around it"
        # the last `horizon` candles of every symbol have no label: their horizon would need the next symbol
        assert inside["label"].tail(LABELS.horizon).null_count() == LABELS.horizon


def test_no_window_crosses_from_one_symbol_into_another(ragged):
    ds = split_dataset(build_feature_table(ragged, DATA, LABELS), SplitConfig(), LABELS, DATA)
    windows = ds.to_windows()
    symbols = ds.frame[SYMBOL].to_numpy()
    for split, ends in windows.ends.items():
        starts = ends - (DATA.window_size - 1)
        crossing = symbols[starts] != symbols[ends]
        assert not crossing.any(), f"{split}: {int(crossing.sum())} windows start in another symbol"
    # every symbol's first window-1 processed rows are history only, whatever their split
    first_rows = ds.frame.with_row_index().group_by(SYMBOL).agg(pl.col("index").min())["index"].to_numpy()
    for row in first_rows:
        assert not ds.frame["is_sample"][int(row): int(row) + DATA.window_size - 1].any()


def test_splits_cut_every_symbol_at_the_same_calendar_dates(ragged):
    ds = split_dataset(build_feature_table(ragged, DATA, LABELS), SplitConfig(), LABELS, DATA)
    (_, train_end), (val_start, val_end), (test_start, test_end) = (ds.cutoffs[s] for s in ("train", "val", "test"))
    assert train_end == val_start and val_end == test_start and test_end is None
    per_symbol = ds.frame.group_by(SYMBOL, "split").agg(pl.col("timestamp").min().alias("lo"),
                                                         pl.col("timestamp").max().alias("hi"))
    for row in per_symbol.iter_rows(named=True):
        start, end = ds.cutoffs[row["split"]]
        assert row["lo"] >= start and (end is None or row["hi"] < end), row
    # one stretch of calendar time: every symbol's test period starts on the shared cutoff day
    test_starts = per_symbol.filter(pl.col("split") == "test")["lo"].unique()
    assert test_starts.to_list() == [test_start]
    # C starts 600 days late and ends early: its rows still fall on the shared dates of every split
    assert set(per_symbol.filter(pl.col(SYMBOL) == "C")["split"]) == {"train", "val", "test"}


def test_purge_applies_per_symbol_at_each_cutoff(ragged):
    ds = split_dataset(build_feature_table(ragged, DATA, LABELS), SplitConfig(), LABELS, DATA)
    samples = ds.frame.filter(pl.col("is_sample"))
    for name, nxt in (("train", "val"), ("val", "test")):
        rows = samples.filter(pl.col("split") == name)
        assert (rows["label_end"] < ds.cutoffs[nxt][0]).all(), f"a {name} label sees {nxt} prices"
        # and the purge bites in every symbol that crosses the cutoff, not only in the pooled rows
        for symbol in rows[SYMBOL].unique().to_list():
            sym = ds.frame.filter((pl.col(SYMBOL) == symbol) & (pl.col("split") == name))
            crosses = ds.frame.filter((pl.col(SYMBOL) == symbol) & (pl.col("split") == nxt)).height > 0
            if crosses:
                assert not sym["is_sample"].tail(LABELS.horizon).any(), f"{symbol}: last {name} rows not purged"


def test_scaler_is_per_symbol_for_price_levels_and_pooled_for_scale_free_features(ragged):
    seed = split_dataset(build_feature_table(ragged, DATA, LABELS), SplitConfig(), LABELS, DATA)
    assert not seed.scaler.is_pooled
    for symbol, scaler in seed.scaler.per_symbol.items():
        train = seed.frame.filter((pl.col(SYMBOL) == symbol) & (pl.col("split") == "train"))
        expected = Scaler.fit(train.select(seed.feature_columns).to_numpy(), seed.feature_columns)
        np.testing.assert_allclose(scaler.mean, expected.mean)
        np.testing.assert_allclose(scaler.std, expected.std)
    relative_data = DataConfig(feature_set="relative", window_size=32)
    rel = split_dataset(build_feature_table(ragged, relative_data, LABELS), SplitConfig(), LABELS, relative_data)
    assert rel.scaler.is_pooled
    train = rel.frame.filter(pl.col("split") == "train").select(rel.feature_columns).to_numpy()
    np.testing.assert_allclose(rel.scaler.mean, train.mean(axis=0))


def test_a_symbol_without_train_rows_is_left_out_of_per_symbol_scaling_with_a_reason(caplog):
    late = _universe({"A": make_candles(1500, seed=1), "B": make_candles(1500, seed=2),
                      "LATE": _shifted(make_candles(400, seed=3), 1100)})
    with caplog.at_level(logging.WARNING, logger="patx_core.data.splits"):
        ds = split_dataset(build_feature_table(late, DATA, LABELS), SplitConfig(), LABELS, DATA)
    assert "LATE" in ds.skipped and "no train rows" in ds.skipped["LATE"]
    assert "LATE" not in ds.frame[SYMBOL].to_list() and "LATE" in caplog.text


def test_short_symbols_are_skipped_with_a_reason_and_only_an_empty_universe_is_refused(caplog):
    need = 600
    parts = {"LONG": [(make_candles(900, seed=1), "long.parquet")],
             "SHORT": [(make_candles(300, seed=2), "short.parquet")]}
    with caplog.at_level(logging.WARNING, logger="patx_core.data.universe"):
        universe = validate_symbols(parts, min_rows=need, min_rows_for="variant 'x'")
    assert universe.symbols == ["LONG"]
    assert "300 rows" in universe.skipped["SHORT"] and "SHORT" in caplog.text
    with pytest.raises(RawDataError) as err:
        validate_symbols({"SHORT": parts["SHORT"]}, min_rows=need)
    assert "enough rows" in str(err.value) and "300" in str(err.value) and "SHORT" in str(err.value)


def test_a_bad_symbol_is_named_in_the_message():
    bad = make_candles(400, seed=2).with_columns(
        pl.when(pl.int_range(pl.len()) == 17).then(-1.0).otherwise(pl.col("low")).alias("low"))
    with pytest.raises(RawDataError) as err:
        validate_symbols({"GOOD": [(make_candles(400, seed=1), "good.parquet")], "BAD": [(bad, "bad.parquet")]})
    message = str(err.value)
    assert "symbol 'BAD' (bad.parquet)" in message and "'low'" in message and "row 17" in message
    assert "GOOD" not in message


def _failed_checks(frame: pl.DataFrame) -> set[tuple[str, int]]:
    with pytest.raises(SchemaErrors) as err:
        UNIVERSE_PRICES_SCHEMA.validate(frame, lazy=True)
    cases = err.value.failure_cases.drop_nulls("index")
    return {(str(c), int(i)) for c, i in cases.select("check", "index").iter_rows()}


def test_the_universe_schema_holds_the_raw_rules_within_each_symbol():
    """Time restarts at each new symbol and two symbols share timestamps; within one symbol the
    single-series rules hold: a step back in time, a repeated timestamp, a price <= 0."""
    frame = _universe({"A": make_candles(50, seed=1), "B": make_candles(50, seed=2)})
    UNIVERSE_PRICES_SCHEMA.validate(frame)  # B's first row is 49 days before A's last
    step_back = pl.concat([frame[:60], frame[61:62], frame[60:61], frame[62:]])  # rows 60, 61 of B swapped
    assert _failed_checks(step_back) == {("timestamps in ascending order", 61)}
    repeated = frame.with_columns(pl.when(pl.int_range(pl.len()) == 70).then(pl.col("timestamp").shift(1))
                                  .otherwise(pl.col("timestamp")).alias("timestamp"))
    assert {c for c, _ in _failed_checks(repeated)} == {"multiple_fields_uniqueness"}
    negative = frame.with_columns(pl.when(pl.int_range(pl.len()) == 75).then(-1.0).otherwise(pl.col("low")).alias("low"))
    assert _failed_checks(negative) == {("greater_than(0)", 75)}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# How close "the same numbers" are on another CPU. The fixture was recorded on one machine;
# numpy and polars sum float64 in a SIMD-width-dependent order, so a reduction over ~700 rows
# moves in its last bits (seen: 2e-14 relative, AVX-512 against AVX2). rtol 1e-12 leaves a 50x
# margin and is still a million times tighter than one train row more or less (~1e-3 on a mean).
SCALER_RTOL = 1e-12
# The window matrix is float32: a scaler bit that moved can flip an entry's last float32 bit
# (6e-8 relative); a row's weighted sum of 14 such entries (|value| < ~10) moves by < 1e-6.
MATRIX_RTOL, MATRIX_ATOL = 1e-6, 1e-5


@pytest.mark.parametrize("with_symbol", [False, True], ids=["no-symbol-column", "one-symbol"])
def test_a_single_symbol_dataset_gives_exactly_the_numbers_of_a_single_series(with_symbol):
    """The fixture holds the data path's numbers as computed by the single-series code before
    datasets existed (row arithmetic per split); one symbol must reproduce them. What is exact
    (bounds, sample counts, the windows' end rows, the 0/1 labels) is compared bit for bit; the
    float statistics and the z-scored matrix (as one weighted sum per row, which moves if any
    entry or column order does) within the tolerances above, so the test passes on any CPU."""
    golden = json.loads((FIXTURES / "single_symbol_golden.json").read_text())
    raw = validate_raw(planted_candles(1200, seed=5))
    if with_symbol:
        raw = raw.select(pl.lit("X").alias(SYMBOL), pl.all())
    for key, expected in golden.items():
        feature_set, preset = key.split("-")
        split = SplitConfig.seed() if preset == "seed" else SplitConfig()
        data = DataConfig(feature_set=feature_set, window_size=32)
        ds = split_dataset(build_feature_table(raw, data, LABELS), split, LABELS, data)
        w = ds.to_windows()
        assert {k: list(v) for k, v in ds.bounds.items()} == expected["bounds"], key
        assert {s: int(w.ends[s].size) for s in w.ends} == expected["samples"], key
        assert {s: _sha(w.ends[s]) for s in w.ends} == expected["ends_sha256"], key  # int64 rows
        # 0/1/NaN as int8 (-1: no label): a NaN's bit pattern is not the same on every CPU
        assert _sha(np.nan_to_num(w.labels, nan=-1).astype(np.int8)) == expected["labels_int8_sha256"], key
        assert list(w.matrix.shape) == expected["matrix_shape"], key
        weights = 1.0 + np.arange(w.matrix.shape[1]) / w.matrix.shape[1]  # distinct: a column swap shows
        np.testing.assert_allclose(w.matrix.astype(np.float64) @ weights, expected["matrix_row_projection"],
                                   rtol=MATRIX_RTOL, atol=MATRIX_ATOL, err_msg=key)
        np.testing.assert_allclose(w.matrix.astype(np.float64).mean(axis=0), expected["matrix_column_mean"],
                                   rtol=MATRIX_RTOL, atol=MATRIX_ATOL, err_msg=key)
        np.testing.assert_allclose(ds.scaler.mean, expected["scaler_mean"], rtol=SCALER_RTOL, atol=0, err_msg=key)
        np.testing.assert_allclose(ds.scaler.std, expected["scaler_std"], rtol=SCALER_RTOL, atol=0, err_msg=key)
        assert ds.scaler.to_dict().keys() == {"mean", "std", "feature_columns"}  # the guide's scaler.pkl


def _run_cell(cell):
    table = pipeline.build_features(pipeline.load_raw_prices(cell).value, cell).value
    frame = pipeline.build_splits(table, cell).value
    pipeline.build_windows(frame, cell)
    pipeline.train_model(cell)
    return pipeline.evaluate_model(table, frame, cell).value


def test_a_ragged_universe_runs_end_to_end(tmp_path):
    frames = {"A": make_candles(1500, seed=1), "B": _shifted(make_candles(1200, seed=2, start_price=30.0), 400),
              "C": _shifted(make_candles(900, seed=3, start_price=5.0), 700)}
    variant = get_variant("smoke")
    variant = dataclasses.replace(variant, train=dataclasses.replace(variant.train, max_epochs=1))
    cell = make_cell(tmp_path, frames, variant)
    ev = _run_cell(cell)
    assert ev["dataset"]["symbols"] == ["A", "B", "C"]
    per_symbol = ev["per_symbol"]["symbols"]
    assert set(per_symbol) == {"A", "B", "C"}
    assert sum(m["samples"] for m in per_symbol.values()) == ev["metrics"]["test"]["n_samples"]
    assert set(ev["backtest"]["per_symbol"]) == {"A", "B", "C"} and ev["backtest"]["portfolio"] == "equal-weight"


@pytest.mark.slow
def test_a_pattern_too_thin_for_any_one_symbol_passes_the_gate_pooled(tmp_path):
    """20 symbols, each with a handful of planted events in its test period: no symbol alone has
    the positives to reach min_signals at precision > 0.7, but one model trained on the pooled
    windows passes the gate on the pooled test period."""
    frames = {f"S{i:02d}": planted_candles(900, seed=100 + i, every=40) for i in range(20)}
    cell = make_cell(tmp_path, frames, "relative_smoke")
    ev = _run_cell(cell)
    gate = ev["checks"]["precision_gate"]
    min_signals = cell.variant.eval.min_signals
    test_start = ev["splits"]["test"]["start"]
    for symbol, frame in frames.items():
        # a planted event is a candle whose low sits 5 % under its close (tests/synthetic.py)
        events = frame.filter((pl.col("timestamp") >= pl.lit(test_start).str.to_datetime(time_zone="UTC"))
                              & (pl.col("low") <= 0.951 * pl.col("close"))).height
        assert 0 < events < min_signals, f"{symbol} has {events} planted events in test"
        assert ev["per_symbol"]["symbols"][symbol]["signals"] < min_signals
    assert gate["passed"], gate["reason"]
    assert gate["n_signals"] >= min_signals


def test_a_symbol_that_ends_before_the_test_period_is_listed_untested_with_its_reason(tmp_path):
    # B's candles stop ~1.5 years before the shared test cutoff (about 85 % into A's calendar).
    frames = {"A": make_candles(1500, seed=1), "B": make_candles(700, seed=2, start_price=30.0)}
    variant = get_variant("smoke")
    variant = dataclasses.replace(variant, train=dataclasses.replace(variant.train, max_epochs=1))
    cell = make_cell(tmp_path, frames, variant)
    ev = _run_cell(cell)
    assert ev["dataset"]["symbols"] == ["A", "B"]
    assert list(ev["per_symbol"]["symbols"]) == ["A"]
    b_last = frames["B"]["timestamp"][-1].isoformat()
    test_start = ev["splits"]["test"]["start"]
    assert ev["per_symbol"]["untested"] == {"B": {
        "first_timestamp": frames["B"]["timestamp"][0].isoformat(), "last_timestamp": b_last,
        "reason": f"its last candle ({b_last[:10]}) is before the test split starts ({test_start[:10]})"}}
    md = cell.paths.report_md.read_text().splitlines()
    assert md[2].startswith("**Tested on 1 of 2 symbols** (A): "), md[:4]
    assert f"B: its last candle ({b_last[:10]}) is before the test split starts" in md[2]
    table = md[md.index("## Per symbol — test split"):]
    assert table[4].startswith("| A | ") and table[5].startswith("| B | 0 | — | not tested: its last candle")


def test_calendar_cutoffs_cut_the_distinct_calendar_not_the_pooled_rows(ragged):
    """Symbols overlap on most days: the pooled rows repeat a day once per symbol that has it, so
    cutting them would put the cutoffs where the symbols are many, not at the split fractions of time."""
    from patx_core.data.contract import split_sizes

    split = SplitConfig()
    ds = split_dataset(build_feature_table(ragged, DATA, LABELS), split, LABELS, DATA)
    calendar = ds.frame["timestamp"].unique().sort()
    assert calendar.len() < ds.frame.height  # the pooled rows do repeat days
    sizes = split_sizes(calendar.len(), split)
    assert (calendar < ds.cutoffs["val"][0]).sum() == sizes["train"]
    assert (calendar < ds.cutoffs["test"][0]).sum() == sizes["train"] + sizes["val"]


def test_each_symbols_random_entry_baseline_draws_its_own_entries():
    """Two symbols with identical samples trade identically, but their random-entry baselines are
    independent draws; the first keeps the configured seed (a single series is unchanged)."""
    from patx_core.evaluation.backtest import backtest
    from patx_core.evaluation.record import SplitPredictions, symbol_backtests
    from patx_core.settings.config import BacktestConfig

    rng = np.random.default_rng(5)
    n = 600
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    ts = make_candles(n)["timestamp"]
    entry = np.arange(n - 12)
    holding = rng.integers(1, 11, entry.size)
    one = pl.DataFrame({"timestamp": ts.gather(entry), "exit_index": entry + holding, "holding": holding,
                        "trade_return": close[entry + holding] / close[entry] - 1,
                        "label": (rng.random(entry.size) < 0.3).astype(np.int8)})
    prices = pl.DataFrame({"timestamp": ts, "entry_price": close})
    both = ("A", "B")
    samples = pl.concat([one.select(pl.lit(s).alias(SYMBOL), pl.all()) for s in both])
    long_prices = pl.concat([prices.select(pl.lit(s).alias(SYMBOL), pl.all()) for s in both])
    signal = rng.random(one.height) < 0.05
    config = BacktestConfig(n_random=200, seed=11)
    out = symbol_backtests(SplitPredictions(samples=samples, prob=np.zeros(samples.height)), np.tile(signal, 2),
                           long_prices, config)
    assert out["A"].trades == out["B"].trades > 0 and out["A"].total_return == out["B"].total_return
    assert not np.array_equal(out["A"].random.returns, out["B"].random.returns), "one seed shared by two symbols"
    alone = backtest(one, signal, prices, config)
    # exact: one seed, the same inputs, in this process
    np.testing.assert_array_equal(out["A"].random.returns, alone.random.returns)


def test_the_input_digest_of_many_files_changes_when_a_file_is_renamed(tmp_path):
    from patx_core.data.universe import source_digest

    folder = tmp_path / "universe"
    folder.mkdir()
    make_candles(50, seed=1).write_parquet(folder / "AAA.parquet")
    make_candles(50, seed=2).write_parquet(folder / "BBB.parquet")
    before = source_digest(sorted(folder.glob("*.parquet")))
    (folder / "BBB.parquet").rename(folder / "CCC.parquet")  # same bytes, another symbol
    assert source_digest(sorted(folder.glob("*.parquet"))) != before
    (folder / "CCC.parquet").rename(folder / "BBB.parquet")
    assert source_digest(sorted(folder.glob("*.parquet"))) == before
