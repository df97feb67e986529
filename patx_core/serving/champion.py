"""The champion's life after promotion: reviewed on each night's outcomes, suspended by the
monitor, reinstated by a person, and what a suspension does to its signals.

A champion the monitor suspended issues no buy from the candle that decided the alarm on: each of
its signals of that candle or later is a "hold" whose reason names the suspension
(:func:`apply_suspension`, the one rule for the ledger and the latest signal). Signals it recorded
before that candle stay as they were (a recorded signal is never rewritten).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import polars as pl

from patx_core.evaluation.formatting import estimate
from patx_core.settings.grid import GridCell
from patx_core.storage.artifacts import atomic_write_json, read_json, sha256_file
from patx_core.storage.paths import VariantPaths

log = logging.getLogger(__name__)

SUSPENDED_PREFIX = "champion suspended"


def suspension_reason(suspension: Mapping[str, Any]) -> str:
    """The reason a held signal records: ``champion suspended: <the monitor's reason>``."""
    return f"{SUSPENDED_PREFIX}: {suspension['reason']}"


def apply_suspension(signal: str, reason: str | None, timestamp: datetime,
                     suspension: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """``(signal, reason)`` of a champion's candle at ``timestamp`` under ``suspension`` (the
    manifest's ``suspended`` block: ``reason`` and ``from``, the first candle held, an ISO string or
    a datetime; no ``from`` holds every candle); unchanged without a suspension or before it."""
    if suspension is None:
        return signal, reason
    start = suspension.get("from")
    if isinstance(start, str):
        start = datetime.fromisoformat(start)
    if start is not None and timestamp < start:
        return signal, reason
    return "hold", suspension_reason(suspension)


def as_recorded(lines: list[dict[str, Any]], rows: pl.DataFrame, sha256: str) -> list[dict[str, Any]]:
    """Each line as the champion's ledger row of its candle records it, where there is one: a candle
    scored while the champion was suspended stays a hold after a reinstatement (a recorded signal is
    never rewritten), and ``latest.json`` says the same as the ledger, with the reason."""
    from patx_core.serving.ledger import CHAMPION

    mine = rows.filter((pl.col("role") == CHAMPION) & (pl.col("model_sha256") == sha256))
    recorded = {(s, t.isoformat()): (sig, why) for s, t, sig, why in
                mine.select("symbol", "timestamp", "signal", "reason").iter_rows()}
    out = []
    for line in lines:
        sig, why = recorded.get((line["symbol"], line["timestamp"]), (line["signal"], line["reason"]))
        if sig != line["signal"]:
            line = {**line, "signal": sig,
                    "reason": f"as recorded in the ledger when this candle was scored ({why}); a recorded signal is "
                              "never rewritten"}
        out.append(line)
    return out


@dataclass
class LedgerState:
    """The ledger resolved against the store as it is now (in memory until ``signal_ledger`` writes it)."""

    ledger: Any  # patx_core.serving.ledger.Ledger
    universe: pl.DataFrame
    outcomes: dict[str, Any]
    seen_now: pl.DataFrame  # the store's candles the rows depend on, to keep beside the ledger
    resolved: int
    revisions: list[dict[str, Any]]
    manifest: dict[str, Any] | None
    monitor: Any  # MonitorResult | None


def champion_manifest(paths: VariantPaths) -> dict[str, Any] | None:
    if not (paths.champion_checkpoint.exists() and paths.champion_manifest.exists()):
        return None
    return read_json(paths.champion_manifest)


def monitor_stream(rows: pl.DataFrame, manifest: dict[str, Any]) -> pl.DataFrame:
    """The champion's out-of-sample resolved bets (:func:`patx_core.serving.ledger.bets`) in the
    order their outcomes were decided, from the last reinstatement on."""
    from patx_core.serving.ledger import CHAMPION, RESOLVED, bets, counted_rows

    mine = counted_rows(rows, CHAMPION).filter(pl.col("model_sha256") == manifest["checkpoint_sha256"])
    stream = bets(mine).filter(pl.col("status") == RESOLVED)
    restart = (manifest.get("reinstated") or {}).get("monitor_restarts_after")
    if restart:
        stream = stream.filter(pl.col("resolved_at") > datetime.fromisoformat(restart))
    return stream.sort("resolved_at", "timestamp", "symbol")


def champion_monitor(cell: GridCell, rows: pl.DataFrame, manifest: dict[str, Any] | None):
    """The monitor (:mod:`patx_core.serving.monitor`) over the champion's stream, or None without one."""
    from patx_core.serving.monitor import CusumDesign, run_cusum

    if manifest is None:
        return None
    design = CusumDesign.build(cell.variant.eval.target_precision, cell.variant.monitor)
    return run_cusum(monitor_stream(rows, manifest)["label"].to_numpy() == 1, design)


def review_champion(cell: GridCell, *, score: bool = True) -> LedgerState:
    """Resolve the ledger against the store, score the new candles (in memory), run the monitor and,
    when it decides, suspend the champion.

    ``latest_signal`` calls it before issuing tonight's signal and ``signal_ledger`` before
    writing, so the night the monitor suspends, no buy is issued. The suspension goes into the
    champion's manifest (its checkpoint stays) with ``from``, the candle its outcome was decided
    on: champion rows of later candles hold. Writes nothing else.
    """
    from patx_core.data.universe import read_universe
    from patx_core.evaluation.metrics import wilson_interval
    from patx_core.serving.ledger import (dependent_candles, find_revisions, merge_rows, probe_key, read_ledger,
                                          read_seen_candles, resolve_rows, score_rows, symbol_outcomes)
    from patx_core.serving.monitor import SUSPENDED, alarm_run

    paths, variant = cell.paths, cell.variant
    universe = read_universe(cell.input_files(), volume=cell.dataset.volume).frame
    outcomes = symbol_outcomes(universe, variant.labels)
    ledger = read_ledger(paths.ledger)
    seen = read_seen_candles(paths.ledger, ledger)
    revisions = find_revisions(seen, dependent_candles(universe, ledger.rows))
    if revisions:
        log.warning("%s: %d candle value(s) the ledger depends on were revised in the store (first: %s)",
                    cell.key, len(revisions), revisions[0])
    stored = ledger
    ledger, resolved = resolve_rows(ledger, outcomes, cost_bps=variant.backtest.cost_bps, revisions=revisions)
    manifest = champion_manifest(paths)
    if score:
        revised = sorted({rev["symbol"] for rev in revisions})
        # rows scored tonight whose outcome the store already decides (scored late) resolve at once
        for scorer in scorers(cell, manifest):
            # this model's rows of a revised symbol were scored from the old candles: never probed again
            mine = ledger.rows.filter((pl.col("role") == scorer.role) & (pl.col("model_sha256") == scorer.sha256)
                                      & pl.col("symbol").is_in(revised))
            stale = {probe_key(scorer.role, scorer.sha256, s): t.isoformat()
                     for s, t in mine.group_by("symbol").agg(pl.col("timestamp").max()).iter_rows()}
            ledger = dataclasses.replace(ledger, unprobed={**ledger.unprobed, **stale})
            new = score_rows(ledger, scorer, universe, outcomes, max_backfill=variant.monitor.max_backfill,
                             recorded_at=datetime.now(timezone.utc))
            ledger, _ = merge_rows(ledger, new)
        ledger, late = resolve_rows(ledger, outcomes, cost_bps=variant.backtest.cost_bps)
        resolved += late
    monitor = champion_monitor(cell, ledger.rows, manifest)
    if manifest is not None and monitor is not None and monitor.decision == SUSPENDED and not manifest.get("suspended"):
        stream = monitor_stream(ledger.rows, manifest)
        decided_at = stream["resolved_at"][monitor.alarm_index]
        hits, n = monitor.hits, monitor.n
        lo, hi = wilson_interval(hits, n, variant.eval.confidence)
        live = hits / n
        first, lost = alarm_run(monitor)
        run = monitor.alarm_index + 1 - first
        since = stream["timestamp"][first].date().isoformat()
        signals = int(stream.head(n)["n_signals"].sum())
        manifest["suspended"] = {
            "at": datetime.now(timezone.utc).isoformat(),
            # what fired first (the recent run), then the whole record, whose precision may look fine
            "reason": (f"{lost} of the last {run} bets lost since {since}; CUSUM {monitor.statistic:.1f} >= "
                       f"{monitor.threshold:.1f} (p0={variant.eval.target_precision}, p1={variant.monitor.p1}); whole "
                       f"record: live precision {estimate(live, (lo, hi))} on {n} resolved bets ({signals} buy "
                       "signals)"),
            "statistic": monitor.statistic, "threshold": monitor.threshold, "live_precision": live, "n": n,
            "live_precision_ci": [lo, hi], "from": decided_at.isoformat(),
            "run": {"bets": run, "lost": lost, "since": stream["timestamp"][first].isoformat()}}
        atomic_write_json(paths.champion_manifest, manifest)
        ledger = dataclasses.replace(ledger, rows=hold_from(ledger.rows, stored.rows, manifest))
        log.warning("%s: champion suspended: %s", cell.key, manifest["suspended"]["reason"])
    return LedgerState(ledger, universe, outcomes, dependent_candles(universe, ledger.rows), resolved, revisions,
                       manifest, monitor)


def hold_from(rows: pl.DataFrame, stored: pl.DataFrame, manifest: dict[str, Any]) -> pl.DataFrame:
    """The champion's rows not yet written, from the suspension's candle on, turned into holds."""
    from patx_core.serving.ledger import CHAMPION, KEY

    fresh = rows.join(stored.select(*KEY).with_columns(pl.lit(False).alias("_fresh")), on=list(KEY), how="left",
                      maintain_order="left")["_fresh"].fill_null(True)
    mine = fresh & (rows["role"] == CHAMPION) & (rows["model_sha256"] == manifest["checkpoint_sha256"])
    decided = [apply_suspension(sig, why, t, manifest["suspended"]) if own else (sig, why)
               for own, sig, why, t in zip(mine, rows["signal"], rows["reason"], rows["timestamp"])]
    return rows.with_columns(pl.Series("signal", [d[0] for d in decided], dtype=rows["signal"].dtype),
                             pl.Series("reason", [d[1] for d in decided], dtype=rows["reason"].dtype))


def scorers(cell: GridCell, manifest: dict[str, Any] | None) -> list[Any]:
    """The champion (when there is one) and the shadow (the cell's latest trained checkpoint)."""
    from patx_core.serving.ledger import CHAMPION, SHADOW, Scorer
    from patx_core.serving.predict import recorded_threshold
    from patx_core.model.checkpoint import load_checkpoint

    paths = cell.paths
    out = []
    if manifest is not None:
        threshold, why = recorded_threshold(manifest, str(paths.champion_manifest))
        sus = manifest.get("suspended")
        out.append(Scorer(CHAMPION, manifest["checkpoint_sha256"], load_checkpoint(paths.champion_checkpoint),
                          threshold, why, datetime.fromisoformat(manifest["data"]["last_timestamp"]),
                          suspended=sus["reason"] if sus else None,
                          suspended_from=datetime.fromisoformat(sus["from"]) if sus and sus.get("from") else None))
    if paths.checkpoint.exists():
        sha = sha256_file(paths.checkpoint)
        evaluation = read_json(paths.evaluation_json) if paths.evaluation_json.exists() else {}
        if evaluation.get("checkpoint_sha256") == sha:
            threshold, why = recorded_threshold(evaluation, str(paths.evaluation_json))
            data_end = evaluation["dataset"]["last_timestamp"]
        else:
            threshold, why = None, f"{paths.checkpoint} has no evaluation yet: its signals hold"
            data_end = cell.input_info()["last_timestamp"]
        out.append(Scorer(SHADOW, sha, load_checkpoint(paths.checkpoint), threshold, why,
                          datetime.fromisoformat(data_end)))
    return out


def reinstate_champion(cell: GridCell, reason: str) -> dict[str, Any]:
    """Lift a suspension by hand: recorded in the manifest; the monitor restarts from zero on the
    outcomes decided after the newest one it had read. Ledger rows are never rewritten."""
    from patx_core.serving.ledger import read_ledger

    paths = cell.paths
    if not reason.strip():
        raise ValueError("reinstating needs a --reason saying why the champion may signal again")
    manifest = champion_manifest(paths)
    if manifest is None:
        raise RuntimeError(f"{cell.key} has no champion ({paths.champion_manifest} is missing): nothing to reinstate")
    if not manifest.get("suspended"):
        raise RuntimeError(f"the champion of {cell.key} is not suspended: nothing to reinstate")
    stream = monitor_stream(read_ledger(paths.ledger).rows, manifest)
    # After every outcome the monitor read: the ledger's newest, and at least the alarm's own
    # (``from``), which a run killed between the suspension and the ledger write never recorded.
    sus_from = manifest["suspended"].get("from")
    read = [t for t in (stream["resolved_at"].max() if stream.height else None,
                        datetime.fromisoformat(sus_from) if sus_from else None) if t is not None]
    restart = max(read) if read else None
    previous = (manifest.get("reinstated") or {}).get("monitor_restarts_after")
    entry = {"at": datetime.now(timezone.utc).isoformat(), "reason": reason.strip(),
             "suspension": manifest.pop("suspended"),
             "monitor_restarts_after": restart.isoformat() if restart is not None else previous}
    manifest["reinstated"] = entry
    manifest.setdefault("reinstatements", []).append(entry)
    atomic_write_json(paths.champion_manifest, manifest)
    log.info("%s: champion reinstated: %s", cell.key, reason)
    return manifest
