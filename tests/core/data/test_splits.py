"""Feature table, chronological splits, purge, train-only scaler and zero-copy windows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from patx_core.settings.config import WARMUP_ROWS, DataConfig, LabelConfig, SplitConfig
from patx_core.data.splits import (SplitDataset, build_feature_table, sequence_count, split_dataset,
                               split_sizes)
from patx_core.data.features import FEATURE_COLUMNS, RELATIVE_FEATURE_COLUMNS
from patx_core.data.contract import RawDataError, required_rows
from tests.conftest import make_candles

LABELS = LabelConfig()
SEED_DATA = DataConfig()


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return make_candles(1200, seed=7)


@pytest.fixture(scope="module")
def table(raw: pl.DataFrame) -> pl.DataFrame:
    return build_feature_table(raw, SEED_DATA, LABELS)


@pytest.fixture(scope="module")
def baseline(table: pl.DataFrame) -> SplitDataset:
    return split_dataset(table, SplitConfig(), LABELS, SEED_DATA)


def test_feature_table_layout(raw: pl.DataFrame, table: pl.DataFrame) -> None:
    assert table.columns == ["timestamp", "entry_price", *FEATURE_COLUMNS, "label", "exit_index",
                             "exit_price", "trade_return", "holding", "exit_reason"]
    assert table.height == raw.height
    assert table.schema["label"] == pl.Int8 and table.schema["exit_index"] == pl.Int64
    assert table.schema["exit_reason"] == pl.Int8 and table.schema["holding"] == pl.Int64
    assert table.get_column("entry_price").equals(raw.get_column("close"), check_names=False)
    label = table.get_column("label")
    # unknown labels: ATR warm-up (rows 0..13) and the last `horizon` rows; outcomes null with them
    assert label.is_null().arg_true().to_list() == [*range(14), *range(raw.height - LABELS.horizon, raw.height)]
    for col in ("exit_index", "exit_price", "trade_return", "holding", "exit_reason"):
        assert table.get_column(col).is_null().equals(label.is_null())
    # exit_index is an absolute row of this table; the exit price is consistent with it
    known = table.filter(label.is_not_null())
    rows = known.get_column("exit_index").to_numpy()
    assert ((rows - label.is_not_null().arg_true().to_numpy()) == known.get_column("holding").to_numpy()).all()
    np.testing.assert_allclose(known.get_column("trade_return"),
                               known.get_column("exit_price") / known.get_column("entry_price") - 1)


def test_relative_table_uses_the_relative_columns(raw: pl.DataFrame, table: pl.DataFrame) -> None:
    rel = build_feature_table(raw, DataConfig(feature_set="relative"), LABELS)
    assert rel.columns[2:16] == list(RELATIVE_FEATURE_COLUMNS)
    assert rel.get_column("label").equals(table.get_column("label"))  # labels use the raw ATR


def test_all_one_class_labels_are_refused(raw: pl.DataFrame) -> None:
    with pytest.raises(RawDataError) as info:
        build_feature_table(raw, SEED_DATA, LabelConfig(take_profit=100.0))
    message = str(info.value)
    n = raw.height - WARMUP_ROWS - LABELS.horizon
    assert f"labels are all one class: 0 positive (take-profit first) and {n} negative" in message
    assert "labels.take_profit / labels.stop_loss / labels.horizon" in message


def test_seed_preset_split_counts_on_7261_processed_rows() -> None:
    raw = make_candles(7261 + WARMUP_ROWS + LABELS.horizon, seed=9)
    ds = split_dataset(build_feature_table(raw, SEED_DATA, LABELS), SplitConfig.seed(), LABELS, SEED_DATA)
    assert ds.frame.height == 7261
    assert ds.bounds == {"train": (0, 5808), "val": (5808, 7261)}
    windows = ds.to_windows()
    assert windows.n_sequences("train") == 5808 - 63 - 10 and windows.n_sequences("val") == 1453


def test_split_sizes_rule() -> None:
    assert split_sizes(7261, SplitConfig.seed()) == {"train": 5808, "val": 1453}
    assert split_sizes(4822, SplitConfig()) == {"train": 3375, "val": 723, "test": 724}
    assert split_sizes(100, SplitConfig(0.71, 0.29, 0.0)) == {"train": 71, "val": 29}
    for n in (97, 1000, 4821):
        assert sum(split_sizes(n, SplitConfig()).values()) == n


def test_sequence_count_formula() -> None:
    assert sequence_count(5808, 64, 10, first=True, last=False) == 5808 - 63 - 10
    assert sequence_count(723, 64, 10, first=False, last=False) == 713
    assert sequence_count(724, 64, 10, first=False, last=True) == 724
    assert sequence_count(70, 64, 10, first=True, last=False) == 0


@pytest.mark.parametrize("split", [SplitConfig(), SplitConfig.seed()], ids=["baseline", "seed"])
def test_sequence_count_matches_the_built_windows(table: pl.DataFrame, split: SplitConfig) -> None:
    ds = split_dataset(table, split, LABELS, SEED_DATA)
    windows = ds.to_windows()
    names = split.names
    for i, name in enumerate(names):
        lo, hi = ds.bounds[name]
        expected = sequence_count(hi - lo, 64, LABELS.horizon, first=i == 0, last=i == len(names) - 1)
        assert windows.n_sequences(name) == expected == ds.sample_rows(name).size


def test_purge_keeps_every_label_horizon_inside_its_split(baseline: SplitDataset) -> None:
    split_of_row = baseline.frame.get_column("split").to_numpy()
    h = LABELS.horizon
    for name in ("train", "val"):  # the splits followed by another
        rows = baseline.sample_rows(name)
        lo, hi = baseline.bounds[name]
        assert rows.max() == hi - 1 - h  # exactly `horizon` rows purged, not more
        horizon_rows = rows[:, None] + np.arange(1, h + 1)
        assert (split_of_row[horizon_rows] == name).all()
        # and the recorded exits (table rows; frame row i is table row WARMUP_ROWS + i) stay inside
        exits = baseline.frame.get_column("exit_index").to_numpy()[rows]
        assert (exits - WARMUP_ROWS < hi).all()
    assert baseline.sample_rows("test").max() == baseline.frame.height - 1  # the last split is not purged


def test_train_samples_have_a_full_train_window_and_val_looks_back(baseline: SplitDataset) -> None:
    w = SEED_DATA.window_size
    assert baseline.sample_rows("train")[0] == w - 1
    assert baseline.sample_rows("val")[0] == baseline.bounds["val"][0]  # history from train rows
    assert baseline.frame.get_column("is_sample").sum() == sum(baseline.sample_rows(s).size for s in baseline.splits)


def test_scaler_is_fitted_on_train_rows_only(table: pl.DataFrame, baseline: SplitDataset) -> None:
    lo, hi = baseline.bounds["train"]
    train_values = baseline.frame.select(FEATURE_COLUMNS).to_numpy()[lo:hi]
    np.testing.assert_allclose(baseline.scaler.mean, train_values.mean(axis=0))
    np.testing.assert_allclose(baseline.scaler.std, train_values.std(axis=0, ddof=0))

    first_val_table_row = WARMUP_ROWS + baseline.bounds["val"][0]
    later = pl.int_range(pl.len()) >= first_val_table_row
    shocked = table.with_columns(pl.when(later).then(pl.col(c) * 10).otherwise(pl.col(c)).alias(c)
                                 for c in FEATURE_COLUMNS)
    after = split_dataset(shocked, SplitConfig(), LABELS, SEED_DATA)
    # exact: the same rows through the same code in this process; any later row reaching the fit would show
    np.testing.assert_array_equal(after.scaler.mean, baseline.scaler.mean)
    np.testing.assert_array_equal(after.scaler.std, baseline.scaler.std)
    np.testing.assert_array_equal(after.matrix[:hi], baseline.matrix[:hi])

    train_row = pl.int_range(pl.len()) == WARMUP_ROWS + 5
    nudged = table.with_columns(pl.when(train_row).then(pl.col("close") * 10).otherwise(pl.col("close")).alias("close"))
    assert not np.array_equal(split_dataset(nudged, SplitConfig(), LABELS, SEED_DATA).scaler.mean,
                              baseline.scaler.mean)


def test_windows_are_views_of_the_normalized_matrix(baseline: SplitDataset) -> None:
    windows = baseline.to_windows()
    assert windows.matrix is baseline.matrix
    assert baseline.matrix.dtype == np.float32 and baseline.matrix.flags.c_contiguous
    assert baseline.matrix.shape == (baseline.frame.height, 14)
    view = windows.all_windows()
    assert np.shares_memory(view, baseline.matrix)
    w = SEED_DATA.window_size
    t = int(baseline.sample_rows("val")[3])
    np.testing.assert_array_equal(view[t - w + 1], baseline.matrix[t - w + 1:t + 1])
    np.testing.assert_array_equal(windows.split_labels("val"),
                                  baseline.frame.get_column("label").to_numpy()[baseline.sample_rows("val")])


def test_window_longer_than_the_data_names_the_field(table: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"data.window_size=2000 is longer than the \d+ processed rows"):
        split_dataset(table, SplitConfig(), LABELS, DataConfig(window_size=2000))
    with pytest.raises(ValueError, match=r"split 'train' has 0 samples.*data.window_size"):
        split_dataset(table, SplitConfig(), LABELS, DataConfig(window_size=900))


def test_split_without_samples_names_the_field(table: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"split 'val' has 0 samples.*labels.horizon=10 purged rows.*split.val"):
        split_dataset(table, SplitConfig(0.985, 0.01, 0.005), LABELS, SEED_DATA)


def test_required_rows_is_exactly_enough() -> None:
    for split in (SplitConfig(), SplitConfig.seed()):
        need = required_rows(SEED_DATA, LABELS, split)
        ds = split_dataset(build_feature_table(make_candles(need, seed=1), SEED_DATA, LABELS), split, LABELS, SEED_DATA)
        assert min(ds.sample_rows(s).size for s in split.names) == 1
        with pytest.raises(ValueError, match="has 0 samples"):
            split_dataset(build_feature_table(make_candles(need - 1, seed=1), SEED_DATA, LABELS), split, LABELS,
                          SEED_DATA)


def test_a_hole_in_the_processed_rows_is_refused(table: pl.DataFrame) -> None:
    holed = table.with_columns(pl.when(pl.int_range(pl.len()) == 600).then(None).otherwise(pl.col("rsi_14"))
                               .alias("rsi_14"))
    with pytest.raises(ValueError, match="processed rows are not contiguous: table row 599 is followed by row 601"):
        split_dataset(holed, SplitConfig(), LABELS, SEED_DATA)
