"""The forward ledger: every signal written down before its outcome was known, resolved later.

``<dataset>/ledger/<variant>/signals.parquet`` holds one row per (symbol, candle, model, role):
``role`` is ``"champion"`` (the promoted model) or ``"shadow"`` (the cell's latest trained
checkpoint, promoted or not). Columns (:data:`LEDGER_SCHEMA`)::

    symbol, timestamp, model_sha256, role, probability, threshold, signal, reason, entry_price,
    model_data_end, as_of, recorded_at, out_of_sample, forward, status, label, trade_return, resolved_at

Rules, each tested:

- Scoring (:func:`score_rows`) takes every candle of a symbol newer than that symbol's last row
  for the same model and role, at most ``max_backfill`` of them (older ones are skipped, and
  logged). The last recorded candle is scored again as a probe: a different probability for a
  key already in the ledger is refused (:class:`LedgerIntegrityError`), since it means
  non-determinism or another model under the same sha256.
- ``out_of_sample`` = ``timestamp > model_data_end`` (the newest candle the model's training run
  read); ``forward`` = the outcome was not decided by the candles in the store at scoring time
  (no barrier touched and fewer than ``horizon`` candles after it): the paper-trading standard.
- Resolution (:func:`resolve_rows`) applies the training labels' triple barrier
  (:func:`patx_core.data.labels.known_outcomes`) to the store's candles: ``label``,
  ``trade_return`` after the dataset's round-trip cost, ``resolved_at`` = the exit candle.
- A row, once written, keeps its fields; only an open row's outcome fields (and, for a revision,
  its reason) are filled in when it resolves. Rows are appended in recording order, so for
  the champion role the first row of a (symbol, candle) is the one the figures count.
- Store revisions (``allow_revisions = true``): the candles the rows depend on, as last seen,
  are kept beside the ledger in a file named by their digest (``candles-<sha256>.parquet``),
  which the ledger's metadata names (``patx.ledger.candles``): the rename of ``signals.parquet``
  commits rows and candles together, so a run killed between the two writes leaves the old pair
  (a ledger written before the pointer existed keeps ``candles.parquet``, read until the next
  write). A revised candle inside an open row's
  window resolves it from the revised candles and its reason names the revision; inside a
  resolved row's window, the row keeps its outcome and the revision is listed (parquet metadata
  ``patx.ledger.revisions``, and ``track_record.json``).
- Writes are atomic (:func:`patx_core.storage.artifacts.atomic_write_with`), one rename per
  commit; a run that changes nothing writes nothing, so a rerun leaves the file byte-identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from patx_core.data.features import compute_indicators
from patx_core.data.labels import known_outcomes
from patx_core.data.universe import SYMBOL
from patx_core.evaluation.backtest import round_trip_factor
from patx_core.serving.champion import apply_suspension
from patx_core.settings.config import LabelConfig
from patx_core.storage.artifacts import PathLike, as_path, atomic_write_bytes, atomic_write_with, read_parquet

if TYPE_CHECKING:
    from patx_core.model.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

CHAMPION = "champion"
SHADOW = "shadow"
OPEN = "open"
RESOLVED = "resolved"
#: Two scorings of one key agree to this absolute tolerance: float32 windows scored in batches of
#: another size may differ in the last bits; anything larger is another model or non-determinism.
PROBABILITY_TOLERANCE = 1e-6
REVISIONS_KEY = "patx.ledger.revisions"
UNPROBED_KEY = "patx.ledger.unprobed"
CANDLES_KEY = "patx.ledger.candles"
#: Before the ledger named its candles file, it was this fixed name beside it.
LEGACY_CANDLES = "candles.parquet"
# How long a run waits for another run writing the same cell's ledger (a score run takes seconds).
LOCK_TIMEOUT_S = 600.0
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")

_TS = pl.Datetime("us", "UTC")
LEDGER_SCHEMA = pl.Schema({
    "symbol": pl.String, "timestamp": _TS, "model_sha256": pl.String, "role": pl.String,
    "probability": pl.Float64, "threshold": pl.Float64, "signal": pl.String, "reason": pl.String,
    "entry_price": pl.Float64, "model_data_end": _TS, "as_of": _TS, "recorded_at": _TS,
    "out_of_sample": pl.Boolean, "forward": pl.Boolean, "status": pl.String, "label": pl.Int8,
    "trade_return": pl.Float64, "resolved_at": _TS,
})
KEY = ("symbol", "timestamp", "model_sha256", "role")
OUTCOME = ("status", "label", "trade_return", "resolved_at", "reason")


class LedgerIntegrityError(RuntimeError):
    """A rule of the ledger would be broken (a changed probability, a malformed file)."""


@dataclass(frozen=True)
class Scorer:
    """One model under one role, with what its rows record."""

    role: str
    sha256: str
    checkpoint: "LoadedCheckpoint"
    threshold: float | None
    hold_reason: str | None  # why there is no threshold (threshold None)
    data_end: datetime
    suspended: str | None = None  # the champion's suspension reason: its rows hold ...
    suspended_from: datetime | None = None  # ... from this candle on (the one that decided the alarm)


@dataclass
class Ledger:
    """The ledger's rows, the revisions listed for already-resolved rows, and ``unprobed``: per
    :func:`probe_key` (role, model, symbol), the newest row recorded before a store revision of
    that symbol's candles. Those rows were scored from the old candles, so re-scoring them would
    legitimately differ: the nightly probe skips them until a newer row is recorded."""

    rows: pl.DataFrame
    revisions: list[dict[str, Any]] = field(default_factory=list)
    unprobed: dict[str, str] = field(default_factory=dict)
    # the file, beside the ledger, of the candles its rows depend on as last seen (None: none named)
    candles: str | None = None


def probe_key(role: str, sha256: str, symbol: str) -> str:
    return f"{role}|{sha256}|{symbol}"


def empty_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=LEDGER_SCHEMA)


def read_ledger(path: PathLike) -> Ledger:
    """The ledger at ``path`` (empty when there is none yet); a file of another schema is refused."""
    p = as_path(path)
    if not p.exists():
        return Ledger(empty_rows())
    rows, meta = read_parquet(p)
    if rows.schema != LEDGER_SCHEMA:
        raise LedgerIntegrityError(f"{p} has columns {dict(rows.schema)}, expected {dict(LEDGER_SCHEMA)}")
    raw, unprobed, candles = meta.get(REVISIONS_KEY), meta.get(UNPROBED_KEY), meta.get(CANDLES_KEY)
    return Ledger(rows, json.loads(raw) if raw else [], json.loads(unprobed) if unprobed else {},
                  json.loads(candles) if candles else None)


def read_seen_candles(path: PathLike, ledger: Ledger) -> pl.DataFrame | None:
    """The candles ``ledger`` (read from ``path``) recorded as seen, or None when it has none yet."""
    folder = as_path(path).parent
    if ledger.candles is None:
        legacy = folder / LEGACY_CANDLES
        return read_parquet(legacy)[0] if legacy.exists() else None
    target = folder / ledger.candles
    if not target.exists():
        raise LedgerIntegrityError(f"{as_path(path)} names {target} as the candles its rows depend on, and it is "
                                   "missing: restore it, or remove the ledger's folder to start the record again")
    return read_parquet(target)[0]


def write_ledger(path: PathLike, ledger: Ledger, seen: pl.DataFrame | None = None) -> Ledger:
    """Publish the ledger atomically: readers (and a SIGKILL) see the old file or the new one.

    With ``seen`` (the candles the rows depend on), those are written first, under a name made of
    their digest that no committed ledger names yet, and the new ledger's metadata names them: the
    one rename of ``signals.parquet`` commits both. Candle files neither the new nor the previous
    ledger names are removed after the commit (a reader holding the previous ledger still finds
    its candles). Returns the ledger as written.
    """
    p = as_path(path)
    previous = read_ledger(p).candles if seen is not None and p.exists() else None
    if seen is not None:
        buf = io.BytesIO()
        seen.write_parquet(buf)
        data = buf.getvalue()
        name = f"candles-{hashlib.sha256(data).hexdigest()[:32]}.parquet"
        if not (p.parent / name).exists():
            atomic_write_bytes(p.parent / name, data)
        ledger = dataclasses.replace(ledger, candles=name)
    metadata = {REVISIONS_KEY: json.dumps(ledger.revisions, sort_keys=True),
                UNPROBED_KEY: json.dumps(ledger.unprobed, sort_keys=True),
                CANDLES_KEY: json.dumps(ledger.candles)}
    atomic_write_with(p, lambda buf: ledger.rows.write_parquet(buf, metadata=metadata))
    if seen is not None:
        keep = {ledger.candles, previous}
        for old in [*p.parent.glob("candles-*.parquet"), p.parent / LEGACY_CANDLES]:
            if old.name not in keep and old.exists():
                old.unlink()
    return ledger


# --------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class SymbolOutcomes:
    """A symbol's candles in the store and the outcome they decide for each one (NaN: not yet)."""

    timestamps: pl.Series
    close: np.ndarray
    label: np.ndarray
    trade_return: np.ndarray  # gross
    exit_index: np.ndarray

    def index_of(self, ts: pl.Series) -> np.ndarray:
        """Row of each timestamp in this symbol's candles (-1 when absent)."""
        idx = np.searchsorted(self.timestamps.to_numpy(), ts.to_numpy())
        idx = np.minimum(idx, len(self.timestamps) - 1)
        found = self.timestamps.gather(idx).to_numpy() == ts.to_numpy()
        return np.where(found, idx, -1)


