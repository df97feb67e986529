"""The track record: what the ledger's out-of-sample rows say, per role, against the backtest.

``track_record.json`` (:func:`build_track_record`) holds, per role (``champion``, ``shadow``),
over the rows :func:`patx_core.serving.ledger.counted_rows` counts:

- ``n_scored`` (out-of-sample rows), ``n_signals`` (buys among them), ``n_resolved`` / ``n_open``
  (resolved and still open buys);
- ``n_bets`` / ``n_bets_resolved`` / ``n_bets_open``: the buys de-clustered into bets
  (:func:`patx_core.serving.ledger.bets`: per symbol, a buy issued while an earlier counted buy
  is still open joins that bet), and ``precision`` (``hits`` / resolved bets) with its Wilson
  ``precision_ci``: the figure the report, the leaderboard and the monitor lead with, since one
  price move resolves a whole cluster of overlapping buys at once and the buys are not
  independent observations; ``signal_precision`` / ``signal_precision_ci`` (``signal_hits`` /
  resolved buys) are the same per buy, for comparison with the gate's per-signal figures;
  ``base_rate`` (positives among every resolved scored row) and ``lift`` (bet precision over it);
- ``strategy_return``: the resolved bets traded as their barrier outcomes after costs (one
  position at a time per symbol, as in the backtest), equal-weighted over symbols;
  ``buy_and_hold_return`` over the same candles with one round trip;
- ``forward``: the same figures over the ``forward`` rows only (signals scored before anything
  about their outcome could be known);
- ``n_in_sample`` and ``in_sample_until``: the rows recorded on or before the newest candle their
  model trained on (``model_data_end``), which no figure counts, and the latest such candle; a
  model scored on its own history (the first night after a retrain) records only these;
- for the champion, its gate's figures (``backtest_precision``, ``backtest_ci``) and
  ``consistent_with_backtest`` (the two intervals overlap), and the monitor's state.
"""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from patx_core.evaluation.backtest import round_trip_factor
from patx_core.evaluation.formatting import estimate, num, pct
from patx_core.evaluation.metrics import wilson_interval
from patx_core.serving.ledger import CHAMPION, RESOLVED, SHADOW, SymbolOutcomes, bets, counted_rows
from patx_core.serving.monitor import MonitorResult
from patx_core.storage.jsonsafe import iso

ROLES = (CHAMPION, SHADOW)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _taken_trades(rows: pl.DataFrame) -> dict[str, list[tuple[Any, float]]]:
    """Per symbol, the resolved bets (:func:`patx_core.serving.ledger.bets`: a buy inside an open
    trade joins it, as in the backtest): ``(resolved_at, trade_return)`` in time order."""
    taken: dict[str, list[tuple[Any, float]]] = {}
    resolved = bets(rows).filter(pl.col("status") == RESOLVED)
    for (symbol,), part in resolved.sort("timestamp").group_by("symbol", maintain_order=True):
        taken[str(symbol)] = list(part.select("resolved_at", "trade_return").iter_rows())
    return taken


def _returns(rows: pl.DataFrame, outcomes: Mapping[str, SymbolOutcomes], cost_bps: float) -> tuple[float | None,
                                                                                                    float | None]:
    taken = _taken_trades(rows)
    if not taken:
        return None, None
    keep = round_trip_factor(cost_bps)
    strategy, market = [], []
    for symbol, trades in taken.items():
        strategy.append(float(np.prod([1.0 + r for _, r in trades])) - 1.0)
        oc = outcomes.get(symbol)
        if oc is not None:
            mine = rows.filter(pl.col("symbol") == symbol)
            last = mine.filter((pl.col("signal") == "buy") & (pl.col("status") == RESOLVED))["resolved_at"].max()
            i, j = oc.index_of(pl.Series([mine["timestamp"].min(), last]))
            if i >= 0 and j >= 0:
                market.append(float(oc.close[j] / oc.close[i] * keep - 1.0))
    return float(np.mean(strategy)), (float(np.mean(market)) if market else None)


