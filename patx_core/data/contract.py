"""The raw candle contract: read a parquet file, normalize it, refuse anything malformed.

A nightly retrain runs unattended on whatever the data feed delivered, so every rule here
fails with a message a user can act on: the rule, the column and up to five offending rows
(row index and timestamp). Three stages, each only reached when the previous one passed,
because later rules cannot be stated on a frame that failed an earlier one:

1. structure — the six columns exist, timestamps are datetimes, prices/volume are numeric;
   naive timestamps are taken as UTC, everything is normalized to ``Datetime("us", "UTC")``
   and Float64;
2. values — :data:`RawPricesSchema` (pandera, polars backend): no nulls/NaN, finite, prices
   > 0, volume >= 0, timestamps unique and ascending, high/low bracket open/close;
3. length — enough rows for the indicator warm-up, a full window and one sample in every split.

The split arithmetic (:func:`split_sizes`, :func:`sequence_count`) lives here rather than in
``patx_core.data.splits`` because :func:`required_rows` needs it and this module must not depend
on the dataset layer; ``patx_core.data.splits`` re-exports both.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from patx_core.storage.artifacts import PathLike, as_path
from patx_core.settings.config import WARMUP_ROWS, DataConfig, LabelConfig, SplitConfig

logger = logging.getLogger(__name__)

RAW_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
NUMERIC_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")

# How many offending rows a message lists; the count of all of them is always given.
MAX_ROWS_SHOWN = 5

# Rule names: the pandera check names of RawPricesSchema and the words users see.
RULE_FINITE = "finite values (no +inf/-inf)"
RULE_ENOUGH_ROWS = "enough rows"
RULE_SORTED = "timestamps in ascending order"
RULE_HIGH_LOW = "high >= low"
RULE_HIGH_BRACKETS = "high >= max(open, close)"
RULE_LOW_BRACKETS = "low <= min(open, close)"
# pandera's built-in check names → the rule as users read it.
_PANDERA_RULES = {
    "not_nullable": "no null or NaN values",
    "greater_than(0)": "prices > 0",
    "greater_than_or_equal_to(0)": "volume >= 0",
    "field_uniqueness": "unique timestamps",
}
# Dataframe-wide checks report the schema name as their column; these say which column to blame.
_RULE_COLUMNS = {RULE_SORTED: "timestamp", RULE_HIGH_LOW: "high", RULE_HIGH_BRACKETS: "high",
                 RULE_LOW_BRACKETS: "low"}
_OHLC_RULES = frozenset({RULE_HIGH_LOW, RULE_HIGH_BRACKETS, RULE_LOW_BRACKETS})


@dataclass(frozen=True)
class Violation:
    """One broken rule: which rule, which column, how many rows, and the first few of them."""

    rule: str
    column: str  # "" for whole-file rules (empty file, too few rows, unreadable file)
    count: int  # offending rows (0 for whole-file rules such as "enough rows")
    rows: tuple[int, ...]  # first MAX_ROWS_SHOWN offending row indices
    detail: str  # human-readable description, rows and timestamps included

    def __str__(self) -> str:
        where = f" for column '{self.column}'" if self.column else ""
        return f"rule '{self.rule}' failed{where}: {self.detail}"


class RawDataError(ValueError):
    """The raw file breaks the input contract; ``violations`` lists every rule that failed."""

    def __init__(self, source: str, violations: list[Violation] | tuple[Violation, ...]) -> None:
        self.source = source
        self.violations = tuple(violations)
        if len(self.violations) == 1:
            message = f"{source}: {self.violations[0]}"
        else:
            lines = "\n".join(f"  - {v}" for v in self.violations)
            message = f"{source}: {len(self.violations)} rule violations:\n{lines}"
        super().__init__(message)


def row_invariant(data: pa.PolarsData, expr: pl.Expr) -> pl.LazyFrame:
    """Row-wise invariant that passes where a price is null/NaN/inf or <= 0: those rows are
    already reported by their own rule, once (and NaN compares as the largest float in polars)."""
    any_bad = pl.any_horizontal((~pl.col(c).is_finite()) | (pl.col(c) <= 0) for c in PRICE_COLUMNS)
    return data.lazyframe.select((expr | any_bad).fill_null(True))


def _finite() -> pa.Check:
    def check(data: pa.PolarsData) -> pl.LazyFrame:
        # NaN/null pass here: "not_nullable" already reports them, once.
        col = pl.col(data.key)
        return data.lazyframe.select(col.is_finite() | col.is_nan() | col.is_null())
    return pa.Check(check, name=RULE_FINITE)


def _invariant(rule: str, expr: pl.Expr) -> pa.Check:
    return pa.Check(lambda data: row_invariant(data, expr), name=rule)


def raw_prices_schema(*, symbol: str | None = None) -> pa.DataFrameSchema:
    """The value-level raw contract (stage 2) as a pandera schema (polars backend).

    Without ``symbol``: one series, one candle per row, strictly increasing UTC timestamps. With
    ``symbol`` (the name of a leading string column): a long frame of many series, where the same
    rules hold within each symbol and (symbol, timestamp) is unique. Both are built here so that
    single-series and universe validation cannot drift apart; each call builds fresh checks, because
    pandera renames checks shared between schemas.
    """
    ts = pl.col("timestamp")
    # Equal neighbours are the uniqueness rule's business; this one flags steps backwards.
    step = ts.diff() if symbol is None else ts.diff().over(symbol)
    columns = {
        **({symbol: pa.Column(pl.String, nullable=False)} if symbol is not None else {}),
        "timestamp": pa.Column(pl.Datetime("us", "UTC"), nullable=False, unique=symbol is None),
        **{c: pa.Column(pl.Float64, checks=[pa.Check.gt(0), _finite()]) for c in PRICE_COLUMNS},
        "volume": pa.Column(pl.Float64, checks=[pa.Check.ge(0), _finite()]),
    }
    checks = [
        pa.Check(lambda data: data.lazyframe.select((step >= pl.duration()).fill_null(True)), name=RULE_SORTED),
        _invariant(RULE_HIGH_LOW, pl.col("high") >= pl.col("low")),
        _invariant(RULE_HIGH_BRACKETS, pl.col("high") >= pl.max_horizontal("open", "close")),
        _invariant(RULE_LOW_BRACKETS, pl.col("low") <= pl.min_horizontal("open", "close")),
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=True,
                              unique=None if symbol is None else [symbol, "timestamp"],
                              name="RawPricesSchema" if symbol is None else "UniversePrices")


# A validated raw frame. :func:`validate_raw` first brings a frame to these dtypes so that a user
# sees "prices as strings" rather than a pandera dtype error.
RawPricesSchema = raw_prices_schema()


def read_candle_file(path: PathLike) -> pl.DataFrame:
    """Read a candle file as it is (no validation); parquet, or CSV when the name ends in ``.csv``.

    Anything polars cannot parse — not parquet, truncated, zero bytes — becomes
    "cannot read <path> as parquet: …" (rule ``parquet format``).
    """
    p = as_path(path)
    try:
        payload = p.read_bytes()
    except FileNotFoundError:
        raise RawDataError(str(path), [Violation("file exists", "", 0, (), "no such file")]) from None
    fmt = "csv" if str(path).lower().endswith(".csv") else "parquet"
    try:
        if fmt == "csv":
            df = pl.read_csv(io.BytesIO(payload), try_parse_dates=True)
        else:
            df = pl.read_parquet(io.BytesIO(payload))
    except Exception as exc:  # polars raises several unrelated types for corrupt input
        reason = "the file is empty (0 bytes)" if not payload else f"{type(exc).__name__}: {exc}"
        raise RawDataError(str(path), [Violation(f"{fmt} format", "", 0, (), f"cannot read {path} as "
                                                 f"{fmt}: {reason}")]) from exc
    logger.info("read %d rows × %d columns from %s", df.height, df.width, path)
    return df


def read_raw_parquet(path: PathLike, *, min_rows: int | None = None, min_rows_for: str = "") -> pl.DataFrame:
    """Read and validate one single-symbol raw candle file (local path or fsspec URL)."""
    return validate_raw(read_candle_file(path), min_rows=min_rows, min_rows_for=min_rows_for, source=str(path))


#: What a dataset declared ``volume = false`` gets in its volume column: the candle's range,
#: ``high - low``. Tick volume, which is what FX brokers that do publish a volume report, tracks
#: the range closely; so ``volume_logratio_20`` (log of volume over its 20-candle mean) still reads
#: "is this candle more active than usual", and the guide's 14 inputs keep their meaning and their
#: count, so variants, checkpoints and the scaler work unchanged. A constant (e.g. all-zero) or
#: absent column would be a dead input whose z-score is undefined.
RANGE_AS_VOLUME = "high - low"


def validate_raw(df: pl.DataFrame, *, min_rows: int | None = None, min_rows_for: str = "",
                 source: str = "raw data", volume: bool = True) -> pl.DataFrame:
    """Return ``df`` normalized to the raw contract, or raise :class:`RawDataError`.

    The result has exactly :data:`RAW_COLUMNS` (extra columns are dropped), ``timestamp`` as
    ``Datetime("us", "UTC")`` (naive timestamps are taken as UTC, other zones converted) and
    prices/volume as Float64. ``min_rows`` is usually :func:`required_rows`, and ``min_rows_for``
    names the settings it came from; ``source`` names the file in messages. ``volume=False`` (a
    dataset declared ``volume = false``): any volume column is replaced by :data:`RANGE_AS_VOLUME`.
    """
    if df.height == 0:
        raise RawDataError(source, [Violation("non-empty file", "", 0, (),
                                              f"the file has no rows (columns: {df.columns})")])
    df = normalize_structure(df, source, volume=volume)
    try:
        RawPricesSchema.validate(df, lazy=True)
    except SchemaErrors as exc:
        raise RawDataError(source, _violations_from_pandera(exc.failure_cases, df)) from None
    constant = [c for c in NUMERIC_COLUMNS if df.height > 1 and df.get_column(c).n_unique() == 1]
    if constant:
        # Caught here rather than as a zero-std scaler error three assets later: data without real
        # volume (FX quotes, some indices) is the usual cause.
        raise RawDataError(source, [Violation(
            "column varies", c, df.height, (), f"column {c!r} has the same value ({df.get_column(c)[0]}) on "
            f"all {df.height} rows; every feature is z-scored, so a constant input (e.g. all-zero volume) "
            "cannot be used — supply a real volume series, or declare `volume = false` in the dataset's "
            "table when the data has none") for c in constant])
    if min_rows is not None and df.height < min_rows:
        raise RawDataError(source, [too_few_rows(df.height, min_rows, min_rows_for)])
    return df


def too_few_rows(rows: int, min_rows: int, min_rows_for: str = "") -> Violation:
    """The ``enough rows`` violation: ``rows`` < ``min_rows`` (usually :func:`required_rows`)."""
    return Violation(
        RULE_ENOUGH_ROWS, "", 0, (),
        f"the file has {rows} rows but at least {min_rows} are needed: {WARMUP_ROWS} rows of "
        f"indicator warm-up (EMA200) + a full window and at least one sample in every split after "
        f"the purge + the label horizon at the end (see patx_core.data.contract.required_rows)"
        + (f"; with {min_rows_for}" if min_rows_for else ""))


def normalize_structure(df: pl.DataFrame, source: str, *, volume: bool = True) -> pl.DataFrame:
    """Stage 1: columns present, dtypes usable; cast to the contract's dtypes. ``volume=False``:
    the volume column, present or not, becomes :data:`RANGE_AS_VOLUME`."""
    if not volume:
        # a placeholder through the checks below, replaced by the range once prices are numbers
        df = df.drop("volume", strict=False).with_columns(pl.lit(0.0).alias("volume"))
    missing = [c for c in RAW_COLUMNS if c not in df.columns]
    if missing:
        violations = []
        for col in missing:
            near = [d for d in df.columns if d.strip().lower() == col]
            hint = f" ({near} differs only in case or spaces; names are case-sensitive)" if near else ""
            violations.append(Violation("required columns", col, 0, (),
                                        f"column '{col}' is missing; the file has {df.columns}{hint}"))
        raise RawDataError(source, violations)
    extra = [c for c in df.columns if c not in RAW_COLUMNS]
    if extra:
        logger.info("%s: ignoring extra column(s) %s", source, extra)
    df = df.select(RAW_COLUMNS)

    violations: list[Violation] = []
    ts_dtype = df.schema["timestamp"]
    if isinstance(ts_dtype, pl.Datetime):
        ts = pl.col("timestamp")
        ts = ts.dt.replace_time_zone("UTC") if ts_dtype.time_zone is None else ts.dt.convert_time_zone("UTC")
        df = df.with_columns(ts.dt.cast_time_unit("us"))
    elif ts_dtype == pl.Date:
        df = df.with_columns(pl.col("timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    else:
        violations.append(_dtype_violation(df, "timestamp", "a datetime (or date)",
                                           "parse it before writing, e.g. pl.col('timestamp').str.to_datetime()"))
    for col in NUMERIC_COLUMNS:
        if df.schema[col].is_numeric():
            continue
        violations.append(_dtype_violation(df, col, "a numeric type (Float64)",
                                           "write prices and volume as numbers, not text"))
    if violations:
        raise RawDataError(source, violations)
    df = df.with_columns(pl.col(NUMERIC_COLUMNS).cast(pl.Float64))
    return df if volume else df.with_columns((pl.col("high") - pl.col("low")).alias("volume"))


def _dtype_violation(df: pl.DataFrame, col: str, expected: str, hint: str) -> Violation:
    """Name the dtype and show the first values that do not parse (or just the first values)."""
    as_text = df.get_column(col).cast(pl.String, strict=False)
    parsed = as_text.cast(pl.Float64, strict=False) if col != "timestamp" else None
    bad = (parsed.is_null() & as_text.is_not_null()) if parsed is not None else None
    idx = (bad.arg_true() if bad is not None and bad.any() else pl.int_range(df.height, eager=True))
    rows = tuple(int(i) for i in idx.head(MAX_ROWS_SHOWN))
    shown = ", ".join(f"row {i}: {as_text[i]!r}" for i in rows)
    which = "values that are not numbers" if bad is not None and bad.any() else "first values"
    return Violation("column dtype", col, 0, rows,
                     f"expected {expected}, got {df.schema[col]} ({which}: {shown}); {hint}")


def _violations_from_pandera(failure_cases: pl.DataFrame, df: pl.DataFrame) -> list[Violation]:
    """Group pandera's failure cases by rule and column and describe the first rows of each."""
    out: list[Violation] = []
    groups = failure_cases.group_by(["check", "column"], maintain_order=True).agg(pl.col("index"))
    for check, column, index in groups.iter_rows():
        rule = _PANDERA_RULES.get(check, check)
        column = _RULE_COLUMNS.get(rule, column)
        rows = sorted({int(i) for i in index if i is not None})
        shown = "; ".join(_describe_row(df, i, rule, column) for i in rows[:MAX_ROWS_SHOWN])
        more = f" (first {MAX_ROWS_SHOWN} shown)" if len(rows) > MAX_ROWS_SHOWN else ""
        out.append(Violation(rule, column, len(rows), tuple(rows[:MAX_ROWS_SHOWN]),
                             f"{len(rows)} offending row(s){more}: {shown}"))
    return out