def symbol_outcomes(universe: pl.DataFrame, labels: LabelConfig) -> dict[str, SymbolOutcomes]:
    """For every symbol of the store: the triple-barrier outcome its candles decide so far.

    ATR comes from the symbol's whole history, as in training (``build_feature_table``)."""
    out = {}
    for (symbol,), part in universe.sort(SYMBOL, "timestamp").group_by(SYMBOL, maintain_order=True):
        raw = part.drop(SYMBOL)
        atr = compute_indicators(raw).get_column("atr_14").fill_null(np.nan).to_numpy()
        res = known_outcomes(*(raw.get_column(c).to_numpy() for c in ("open", "high", "low", "close")), atr, labels)
        out[str(symbol)] = SymbolOutcomes(raw.get_column("timestamp").cast(_TS), raw.get_column("close").to_numpy(),
                                          res.label, res.trade_return, res.exit_index)
    return out


# ------------------------------------------------------------------------------- revisions


def dependent_candles(universe: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """The store's candles from each symbol's first ledger row on: what the rows' outcomes read."""
    if rows.is_empty():
        return universe.head(0).select(SYMBOL, "timestamp", *PRICE_COLUMNS)
    first = rows.group_by("symbol").agg(pl.col("timestamp").min().alias("_first"))
    return (universe.select(SYMBOL, pl.col("timestamp").cast(_TS), *PRICE_COLUMNS)
            .join(first, left_on=SYMBOL, right_on="symbol").filter(pl.col("timestamp") >= pl.col("_first"))
            .drop("_first").sort(SYMBOL, "timestamp"))


def find_revisions(seen: pl.DataFrame | None, current: pl.DataFrame) -> list[dict[str, Any]]:
    """Every (symbol, timestamp, column) whose value in the store differs from what the ledger saw."""
    if seen is None or seen.is_empty():
        return []
    joined = seen.join(current, on=[SYMBOL, "timestamp"], suffix="_new")
    out = []
    for col in PRICE_COLUMNS:
        changed = joined.filter(pl.col(col) != pl.col(f"{col}_new"))
        for s, t, old, new in changed.select(SYMBOL, "timestamp", col, f"{col}_new").iter_rows():
            out.append({"symbol": s, "timestamp": t.isoformat(), "column": col, "old": old, "new": new})
    return sorted(out, key=lambda r: (r["symbol"], r["timestamp"], r["column"]))


def _describe(rev: dict[str, Any]) -> str:
    return f"{rev['symbol']} {rev['timestamp']} {rev['column']} {rev['old']!r} -> {rev['new']!r}"


# ------------------------------------------------------------------------------- resolution


def resolve_rows(ledger: Ledger, outcomes: dict[str, SymbolOutcomes], *, cost_bps: float,
                 revisions: list[dict[str, Any]] = ()) -> tuple[Ledger, int]:
    """Resolve every open row whose outcome the store now decides; returns the ledger and how many.

    ``revisions`` (from :func:`find_revisions`) inside an open row's window go into its reason; inside a
    resolved row's window (entry candle to exit candle) they are listed, and the row keeps its outcome.
    """
    rows = ledger.rows
    if rows.is_empty():
        return ledger, 0
    keep = round_trip_factor(cost_bps)
    status = rows["status"].to_list()
    label = rows["label"].to_list()
    ret = rows["trade_return"].to_list()
    resolved_at = rows["resolved_at"].to_list()
    reason = rows["reason"].to_list()
    listed = list(ledger.revisions)
    rev_by_symbol: dict[str, list[dict[str, Any]]] = {}
    for rev in revisions:
        rev_by_symbol.setdefault(rev["symbol"], []).append(rev)
    n_resolved = 0
    for (symbol,), part in rows.with_row_index("_i").group_by("symbol", maintain_order=True):
        oc = outcomes.get(str(symbol))
        if oc is None:
            continue
        where = oc.index_of(part["timestamp"])
        revs = rev_by_symbol.get(str(symbol), [])
        for i, ts, idx, st, end in zip(part["_i"].to_list(), part["timestamp"].to_list(), where,
                                       part["status"].to_list(), part["resolved_at"].to_list()):
            if st == RESOLVED:
                for rev in revs:
                    if ts.isoformat() <= rev["timestamp"] <= end.isoformat():
                        entry = {"row": {"symbol": symbol, "timestamp": ts.isoformat(),
                                         "model_sha256": rows["model_sha256"][i], "role": rows["role"][i]},
                                 "revision": rev, "kept": "the recorded outcome"}
                        if entry not in listed:
                            listed.append(entry)
                continue
            if idx < 0 or np.isnan(oc.label[idx]):
                continue
            exit_ts = oc.timestamps[int(oc.exit_index[idx])]
            status[i], label[i] = RESOLVED, int(oc.label[idx])
            ret[i] = float((1.0 + oc.trade_return[idx]) * keep - 1.0)
            resolved_at[i] = exit_ts
            hit = [r for r in revs if ts.isoformat() <= r["timestamp"] <= exit_ts.isoformat()]
            if hit:
                note = "resolved from revised candles: " + "; ".join(_describe(r) for r in hit)
                reason[i] = note if reason[i] is None else f"{reason[i]}; {note}"
            n_resolved += 1
    if not n_resolved and listed == ledger.revisions:
        return ledger, 0
    rows = rows.with_columns(pl.Series("status", status, dtype=pl.String), pl.Series("label", label, dtype=pl.Int8),
                             pl.Series("trade_return", ret, dtype=pl.Float64),
                             pl.Series("resolved_at", resolved_at, dtype=_TS),
                             pl.Series("reason", reason, dtype=pl.String))
    return dataclasses.replace(ledger, rows=rows, revisions=listed), n_resolved


# ---------------------------------------------------------------------------------- scoring


def score_rows(ledger: Ledger, scorer: Scorer, universe: pl.DataFrame, outcomes: dict[str, SymbolOutcomes], *,
               max_backfill: int, recorded_at: datetime) -> pl.DataFrame:
    """New rows for ``scorer``: each symbol's candles after its last row for this model and role.

    The last recorded candle is scored again (the *probe*) and must agree (see :func:`merge_rows`),
    unless ``ledger.unprobed`` marks it as scored before a store revision of its symbol's candles
    (:func:`find_revisions`): its features changed, so the recorded probability stands. At most
    ``max_backfill`` new candles per symbol; the older ones are skipped with a log line (and no
    probe: the last recorded candle is not in the scored tail).
    """
    from patx_core.serving.predict import predict_frame

    mine = ledger.rows.filter((pl.col("model_sha256") == scorer.sha256) & (pl.col("role") == scorer.role))
    last = dict(mine.group_by("symbol").agg(pl.col("timestamp").max()).iter_rows())
    out = []
    for (symbol,), part in universe.sort(SYMBOL, "timestamp").group_by(SYMBOL, maintain_order=True):
        symbol = str(symbol)
        raw = part.drop(SYMBOL)
        ts = raw.get_column("timestamp").cast(_TS)
        newer = int((ts > last[symbol]).sum()) if symbol in last else ts.len()
        stale = ledger.unprobed.get(probe_key(scorer.role, scorer.sha256, symbol))
        probe = 1 if symbol in last and not (stale and stale >= last[symbol].isoformat()) else 0
        if newer > max_backfill:
            log.info("%s %s %s: %d candles unscored; scoring the newest %d (monitor.max_backfill), skipping "
                     "%d up to %s", scorer.role, scorer.sha256[:12], symbol, newer, max_backfill,
                     newer - max_backfill, ts[ts.len() - max_backfill - 1].isoformat())
            newer, probe = max_backfill, 0
        elif symbol in last and not probe:
            log.info("%s %s %s: its last recorded signal was scored before a revision of the stored candles; "
                     "not re-scored", scorer.role, scorer.sha256[:12], symbol)
        if newer + probe == 0:
            continue
        try:
            lines = predict_frame(scorer.checkpoint, raw, last=newer + probe, threshold=scorer.threshold,
                                  hold_reason=scorer.hold_reason, symbol=symbol)
        except ValueError as exc:
            log.warning("%s %s: symbol %r not scored: %s", scorer.role, scorer.sha256[:12], symbol, exc)
            continue
        oc = outcomes[symbol]
        as_of = ts[ts.len() - 1]
        for line in lines:
            t = datetime.fromisoformat(line["timestamp"])
            idx = int(oc.index_of(pl.Series([t], dtype=_TS))[0])
            suspension = (None if scorer.suspended is None else
                          {"reason": scorer.suspended, "from": scorer.suspended_from})
            signal, reason = apply_suspension(line["signal"], line["reason"], t, suspension)
            out.append({"symbol": symbol, "timestamp": t, "model_sha256": scorer.sha256, "role": scorer.role,
                        "probability": line["probability"], "threshold": scorer.threshold, "signal": signal,
                        "reason": reason, "entry_price": float(oc.close[idx]), "model_data_end": scorer.data_end,
                        "as_of": as_of, "recorded_at": recorded_at, "out_of_sample": t > scorer.data_end,
                        # decided by the candles already in the store: out of sample at best, never forward
                        "forward": bool(np.isnan(oc.label[idx])), "status": OPEN, "label": None,
                        "trade_return": None, "resolved_at": None})
    return pl.DataFrame(out, schema=LEDGER_SCHEMA) if out else empty_rows()


def merge_rows(ledger: Ledger, new: pl.DataFrame) -> tuple[Ledger, int]:
    """Append the rows whose key is new; a key already recorded keeps its row, and must agree.

    Raises :class:`LedgerIntegrityError` naming the rows when a key comes back with another
    probability (beyond :data:`PROBABILITY_TOLERANCE`).
    """
    if new.is_empty():
        return ledger, 0
    dup = new.join(ledger.rows.select(*KEY, pl.col("probability").alias("_recorded")), on=list(KEY), how="inner")
    bad = dup.filter(((pl.col("probability") - pl.col("_recorded")).abs() > PROBABILITY_TOLERANCE)
                     | (pl.col("probability").is_null() != pl.col("_recorded").is_null()))
    if bad.height:
        shown = "; ".join(f"{s} {t.isoformat()} {r} {m[:12]}: recorded {old!r}, now {p!r}" for s, t, m, r, p, old in
                          bad.select(*KEY, "probability", "_recorded").head(5).iter_rows())
        raise LedgerIntegrityError(
            f"refused: {bad.height} ledger row(s) scored again with a different probability (rule: a recorded "
            f"signal never changes; the same model sha256 must give the same probability): {shown}. "
            "Nothing was written; look for non-determinism or a model file changed under the same sha256")
    fresh = new.join(ledger.rows.select(*KEY), on=list(KEY), how="anti")
    if fresh.is_empty():
        return ledger, 0
    return dataclasses.replace(ledger, rows=pl.concat([ledger.rows, fresh])), fresh.height


def counted_rows(rows: pl.DataFrame, role: str) -> pl.DataFrame:
    """The rows of ``role`` the figures count: out of sample, and for the champion the first row
    recorded for each (symbol, candle), whichever model scored it later."""
    mine = rows.filter(pl.col("role") == role)
    if role == CHAMPION:
        mine = mine.unique(subset=["symbol", "timestamp"], keep="first", maintain_order=True)
    return mine.filter(pl.col("out_of_sample"))


def bets(rows: pl.DataFrame) -> pl.DataFrame:
    """The buys of ``rows`` de-clustered into bets: one row per bet, its opening buy, with
    ``n_signals`` (the buys it holds, itself included), in (role, symbol, timestamp) order.

    Per role and symbol, in candle order, a buy issued while the bet opened by an earlier buy is
    still open (its candle before that bet's ``resolved_at``, or that bet not resolved yet) joins
    the bet instead of opening another: the backtest's one position at a time. A model fires on
    consecutive candles while its first trade runs, and one price move then resolves the whole
    cluster; counted signal by signal, one bad day would weigh like ten independent misses. A bet
    carries its opening buy's outcome (``status``, ``label``, ``trade_return``, ``resolved_at``):
    the trade that was taken. The live precision, its interval, the monitor and the live equity
    all read this one walk.
    """
    buys = rows.filter(pl.col("signal") == "buy").sort("role", "symbol", "timestamp")
    if buys.is_empty():
        return buys.with_columns(pl.lit(0, dtype=pl.UInt32).alias("n_signals"))
    ts = buys["timestamp"].dt.epoch("us").to_numpy()
    # an open bet is busy until an exit the store has not reached: every later candle joins it
    end = buys["resolved_at"].dt.epoch("us").fill_null(np.iinfo(np.int64).max).to_numpy()
    group = (buys["role"] + "\x00" + buys["symbol"]).to_numpy()
    opens = np.zeros(buys.height, dtype=bool)
    size = np.zeros(buys.height, dtype=np.uint32)
    head, busy_until = -1, 0
    for i in range(buys.height):
        if head >= 0 and group[i] == group[head] and ts[i] < busy_until:
            size[head] += 1
            continue
        head, busy_until = i, end[i]
        opens[i], size[i] = True, 1
    return buys.with_columns(pl.Series("n_signals", size)).filter(pl.Series(opens))