def live_equity(rows: pl.DataFrame) -> tuple[list[Any], np.ndarray]:
    """The growth of 1 that ``strategy_return`` ends at: each symbol's taken trades compounded,
    equal-weighted over symbols, at every trade's ``resolved_at``."""
    taken = _taken_trades(rows)
    times = sorted({end for trades in taken.values() for end, _ in trades})
    curves = []
    for trades in taken.values():
        ends = [end for end, _ in trades]
        growth = np.cumprod([1.0 + r for _, r in trades])
        done = np.searchsorted(np.array(ends, dtype=object), np.array(times, dtype=object), side="right")
        curves.append(np.where(done > 0, growth[np.maximum(done - 1, 0)], 1.0))
    return times, (np.mean(np.vstack(curves), axis=0) if curves else np.zeros(0))


def role_figures(rows: pl.DataFrame, outcomes: Mapping[str, SymbolOutcomes], *, cost_bps: float,
                 confidence: float) -> dict[str, Any]:
    """The figures of one role's counted rows (see the module docstring)."""
    buys = rows.filter(pl.col("signal") == "buy")
    resolved = buys.filter(pl.col("status") == RESOLVED)
    signal_hits = int(resolved["label"].sum() or 0)
    placed = bets(rows)
    settled = placed.filter(pl.col("status") == RESOLVED)
    hits = int(settled["label"].sum() or 0)
    all_resolved = rows.filter(pl.col("status") == RESOLVED)
    base = float(all_resolved["label"].mean()) if all_resolved.height else None
    precision = hits / settled.height if settled.height else None
    strategy, bh = _returns(rows, outcomes, cost_bps)
    return {"n_scored": rows.height, "n_signals": buys.height, "n_resolved": resolved.height,
            "n_open": buys.height - resolved.height, "n_bets": placed.height, "n_bets_resolved": settled.height,
            "n_bets_open": placed.height - settled.height, "hits": hits, "precision": precision,
            "precision_ci": list(wilson_interval(hits, settled.height, confidence)),
            "signal_hits": signal_hits,
            "signal_precision": signal_hits / resolved.height if resolved.height else None,
            "signal_precision_ci": list(wilson_interval(signal_hits, resolved.height, confidence)),
            "base_rate": base, "lift": _ratio(precision, base),
            "strategy_return": strategy, "buy_and_hold_return": bh}


def build_track_record(ledger_rows: pl.DataFrame, outcomes: Mapping[str, SymbolOutcomes], *,
                       cost_bps: float, confidence: float, manifest: Mapping[str, Any] | None,
                       monitor: MonitorResult | None, revisions: list[dict[str, Any]],
                       cell_key: str, generated_at: str) -> dict[str, Any]:
    """The ``track_record.json`` body."""
    roles: dict[str, Any] = {}
    for role in ROLES:
        rows = counted_rows(ledger_rows, role)
        if role == CHAMPION and manifest is not None:
            rows = rows.filter(pl.col("model_sha256") == manifest["checkpoint_sha256"])
        figures = role_figures(rows, outcomes, cost_bps=cost_bps, confidence=confidence)
        figures["forward"] = role_figures(rows.filter(pl.col("forward")), outcomes, cost_bps=cost_bps,
                                          confidence=confidence)
        figures["models"] = rows["model_sha256"].unique(maintain_order=True).to_list()
        in_sample = ledger_rows.filter((pl.col("role") == role) & ~pl.col("out_of_sample"))
        if role == CHAMPION and manifest is not None:
            in_sample = in_sample.filter(pl.col("model_sha256") == manifest["checkpoint_sha256"])
        figures["n_in_sample"] = in_sample.height
        figures["in_sample_until"] = iso(in_sample["model_data_end"].max()) if in_sample.height else None
        roles[role] = figures
    champ = roles[CHAMPION]
    if manifest is not None:
        gate = manifest.get("precision_gate") or {}
        lo, hi = gate.get("precision_ci95") or [None, None]
        champ["backtest_precision"] = gate.get("precision")
        champ["backtest_ci"] = [lo, hi]
        live_lo, live_hi = champ["precision_ci"]
        champ["consistent_with_backtest"] = (None if champ["n_bets_resolved"] == 0 or lo is None
                                             else bool(live_lo <= hi and lo <= live_hi))
        champ["checkpoint_sha256"] = manifest["checkpoint_sha256"]
        champ["suspended"] = manifest.get("suspended")
        champ["reinstatements"] = manifest.get("reinstatements", [])
    mon = None
    if monitor is not None:
        mon = {"decision": monitor.decision, "statistic": monitor.statistic, "threshold": monitor.threshold,
               "n": monitor.n, "hits": monitor.hits, "path": [float(x) for x in monitor.path]}
    return {"cell": cell_key, "generated_at": generated_at, "champion_present": manifest is not None,
            "roles": roles, "monitor": mon, "revisions_after_resolution": revisions}


