"""The raw contract: every bad input is refused with a message naming rule, column and rows."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pytest

from patx_core.settings.config import WARMUP_ROWS, DataConfig, LabelConfig, SplitConfig
from patx_core.data.contract import (RAW_COLUMNS, RawDataError, RawPricesSchema, read_raw_parquet,
                                  required_rows, validate_raw)
from tests.conftest import make_candles


@pytest.fixture
def raw() -> pl.DataFrame:
    return make_candles(40, seed=3)


def _set(df: pl.DataFrame, column: str, rows: list[int], value: object) -> pl.DataFrame:
    """``df`` with ``column`` set to ``value`` at ``rows`` (value may be an expression)."""
    hit = pl.int_range(pl.len()).is_in(rows)
    return df.with_columns(pl.when(hit).then(value).otherwise(pl.col(column)).alias(column))


def _ts(df: pl.DataFrame, row: int) -> str:
    return df.get_column("timestamp")[row].isoformat()


def _refused(df: pl.DataFrame, **kwargs: object) -> RawDataError:
    with pytest.raises(RawDataError) as info:
        validate_raw(df, **kwargs)  # type: ignore[arg-type]
    return info.value


# (case, corrupt the frame, rule words, column, offending rows)
ROW_RULES: list[tuple[str, Callable[[pl.DataFrame], pl.DataFrame], str, str, list[int]]] = [
    ("nan price", lambda d: _set(d, "close", [3, 9], float("nan")), "no null or NaN values", "close", [3, 9]),
    ("null price", lambda d: _set(d, "open", [5], None), "no null or NaN values", "open", [5]),
    ("nan volume", lambda d: _set(d, "volume", [7], float("nan")), "no null or NaN values", "volume", [7]),
    ("+inf price", lambda d: _set(d, "high", [4], float("inf")), "finite values", "high", [4]),
    ("-inf volume", lambda d: _set(d, "volume", [6], float("-inf")), "finite values", "volume", [6]),
    ("zero price", lambda d: _set(d, "low", [2], 0.0), "prices > 0", "low", [2]),
    ("negative price", lambda d: _set(d, "open", [8, 11], -1.0), "prices > 0", "open", [8, 11]),
    ("negative volume", lambda d: _set(d, "volume", [12], -5.0), "volume >= 0", "volume", [12]),
    ("high below low", lambda d: _set(d, "high", [10], pl.col("low") * 0.9), "high >= low", "high", [10]),
    ("high below close", lambda d: _set(d, "high", [13], pl.max_horizontal("open", "close") * 0.999
                                        ).pipe(_set, "low", [13], pl.col("low") * 0.9),
     "high >= max(open, close)", "high", [13]),
    ("low above open", lambda d: _set(d, "low", [14], pl.min_horizontal("open", "close") * 1.001
                                      ).pipe(_set, "high", [14], pl.col("high") * 1.1),
     "low <= min(open, close)", "low", [14]),
    ("unsorted timestamps", lambda d: _set(d, "timestamp", [15], pl.col("timestamp") - pl.duration(days=30)),
     "timestamps in ascending order", "timestamp", [15]),
    ("duplicate timestamps", lambda d: _set(d, "timestamp", [16], pl.col("timestamp").shift(1)),
     "unique timestamps", "timestamp", [15, 16]),
]


@pytest.mark.parametrize("case, corrupt, rule, column, rows", ROW_RULES, ids=[c[0] for c in ROW_RULES])
def test_row_rule_names_rule_column_and_rows(raw: pl.DataFrame, case: str, corrupt: Callable, rule: str,
                                             column: str, rows: list[int]) -> None:
    bad = corrupt(raw)
    err = _refused(bad)
    match = [v for v in err.violations if v.rule.startswith(rule)]
    assert match, f"{case}: expected rule {rule!r} in {err}"
    assert match[0].column == column and list(match[0].rows) == rows
    message = str(err)
    assert rule in message and f"column '{column}'" in message
    for r in rows:
        assert f"row {r} ({_ts(bad, r)})" in message


def test_null_timestamp_is_named(raw: pl.DataFrame) -> None:
    err = _refused(_set(raw, "timestamp", [4], None))
    assert "no null or NaN values" in str(err) and "column 'timestamp'" in str(err)
    assert "row 4 (timestamp null)" in str(err)


def test_at_most_five_rows_listed_but_all_counted(raw: pl.DataFrame) -> None:
    err = _refused(_set(raw, "close", list(range(2, 12)), -1.0))
    (v,) = err.violations
    assert v.count == 10 and v.rows == (2, 3, 4, 5, 6)
    assert "10 offending row(s) (first 5 shown)" in str(err) and "row 7 " not in str(err)


def test_missing_column_names_it_and_hints_at_case(raw: pl.DataFrame) -> None:
    err = _refused(raw.drop("volume").rename({"close": "Close"}))
    assert {v.column for v in err.violations} == {"close", "volume"}
    assert "rule 'required columns' failed for column 'volume'" in str(err)
    assert "['Close'] differs only in case" in str(err)


def test_prices_as_strings_are_a_dtype_error_showing_bad_values(raw: pl.DataFrame) -> None:
    bad = raw.with_columns(pl.col("open").cast(pl.String)).pipe(_set, "open", [3], pl.lit("n/a"))
    err = _refused(bad)
    assert "rule 'column dtype' failed for column 'open'" in str(err)
    assert "got String" in str(err) and "row 3: 'n/a'" in str(err)


def test_timestamp_as_string_is_a_dtype_error(raw: pl.DataFrame) -> None:
    err = _refused(raw.with_columns(pl.col("timestamp").dt.to_string()))
    assert "column 'timestamp'" in str(err) and "expected a datetime" in str(err)


def test_naive_timestamps_are_taken_as_utc_and_dtypes_normalized(raw: pl.DataFrame) -> None:
    naive = raw.with_columns(pl.col("timestamp").dt.replace_time_zone(None).dt.cast_time_unit("ns"),
                             pl.col("volume").round().cast(pl.Int64), extra=pl.lit(1))
    out = validate_raw(naive)
    assert out.columns == list(RAW_COLUMNS)
    assert out.schema["timestamp"] == pl.Datetime("us", "UTC") and out.schema["volume"] == pl.Float64
    assert out.get_column("timestamp").equals(raw.get_column("timestamp"))


def test_other_time_zones_are_converted_to_utc(raw: pl.DataFrame) -> None:
    ny = raw.with_columns(pl.col("timestamp").dt.convert_time_zone("America/New_York"))
    assert validate_raw(ny).get_column("timestamp").equals(raw.get_column("timestamp"))


def test_too_few_rows_says_how_many_are_needed(raw: pl.DataFrame) -> None:
    need = required_rows(DataConfig(), LabelConfig(), SplitConfig())
    err = _refused(raw, min_rows=need)
    assert f"has {raw.height} rows but at least {need} are needed" in str(err)
    assert f"{WARMUP_ROWS} rows of indicator warm-up" in str(err) and "every split" in str(err)
    assert validate_raw(make_candles(need), min_rows=need).height == need


def test_required_rows_grows_with_window_horizon_and_small_splits() -> None:
    base = required_rows(DataConfig(), LabelConfig(), SplitConfig())
    assert required_rows(DataConfig(window_size=128), LabelConfig(), SplitConfig()) > base
    assert required_rows(DataConfig(), LabelConfig(horizon=20), SplitConfig()) > base
    assert required_rows(DataConfig(), LabelConfig(), SplitConfig(0.9, 0.05, 0.05)) > base


def test_empty_frame_and_empty_file(raw: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    raw.head(0).write_parquet(path)
    with pytest.raises(RawDataError, match=r"empty.parquet: rule 'non-empty file' failed: the file has no rows"):
        read_raw_parquet(path)


@pytest.mark.parametrize("content", [b"timestamp,open\n2000-01-01,1\n", b""], ids=["csv", "zero-bytes"])
def test_non_parquet_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "prices.parquet"
    path.write_bytes(content)
    with pytest.raises(RawDataError, match=f"cannot read {path} as parquet: "):
        read_raw_parquet(path)


def test_truncated_parquet(raw: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prices.parquet"
    raw.write_parquet(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RawDataError, match=f"cannot read {path} as parquet: "):
        read_raw_parquet(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RawDataError, match="nope.parquet: rule 'file exists' failed"):
        read_raw_parquet(tmp_path / "nope.parquet")


def test_read_raw_parquet_names_the_file_in_rule_errors(raw: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "prices.parquet"
    _set(raw, "close", [5], -2.0).write_parquet(path)
    with pytest.raises(RawDataError, match=rf"{path}: rule 'prices > 0' failed for column 'close'.*row 5 "):
        read_raw_parquet(path)
    raw.write_parquet(path)
    assert read_raw_parquet(path).equals(raw)


def test_schema_is_usable_on_its_own(raw: pl.DataFrame) -> None:
    RawPricesSchema.validate(raw)
    with pytest.raises(Exception):
        RawPricesSchema.validate(_set(raw, "close", [1], np.inf), lazy=True)
