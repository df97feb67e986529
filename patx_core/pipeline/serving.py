"""After evaluation: promotion behind both gates, the latest signal, the ledger and the track record."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import polars as pl

from patx_core.evaluation.formatting import estimate
from patx_core.storage.artifacts import atomic_copy, atomic_write_json, read_json, sha256_file
from patx_core.storage.jsonsafe import iso, json_safe
from patx_core.settings.grid import GridCell
from patx_core.data.universe import SYMBOL
from patx_core.serving.champion import (apply_suspension, as_recorded, champion_manifest, review_champion,
                                       suspension_reason)
from patx_core.pipeline.step import CheckOutcome, StepResult
from patx_core.pipeline.evaluation import code_version

log = logging.getLogger(__name__)


def promote_champion(cell: GridCell) -> StepResult:
    """Copy the checkpoint to ``models/<variant>/`` with a manifest — only behind this evaluation's
    passed gate, only if that evaluation judged this very checkpoint (by sha256), and never over
    a suspended champion: the current one is first reviewed on tonight's outcomes
    (:func:`review_champion`), so the monitor's decision comes before any replacement.

    A refusal is an ordinary outcome, not an error: the step succeeds with ``promoted: false``
    and the reason, and an earlier champion stays byte-identical.
    """
    variant, paths = cell.variant, cell.paths
    evaluation = read_json(paths.evaluation_json)
    gate = evaluation["checks"]["precision_gate"]
    selection = evaluation["checks"].get("precision_gate_selection")
    checkpoint_sha = sha256_file(paths.checkpoint)
    refusal = None
    previous = champion_manifest(paths)
    if previous is not None and not previous.get("suspended"):
        # Tonight's outcomes judge the current champion before anything replaces it: one that
        # stopped working is suspended and named here, not overwritten by a retrain unnoticed.
        previous = review_champion(cell).manifest or previous
    if previous is not None and previous.get("suspended"):
        sus = previous["suspended"]
        refusal = (f"champion suspended at {sus['at']} ({sus['reason']}); no model is promoted in {cell.key} until "
                   f"a person reinstates it: patx ledger reinstate {cell.dataset.name} {variant.name} --reason TEXT")
    elif not gate["passed"]:
        refusal = f"precision gate failed: {gate['reason']}"
    elif selection is None:
        refusal = (f"{paths.evaluation_json} has no selection gate (it was written before looks were counted); "
                   "re-materialize evaluation_report")
    elif not selection["passed"]:
        refusal = f"selection gate failed: {selection['reason']}"
    elif evaluation.get("checkpoint_sha256") != checkpoint_sha:
        refusal = (f"{paths.checkpoint} changed since it was evaluated (sha256 "
                   f"{str(evaluation.get('checkpoint_sha256'))[:12]} evaluated, {checkpoint_sha[:12]} now)")
    if refusal is not None:
        kept = paths.champion_checkpoint.exists()
        reason = f"{refusal}; {'the earlier champion stays' if kept else 'there is no champion yet'}"
        log.info("%s: not promoted: %s", cell.key, reason)
        return StepResult(value=None, metadata={"promoted": False, "reason": reason,
                                                "champion": str(paths.champion_checkpoint) if kept else None})
    manifest = {
        "dataset": cell.dataset.name,
        "variant": variant.name,
        "promoted_at": datetime.now(timezone.utc).isoformat(),
        "checkpoint_sha256": checkpoint_sha,
        "data": evaluation["dataset"],
        "splits": evaluation["splits"],
        "metrics": evaluation["metrics"],
        "threshold": evaluation["threshold"],
        "precision_gate": gate,
        "precision_gate_selection": selection,
        "variant_config": variant.to_dict(),
        "code_version": code_version(),
    }
    if previous is not None and previous.get("checkpoint_sha256") == checkpoint_sha and previous.get("reinstated"):
        # the same model promoted again keeps its history: the monitor restarts where it was reinstated
        manifest["reinstated"] = previous["reinstated"]
    atomic_copy(paths.checkpoint, paths.champion_checkpoint)
    atomic_write_json(paths.champion_manifest, manifest)
    meta = {"promoted": True, "reason": f"{gate['reason']}; {selection['reason']}",
            "champion": str(paths.champion_checkpoint),
            "threshold": manifest["threshold"]["value"], "gate_precision": gate["precision"],
            "gate_signals": gate["n_signals"], "checkpoint_sha256": checkpoint_sha}
    return StepResult(value=manifest, metadata=meta)


def latest_signal(cell: GridCell) -> StepResult:
    """Score the newest candle of every symbol with the current champion → ``signals/<variant>/latest.json``.

    Runs in every retrain: with no champion (its gate never passed) each symbol's line is
    ``"signal": "hold"`` with ``"reason": "no champion"``, so yesterday's signal never stands.
    """
    from patx_core.serving.predict import predict_universe, recorded_threshold
    from patx_core.data.universe import read_universe

    paths = cell.paths
    universe = read_universe(cell.input_files(), volume=cell.dataset.volume).frame
    newest = universe.group_by(SYMBOL, maintain_order=True).agg(pl.col("timestamp").max())
    model: dict[str, Any] | None = None
    if not paths.champion_checkpoint.exists() or not paths.champion_manifest.exists():
        lines = [{"symbol": s, "timestamp": iso(t), "probability": None, "threshold": None, "signal": "hold",
                  "reason": "no champion"} for s, t in newest.iter_rows()]
    else:
        manifest = read_json(paths.champion_manifest)
        if sha256_file(paths.champion_checkpoint) != manifest["checkpoint_sha256"]:
            raise RuntimeError(f"{paths.champion_checkpoint} does not match {paths.champion_manifest} (a promotion "
                               "was interrupted between the two files); re-run champion_model")
        from patx_core.model.checkpoint import load_checkpoint

        # Resolution and the monitor's decision come before tonight's signal: the night the
        # champion is suspended, it issues no buy.
        state = review_champion(cell)
        manifest = state.manifest or manifest
        threshold, reason = recorded_threshold(manifest, str(paths.champion_manifest))
        lines = predict_universe(load_checkpoint(paths.champion_checkpoint), universe, last=1,
                                 threshold=threshold, hold_reason=reason)
        if manifest.get("suspended"):
            # Tonight the champion is suspended: every symbol's newest candle holds, whatever its
            # date (a symbol that stopped trading before the alarm included), so no "from" here.
            tonight = {**manifest["suspended"], "from": None}
            lines = [dict(line, **dict(zip(("signal", "reason"), apply_suspension(
                line["signal"], line["reason"], datetime.fromisoformat(line["timestamp"]), tonight))))
                for line in lines]
        lines = as_recorded(lines, state.ledger.rows, manifest["checkpoint_sha256"])
        model = {k: manifest.get(k) for k in ("promoted_at", "checkpoint_sha256", "threshold", "code_version",
                                              "precision_gate", "suspended")}
    reason = None if model else "no champion"
    if model and model.get("suspended"):
        reason = suspension_reason(model["suspended"])
    signal = {"dataset": cell.dataset.name, "variant": cell.variant.name,
              "generated_at": datetime.now(timezone.utc).isoformat(), "model": model,
              "reason": reason, "signals": lines}
    atomic_write_json(paths.signal_json, signal)
    meta = {"champion": model is not None, "reason": signal["reason"], "path": str(paths.signal_json),
            "signals": {line["symbol"]: line["signal"] for line in lines},
            "newest_candle": {line["symbol"]: line["timestamp"] for line in lines}}
    return StepResult(value=signal, metadata=meta)


# ------------------------------------------------------------------------ ledger and monitor


def signal_ledger(cell: GridCell) -> StepResult:
    """``<dataset>/ledger/<variant>/signals.parquet``, as :func:`review_champion` computes it.

    Open rows are resolved from the store, every candle newer than each (symbol, model, role)'s
    last row is scored (at most ``monitor.max_backfill``), and the monitor decides on the
    champion. Nothing new: nothing is written, the file stays byte-identical. The whole
    read-resolve-score-publish holds the cell's ledger lock: two runs of one cell (a score run
    and the nightly retrain, two sensor ticks) take turns instead of the last one's file winning.
    """
    from patx_core.serving.ledger import LOCK_TIMEOUT_S, LedgerIntegrityError
    from patx_core.storage.locks import exclusive

    lock = cell.paths.ledger_lock
    with exclusive(lock, timeout_s=LOCK_TIMEOUT_S, what=f"{cell.key} ledger",
                   busy=lambda t: LedgerIntegrityError(
                       f"{cell.key}: another run has held {lock} for over {t:g} s (a score or retrain of the same "
                       "cell writing its ledger); nothing was written: run again when it has finished")):
        return _signal_ledger_locked(cell)


def _signal_ledger_locked(cell: GridCell) -> StepResult:
    from patx_core.serving.ledger import dependent_candles, read_ledger, read_seen_candles, write_ledger

    paths = cell.paths
    state = review_champion(cell, score=True)
    ledger = state.ledger
    stored = read_ledger(paths.ledger)
    added = {role: int((ledger.rows["role"] == role).sum()) - int((stored.rows["role"] == role).sum())
             for role in ("champion", "shadow")}
    seen = dependent_candles(state.universe, ledger.rows)
    old_seen = read_seen_candles(paths.ledger, stored)
    changed = bool(sum(added.values()) or state.resolved or ledger.revisions != stored.revisions
                   or ledger.unprobed != stored.unprobed or not paths.ledger.exists()
                   or old_seen is None or not old_seen.equals(seen))
    changed = changed and not ledger.rows.is_empty()
    if changed:
        # rows and the candles they were resolved from, committed by one rename
        ledger = write_ledger(paths.ledger, ledger, seen)
    rows = ledger.rows
    meta = {"path": str(paths.ledger), "rows": rows.height, "added": added, "resolved": state.resolved,
            "open": int((rows["status"] == "open").sum()), "revisions": len(state.revisions), "written": changed,
            "champion": state.manifest is not None,
            "suspended": bool(state.manifest and state.manifest.get("suspended"))}
    return StepResult(value=rows, metadata=meta)


def track_record(cell: GridCell) -> StepResult:
    """``track_record.json`` + ``.md`` + plots from the ledger; the check ``track_record_live_precision``."""
    from patx_core.evaluation.figures import write_figures
    from patx_core.serving import track_record as tr
    from patx_core.serving.ledger import CHAMPION, counted_rows
    from patx_core.serving.monitor import SUSPENDED
    from patx_core.storage.artifacts import atomic_write_text

    paths, variant = cell.paths, cell.variant
    state = review_champion(cell, score=False)
    rows = state.ledger.rows
    record = tr.build_track_record(rows, state.outcomes, cost_bps=variant.backtest.cost_bps,
                                   confidence=variant.eval.confidence, manifest=state.manifest,
                                   monitor=state.monitor, revisions=state.ledger.revisions, cell_key=cell.key,
                                   generated_at=datetime.now(timezone.utc).isoformat())
    champ_rows = counted_rows(rows, CHAMPION)
    if state.manifest is not None:
        champ_rows = champ_rows.filter(pl.col("model_sha256") == state.manifest["checkpoint_sha256"])
    role_rows = champ_rows if state.manifest is not None else counted_rows(rows, "shadow")
    figures = [
        ("live_precision.png", "Cumulative live precision",
         tr.plot_precision(role_rows, target=variant.eval.target_precision,
                           backtest_ci=record["roles"][CHAMPION].get("backtest_ci"), confidence=variant.eval.confidence,
                           events=tr.monitor_events(state.manifest))),
        ("live_equity.png", "Live equity against buy-and-hold",
         tr.plot_equity(role_rows, state.outcomes, variant.backtest.cost_bps)),
        ("monitor.png", "Monitor statistic", tr.plot_monitor(state.monitor)),
    ]
    on_disk, inline = write_figures(paths.ledger_dir, figures)
    atomic_write_json(paths.track_record_json, json_safe(record))
    atomic_write_text(paths.track_record_md, tr.render_markdown(record, on_disk))
    champ = record["roles"][CHAMPION]
    suspended = bool(state.manifest and state.manifest.get("suspended")) or (
        state.monitor is not None and state.monitor.decision == SUSPENDED)
    mon = record["monitor"] or {}
    lo, hi = champ["precision_ci"]
    check_meta = {"statistic": mon.get("statistic"), "threshold": mon.get("threshold"),
                  "live_precision": champ["precision"], "live_precision_ci": [lo, hi], "n": champ["n_bets_resolved"],
                  "decision": mon.get("decision", "no champion")}
    desc = ("no champion: nothing to monitor" if state.manifest is None else
            f"monitor {check_meta['decision']}: CUSUM {mon.get('statistic', 0):.1f} / {mon.get('threshold', 0):.1f}; "
            f"live precision {estimate(champ['precision'], (lo, hi))} on {champ['n_bets_resolved']} bets")
    check = CheckOutcome("track_record_live_precision", not suspended, check_meta, desc)
    meta = {"path": str(paths.track_record_json), "champion": state.manifest is not None,
            "monitor": check_meta["decision"],
            **{f"{role}_{k}": record["roles"][role][k] for role in record["roles"]
               for k in ("n_scored", "n_signals", "n_bets", "n_bets_resolved", "precision")}}
    return StepResult(value=record, metadata=meta, checks=[check], markdown=tr.render_markdown(record, inline))