def render_markdown(record: Mapping[str, Any], images: list[tuple[str, str]]) -> str:
    lines = [f"# Track record — {record['cell']}", "",
             "Live figures count out-of-sample rows only (candles after the newest one the model trained on); "
             "`forward` rows were scored before anything about their outcome was known.", ""]
    mon = record.get("monitor")
    if mon is not None:
        lines += [f"**Monitor: {mon['decision']}** — CUSUM statistic {mon['statistic']:.1f} against threshold "
                  f"{mon['threshold']:.1f} after {mon['n']} resolved bet(s).", ""]
    elif not record["champion_present"]:
        lines += ["No champion in this cell: only the shadow (the latest trained checkpoint) builds a record.", ""]
    lines += ["A bet is a buy together with the buys of the same symbol issued while it was open (one position at "
              "a time, as in the backtest): one price move resolves them all, so the precision and its interval "
              "count bets; the per-signal precision is shown beside it.", "",
              "| role | rows | scored | signals | bets | resolved bets | open bets | precision [95 % CI] (bets) | "
              "per signal | base rate | lift | strategy | buy-and-hold |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for role, fig in record["roles"].items():
        for label, f in (("all out-of-sample", fig), ("forward only", fig["forward"])):
            lo, hi = f["precision_ci"]
            lines.append(f"| {role} | {label} | {f['n_scored']} | {f['n_signals']} | {f['n_bets']} | "
                         f"{f['n_bets_resolved']} | {f['n_bets_open']} | {estimate(f['precision'], (lo, hi))} | "
                         f"{num(f['signal_precision'])} on {f['n_resolved']} | {num(f['base_rate'])} | "
                         f"{num(f['lift'], 2)} | {pct(f['strategy_return'], 2, signed=True)} | "
                         f"{pct(f['buy_and_hold_return'], 2, signed=True)} |")
    for role, fig in record["roles"].items():
        if fig.get("n_in_sample"):
            lines += ["", f"{role}: {fig['n_in_sample']} recorded row(s) fall on or before "
                          f"{fig['in_sample_until'][:10]}, the newest candle their model trained on: in sample, "
                          "so not counted; the live figures start with the candles after it."]
    champ = record["roles"][CHAMPION]
    if "backtest_precision" in champ:
        lo, hi = champ["backtest_ci"]
        lines += ["", f"Backtest (gate) precision {num(champ['backtest_precision'])} [{num(lo)}, {num(hi)}]; "
                      f"consistent with the live record: {champ['consistent_with_backtest']}."]
        for r in champ.get("reinstatements", []):
            lifted = r["suspension"]
            lines += ["", f"Suspended from the outcome of {lifted.get('from', '?')[:10]} ({lifted['reason']}); "
                          f"**reinstated** at {r['at'][:19]} by hand: {r['reason']}. The monitor restarted on the "
                          f"outcomes decided after {(r.get('monitor_restarts_after') or '?')[:10]}."]
        if champ.get("suspended"):
            s = champ["suspended"]
            lines += ["", f"**Suspended** at {s['at'][:19]} (from the outcome of {s.get('from', '?')[:10]}): "
                          f"{s['reason']}. Undo with `patx ledger reinstate DATASET VARIANT --reason TEXT`."]
    if record["revisions_after_resolution"]:
        lines += ["", f"{len(record['revisions_after_resolution'])} store revision(s) touched candles of rows "
                      "already resolved; those rows keep their recorded outcome (listed in track_record.json)."]
    lines.append("")
    for caption, link in images:
        lines += [f"![{caption}]({link})", ""]
    return "\n".join(lines)


def _legend(ax: Any, where: str) -> None:
    # an empty record (no resolved signal yet) draws empty axes rather than an empty legend box
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=where, fontsize=7)