def _describe_row(df: pl.DataFrame, i: int, rule: str, column: str) -> str:
    ts: Any = df.get_column("timestamp")[i]
    when = ts.isoformat() if ts is not None else "timestamp null"
    if rule in _OHLC_RULES:
        values = ", ".join(f"{c}={df.get_column(c)[i]!r}" for c in PRICE_COLUMNS)
    elif column == "timestamp":
        values = ""
    else:
        values = f"{column}={df.get_column(column)[i]!r}"
    return f"row {i} ({when}){' ' + values if values else ''}"


def split_sizes(n_rows: int, split: SplitConfig) -> dict[str, int]:
    """Rows per split, chronologically: train = floor(N·train); val = floor(N·val) when a test
    split follows, else N − train; test = the rest.

    The flooring gives the guide's counts (7,261 rows at 0.8/0.2 → 5,808/1,453); the 1e-9 guards
    against products like 0.29·100 = 28.999999999999996 losing a row to float rounding.
    """
    n_train = math.floor(n_rows * split.train + 1e-9)
    if split.test > 0:
        n_val = math.floor(n_rows * split.val + 1e-9)
        return {"train": n_train, "val": n_val, "test": n_rows - n_train - n_val}
    return {"train": n_train, "val": n_rows - n_train}


def sequence_count(n_rows: int, window_size: int, horizon: int, *, first: bool, last: bool) -> int:
    """Samples (windows) a split of ``n_rows`` processed rows yields:

        max(0, n_rows − (window_size − 1 if first else 0) − (0 if last else horizon))

    The first split loses ``window_size − 1`` rows because its windows may not reach before the
    data; later splits look back into earlier splits' rows (past features only). Every split
    followed by another loses its last ``horizon`` rows to the purge, so no label's horizon sees
    a later split's prices. The last split has no purge: its final rows already stop ``horizon``
    candles before the end of the file, where labels become unknown. Later splits assume the
    rows before them hold at least ``window_size − 1`` rows, which holds whenever the first split
    has a sample.
    """
    lost = (window_size - 1 if first else 0) + (0 if last else horizon)
    return max(0, n_rows - lost)


def describe_row_requirement(data: DataConfig, labels: LabelConfig, split: SplitConfig) -> str:
    """The settings :func:`required_rows` depends on, for error messages."""
    return (f"data.window_size={data.window_size}, labels.horizon={labels.horizon}, "
            f"split.train/val/test={split.train}/{split.val}/{split.test}")


def required_rows(data: DataConfig, labels: LabelConfig, split: SplitConfig) -> int:
    """Fewest raw rows that give at least one sample in every split.

    raw rows = WARMUP_ROWS (features start at the EMA200's first value, row 199)
             + N processed rows (the smallest N where every split's :func:`sequence_count` ≥ 1)
             + ``horizon`` (the last candles have no label: their horizon runs past the end).
    """
    names = split.names
    # No split can have a sample before N reaches window + horizon rows, so start the search there.
    n = data.window_size + labels.horizon
    while True:
        sizes = split_sizes(n, split)
        if all(sequence_count(sizes[s], data.window_size, labels.horizon, first=i == 0,
                              last=i == len(names) - 1) >= 1 for i, s in enumerate(names)):
            return WARMUP_ROWS + n + labels.horizon
        n += 1