def monitor_events(manifest: Mapping[str, Any] | None) -> list[tuple[datetime, str]]:
    """The champion's suspensions and reinstatements on the data's clock, oldest first: a suspension
    at the candle whose outcome raised the alarm, a reinstatement where the monitor restarted."""
    if manifest is None:
        return []
    events = []
    for r in manifest.get("reinstatements", []):
        if r["suspension"].get("from"):
            events.append((datetime.fromisoformat(r["suspension"]["from"]), "suspended"))
        if r.get("monitor_restarts_after"):
            events.append((datetime.fromisoformat(r["monitor_restarts_after"]), "reinstated"))
    if (manifest.get("suspended") or {}).get("from"):
        events.append((datetime.fromisoformat(manifest["suspended"]["from"]), "suspended"))
    return sorted(events)


def plot_precision(rows: pl.DataFrame, *, target: float, backtest_ci: list[float | None] | None,
                   confidence: float, events: Sequence[tuple[datetime, str]] = ()) -> Figure:
    """Cumulative live precision over resolved bets (in resolved_at order) with its Wilson band, and
    ``events`` (:func:`monitor_events`) as vertical lines after the bets resolved by then."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    resolved = bets(rows).filter(pl.col("status") == RESOLVED).sort("resolved_at", "timestamp")
    if resolved.height:
        hits = np.cumsum(resolved["label"].to_numpy())
        n = np.arange(1, hits.size + 1)
        band = np.array([wilson_interval(int(h), int(k), confidence) for h, k in zip(hits, n)])
        ax.plot(n, hits / n, label="live precision")
        ax.fill_between(n, band[:, 0], band[:, 1], alpha=0.2, label="Wilson band")
    ends = resolved["resolved_at"].to_list()
    for when, what in events:
        x = bisect.bisect_right(ends, when)
        ax.axvline(x, color="black" if what == "suspended" else "green", linestyle=":",
                   label=f"{what} ({when.date().isoformat()})")
    if backtest_ci and backtest_ci[0] is not None:
        ax.axhspan(backtest_ci[0], backtest_ci[1], color="green", alpha=0.1, label="backtest interval")
    ax.axhline(target, color="red", linestyle="--", label=f"target {target}")
    ax.set_xlabel("resolved bets")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1)
    _legend(ax, "lower left")
    return fig


def plot_equity(rows: pl.DataFrame, outcomes: Mapping[str, SymbolOutcomes], cost_bps: float) -> Figure:
    """:func:`live_equity` against buy-and-hold of the same symbols."""
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    times, growth = live_equity(rows)
    if times:
        ax.step(times, growth, where="post", label="live signals (after costs)")
        keep = round_trip_factor(cost_bps)
        start = rows["timestamp"].min()
        curves = []
        traded = set(_taken_trades(rows))
        for symbol, oc in outcomes.items():
            if symbol not in traded:
                continue
            i = oc.index_of(pl.Series([start]))[0]
            j = oc.index_of(pl.Series(times))
            if i >= 0:
                curves.append(np.where(j >= 0, oc.close[np.maximum(j, 0)] / oc.close[i] * keep, np.nan))
        if curves:
            ax.plot(times, np.nanmean(np.vstack(curves), axis=0), label="buy-and-hold")
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.set_ylabel("growth of 1")
    _legend(ax, "upper left")
    return fig


def plot_monitor(monitor: MonitorResult | None) -> Figure:
    fig = Figure(figsize=(7, 2.8))
    ax = fig.add_subplot()
    if monitor is not None:
        ax.plot(np.arange(1, monitor.path.size + 1), monitor.path, drawstyle="steps-post", label="CUSUM statistic")
        ax.axhline(monitor.threshold, color="red", linestyle="--", label=f"suspend at {monitor.threshold:.1f}")
    ax.set_xlabel("resolved champion bets")
    _legend(ax, "upper left")
    return fig
