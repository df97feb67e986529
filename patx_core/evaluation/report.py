"""A report a trader can judge at a glance: report.md (with the PNGs of
:mod:`patx_core.evaluation.figures`), and the variant leaderboard.

The markdown's first line names the verdict and the diagnosis codes (how the model failed),
then comes the verdict sentence (gate passed/failed and why, lift over the base rate, strategy
vs buy-and-hold vs random entries), one line per diagnosis, and a table of headline metrics
where every precision carries its interval and signal count. An abstaining model's best
operating point appears only in a section headed *Diagnostics*, apart from everything that
describes what the model does. On disk, report.md links the PNGs by
relative name; ``write_report`` returns the same markdown with the images inlined as base64
data URIs, for the Dagster UI (``MetadataValue.md``), which cannot read local files.
"""

from __future__ import annotations

import logging
from typing import Any, Collection, Mapping, Sequence

import polars as pl

from patx_core.evaluation.figures import (
    plot_backtest_equity,
    plot_calibration,
    plot_confusion,
    plot_precision_recall,
    plot_training,
    write_figures,
)
from patx_core.evaluation.formatting import estimate, interval, num, ordinal, pct
from patx_core.evaluation.record import SplitPredictions
from patx_core.evaluation.selection import selection_summary
from patx_core.storage.artifacts import PathLike, as_path, atomic_write_text

log = logging.getLogger(__name__)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------- markdown

def title_line(evaluation: Mapping[str, Any]) -> str:
    """The report's first line: dataset | variant, gate verdict and the diagnosis codes (or "none")."""
    gate = evaluation["checks"]["precision_gate"]
    codes = [d["code"] for d in evaluation.get("diagnosis", [])]
    name = evaluation["variant"]
    dataset = (evaluation.get("dataset") or {}).get("name")
    return (f"# {f'{dataset} | ' if dataset else ''}{name} — gate {'PASSED' if gate['passed'] else 'FAILED'} · "
            f"diagnosis: {', '.join(codes) if codes else 'none'}")


def verdict(evaluation: Mapping[str, Any]) -> str:
    """One line: gate passed/failed and why, lift, strategy vs buy-and-hold vs random."""
    gate, bt = evaluation["checks"]["precision_gate"], evaluation["backtest"]
    word = "PASSED" if gate["passed"] else "FAILED"
    lift = gate.get("lift")
    lift_txt = f"lift {lift:.2f}× over the base rate" if lift is not None else "no lift (no signals)"
    versus = (f"strategy {pct(bt['total_return'], signed=True)} vs buy-and-hold "
              f"{pct(bt['buy_and_hold_return'], signed=True)}")
    if not bt["trades"]:
        luck = f"no trades (buy-and-hold {pct(bt['buy_and_hold_return'], signed=True)})"
    elif bt["strategy_percentile"] is None:
        luck = (f"{versus}; no random-entry draw fit {bt['trades']} trades (the strategy is in the "
                f"market {pct(bt['exposure'], 0)} of the time), so only buy-and-hold compares")
    else:
        luck = (f"{versus}, {ordinal(bt['strategy_percentile'])} percentile of "
                f"{bt['random_baseline']['full_draws']} random-entry draws")
    return f"**Gate {word}** — {gate['reason']}. {lift_txt.capitalize()}; {luck}."


def selection_line(evaluation: Mapping[str, Any]) -> str | None:
    """The selection gate's line under the title: how many models were judged on this test window,
    the confidence left after paying for them, and why (None for an evaluation without the block);
    it follows the title (and the coverage line of a dataset with an untested symbol)."""
    block = evaluation["checks"].get("precision_gate_selection")
    if block is None:
        return None
    return f"**{_sentence(selection_summary(block))}** — {block['reason']}."


def _diagnosis_lines(evaluation: Mapping[str, Any]) -> list[str]:
    found = evaluation.get("diagnosis", [])
    if not found:
        return ["Diagnosis: no failure mode found."]
    return ["Diagnosis:", "", *[f"- `{d['code']}` — {d['explanation']}" for d in found]]


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    splits = list(metrics)

    def auc(m: Mapping[str, Any]) -> str:
        ci = m.get("roc_auc_ci95")
        return num(m["roc_auc"]) + ("" if ci is None else " " + interval(*ci))

    rows: list[tuple[str, Any]] = [
        ("precision [95 % CI]", lambda m: f"{num(m['precision'])} [{m['precision_ci95'][0]:.3f}, "
                                          f"{m['precision_ci95'][1]:.3f}]"),
        ("buy signals / samples", lambda m: f"{m['n_signals']} / {m['n_samples']}"),
        ("base rate", lambda m: num(m["base_rate"])),
        ("lift (precision / base rate)", lambda m: num(m["lift"], 2)),
        ("recall", lambda m: num(m["recall"])),
        ("F1", lambda m: num(m["f1"])),
        ("ROC-AUC [95 % DeLong CI]", auc),
        ("PR-AUC", lambda m: num(m["pr_auc"])),
        ("Brier", lambda m: num(m["brier"])),
        ("accuracy", lambda m: num(m["accuracy"])),
    ]
    out = ["| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    out += [f"| {name} | " + " | ".join(fmt(metrics[s]) for s in splits) + " |" for name, fmt in rows]
    return out


def _annualized(bt: Mapping[str, Any], value: str) -> str:
    """``value`` when the backtest was annualized, else the words saying why not."""
    if bt.get("annualized", True):
        return value
    return bt.get("annualization") or f"not annualized ({bt['split']} period {bt['period_days']:.0f} days)"


def _backtest_table(bt: Mapping[str, Any]) -> list[str]:
    rb = bt["random_baseline"]
    rows = [
        ("trades (signals before removing overlaps)", f"{bt['trades']} ({bt['n_signals']})"),
        ("hit rate (net return > 0)", pct(bt["hit_rate"])),
        ("total return", pct(bt["total_return"], signed=True)),
        ("annualized return", _annualized(bt, pct(bt["annualized_return"], signed=True))),
        ("Sharpe (annualized)", _annualized(bt, num(bt["sharpe"], 2))),
        ("max drawdown", pct(bt["max_drawdown"])),
        ("exposure (time in a trade)", pct(bt["exposure"])),
        ("buy-and-hold", pct(bt["buy_and_hold_return"], signed=True)),
        (f"random entries p5 / p50 / p95 ({rb['full_draws']} of {rb['draws']} draws fit "
         f"{bt['trades']} trades, seed {rb['seed']})",
         f"{pct(rb['p5'], signed=True)} / {pct(rb['p50'], signed=True)} / {pct(rb['p95'], signed=True)}"),
        ("strategy percentile among random", num(bt["strategy_percentile"], 1)),
        ("cost per side", f"{bt['cost_bps']:g} bps"),
    ]
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _splits_table(evaluation: Mapping[str, Any]) -> list[str]:
    out = ["| split | rows | sequences | start | end | positive rate |", "|---|---|---|---|---|---|"]
    for name, s in evaluation["splits"].items():
        out.append(f"| {name} | {s['rows']} | {s['sequences']} | {str(s['start'])[:10]} | "
                   f"{str(s['end'])[:10]} | {num(s['positive_rate'])} |")
    return out


def _threshold_lines(th: Mapping[str, Any]) -> list[str]:
    if th["value"] is None:
        return [f"**No threshold: the model abstains** — {th['explanation']}. It gives no signal on any split, "
                "so the backtest holds no trades; its best operating point is under *Diagnostics* below."]
    return [f"**Threshold {th['value']:.4f}** (target reachable on val): {th['explanation']}. Val precision at it "
            f"{num(th['val_precision'])} (lower bound {num(th['val_precision_lower'])}) on {th['n_signals']} "
            "signals."]


def _diagnostics_section(th: Mapping[str, Any]) -> list[str]:
    """The abstaining model's max-F1 val point, set apart from what the model does."""
    d = th.get("diagnostic")
    if d is None:
        return []
    return [
        "## Diagnostics — not used for signals, the backtest or promotion",
        "",
        "The model abstains. For diagnosis only, its best operating point on val (maximum F1):",
        "",
        "| | |",
        "|---|---|",
        f"| threshold (max-F1 on val) | {d['threshold']:.4f} |",
        f"| val precision (Wilson lower bound) | {num(d['val_precision'])} ({num(d['val_precision_lower'])}) |",
        f"| val signals | {d['n_signals']} |",
        f"| val F1 | {num(d['val_f1'])} |",
        "",
        "Trading this point would be trading a rule that failed the precision target on val.",
        "",
    ]


def coverage_line(evaluation: Mapping[str, Any]) -> str | None:
    """``Tested on 1 of 2 symbols: …`` when a symbol has no gate-split sample, else ``None``.

    Says that the verdict, metrics and buy-and-hold speak for the tested symbols only.
    """
    block = evaluation.get("per_symbol") or {}
    tested, untested = block.get("symbols") or {}, block.get("untested") or {}
    if not untested:
        return None
    why = "; ".join(f"{s}: {u['reason']}" for s, u in untested.items())
    return (f"**Tested on {len(tested)} of {len(tested) + len(untested)} symbols** ({', '.join(tested) or 'none'}): "
            f"the verdict, metrics and backtest (buy-and-hold too) cover these only. Not tested — {why}.")


def _symbols_table(evaluation: Mapping[str, Any]) -> list[str]:
    """Per-symbol gate-split figures and backtests, for a dataset of more than one symbol."""
    block = evaluation.get("per_symbol") or {}
    per, untested = block.get("symbols") or {}, block.get("untested") or {}
    if len(per) + len(untested) < 2:
        return []
    bts = evaluation["backtest"].get("per_symbol") or {}
    out = [f"## Per symbol — {block['split']} split",
           "",
           "| symbol | samples | signals | precision [95 % CI] | base rate | strategy | buy-and-hold |",
           "|---|---|---|---|---|---|---|"]
    for symbol, m in per.items():
        bt = bts.get(symbol, {})
        out.append(f"| {symbol} | {m['samples']} | {m['signals']} | {num(m['precision'])} "
                   f"{interval(*m['precision_ci95'])} | {num(m['base_rate'])} | "
                   f"{pct(bt.get('total_return'), signed=True)} | {pct(bt.get('buy_and_hold_return'), signed=True)} |")
    for symbol, u in untested.items():
        out.append(f"| {symbol} | 0 | — | not tested: {u['reason']} | — | — | — |")
    return out + ["", "The backtest above is the equal-weight portfolio of the tested symbols.", ""]


def _seeds_table(evaluation: Mapping[str, Any]) -> list[str]:
    """A seed study's per-seed gates (nothing for a single seed: the verdict above says it all)."""
    block = evaluation.get("seeds") or {}
    if block.get("n_seeds", 1) < 2:
        return []
    out = [f"## Seeds — {block['passed']} of {block['n_seeds']} pass the gate ({block['split']} split)",
           "",
           "The same model and data under each seed; "
           + (f"the champion candidate is the {block['n_seeds']}-seed ensemble (the mean of these models' "
              "probabilities), judged once as one model." if block.get("ensemble") else
              f"the champion candidate is seed {block['champion_seed']}'s, so promotion is judged on it alone."),
           "",
           "| seed | gate | precision [95 % CI] | signals | threshold | ROC AUC | best epoch |",
           "|---:|---|---|---:|---:|---:|---:|"]
    for r in block["per_seed"]:
        lo, hi = r["precision_ci95"]
        out.append(f"| {r['seed']} | {'pass' if r['passed'] else 'fail'} | {estimate(r['precision'], (lo, hi))} "
                   f"| {r['n_signals']} | {num(r['threshold'], 4)} | {num(r['roc_auc'])} | {r['best_epoch']} |")
    return out + [""]


def _dataset_line(dataset: Mapping[str, Any]) -> str:
    name = dataset.get("name")
    symbols = dataset.get("symbols") or []
    head = (f"Dataset `{name}` ({len(symbols)} symbol{'s' if len(symbols) != 1 else ''}, interval "
            f"{dataset.get('interval')}, sha256 {str(dataset.get('source_sha256'))[:12]}) from `{dataset['path']}`"
            if name else f"Dataset `{dataset['path']}`")
    return (f"{head}: {dataset['rows']} candles, {str(dataset['first_timestamp'])[:10]} → "
            f"{str(dataset['last_timestamp'])[:10]}.")


def render_markdown(evaluation: Mapping[str, Any], images: Sequence[tuple[str, str]]) -> str:
    """The report body; ``images`` is (caption, link) in display order."""
    th, tr, bt = evaluation["threshold"], evaluation["training"], evaluation["backtest"]
    f1 = evaluation["checks"]["f1"]
    coverage = coverage_line(evaluation)
    selection = selection_line(evaluation)
    lines = [
        title_line(evaluation),
        "",
        *([coverage, ""] if coverage else []),
        *([selection, ""] if selection else []),
        verdict(evaluation),
        "",
        *_diagnosis_lines(evaluation),
        "",
        *_metrics_table(evaluation["metrics"]),
        "",
        *_threshold_lines(th),
        "",
        f"F1 check ({f1['split']}, ≥ {f1['min_f1']:g}): {'passed' if f1['passed'] else 'failed'} "
        f"(F1 {num(f1['f1'])}).",
        "",
        f"## Backtest — {bt['split']} split, {str(bt['start'])[:10]} → {str(bt['end'])[:10]}",
        "",
        *([f"**{_sentence(bt['no_trades_reason'])}.**", ""] if bt.get("no_trades_reason") else []),
        *_backtest_table(bt),
        "",
        *_symbols_table(evaluation),
        *_seeds_table(evaluation),
        "## Plots",
        "",
    ]
    for caption, link in images:
        lines += [f"### {caption}", "", f"![{caption}]({link})", ""]
    lines += _diagnostics_section(th)
    lines += [
        "## Data and training",
        "",
        _dataset_line(evaluation["dataset"]),
        "",
        *_splits_table(evaluation),
        "",
        f"Training: {tr['epochs_run']} epochs, best epoch {tr['best_epoch']} (val loss "
        f"{num(tr.get('best_val_loss'), 4)}), {tr['seconds']:.1f} s on {tr['device']}, "
        f"{tr['params']:,} parameters, seed {tr['seed']}.",
        "",
    ]
    return "\n".join(lines)


def write_report(report_dir: PathLike, evaluation: Mapping[str, Any], *, history: Mapping[str, Any],
                 predictions: Mapping[str, SplitPredictions], equity: pl.DataFrame) -> str:
    """Write report.md and its PNGs into ``report_dir`` (atomically); return the inline markdown.

    ``evaluation`` is the evaluation.json body (``build_evaluation``), ``history`` the trainer's
    (train_loss/val_loss per epoch, best_epoch), ``predictions`` the val/test ``SplitPredictions``
    and ``equity`` the gate split's curve (``BacktestResult.equity``).
    """
    out_dir = as_path(report_dir)
    threshold = evaluation["threshold"]["value"]  # None: the model abstains
    diagnostic = evaluation["threshold"]["diagnostic"]
    target = float(evaluation["checks"]["precision_gate"]["min_precision"])
    figures = [
        ("training_curves.png", "Training curves", plot_training(history)),
        ("precision_recall.png", "Precision–recall",
         plot_precision_recall(predictions, threshold, target,
                               diagnostic=None if diagnostic is None else diagnostic["threshold"])),
        ("calibration.png", "Reliability", plot_calibration(predictions, threshold)),
        ("confusion.png", "Confusion matrices", plot_confusion(predictions, threshold)),
        ("equity.png", "Equity curve", plot_backtest_equity(equity, evaluation["backtest"])),
    ]
    on_disk, inline = write_figures(out_dir, figures)
    atomic_write_text(out_dir / "report.md", render_markdown(evaluation, on_disk))
    log.info("report for %s written to %s", evaluation["variant"], out_dir)
    return render_markdown(evaluation, inline)


# ---------------------------------------------------------------- leaderboard

def live_columns(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The leaderboard's live columns from a cell's ``track_record.json`` (the champion's, else the
    shadow's record; all None without one)."""
    if record is None:
        return {"live_role": None, "live_precision": None, "live_ci": None, "live_resolved": None, "monitor": None}
    role = "champion" if record.get("champion_present") else "shadow"
    figures = record["roles"][role]
    monitor = record.get("monitor") or {}
    # precision and interval are over resolved bets; a record written before bets were counted has
    # only its resolved signals
    resolved = figures.get("n_bets_resolved", figures["n_resolved"])
    return {"live_role": role, "live_precision": figures["precision"], "live_ci": figures["precision_ci"],
            "live_resolved": resolved, "monitor": monitor.get("decision", "no champion")}


def leaderboard_rows(evaluations: Mapping[str, Mapping[str, Any]],
                     live: Mapping[str, Mapping[str, Any]] | None = None,
                     outside_grid: Collection[str] = ()) -> list[dict[str, Any]]:
    """One flat row per (dataset, variant), gate passers first, then by the precision lower bound.

    ``live`` maps a cell key to its ``track_record.json`` body, for the cells that have one."""
    rows = []
    live = live or {}
    for key, ev in evaluations.items():
        gate, bt = ev["checks"]["precision_gate"], ev["backtest"]
        selection = ev["checks"].get("precision_gate_selection")  # absent from older evaluation.json
        m = ev["metrics"][gate["split"]]
        rows.append({
            "dataset": ev["dataset"].get("name", ""),
            "variant": ev.get("variant", key),
            "split": gate["split"],
            "precision": m["precision"],
            "precision_lo": m["precision_ci95"][0],
            "precision_hi": m["precision_ci95"][1],
            "signals": m["n_signals"],
            "lift": m["lift"],
            "f1": m["f1"],
            "roc_auc": m["roc_auc"],
            "strategy_return": bt["total_return"],
            "buy_and_hold_return": bt["buy_and_hold_return"],
            "random_percentile": bt["strategy_percentile"],
            "training_seconds": ev["training"]["seconds"],
            "n_looks": None if selection is None else selection["n_looks"],
            "selection_confidence": None if selection is None else selection["confidence"],
            "selection": None if selection is None else ("passed" if selection["passed"] else "failed"),
            "gate": "passed" if gate["passed"] else "failed",
            "diagnosis": [d["code"] for d in ev.get("diagnosis", [])],  # absent from older evaluation.json
            "in_grid": key not in outside_grid,
            **live_columns(live.get(key)),
        })
    # promotable first: both gates passed, then the literal gate alone, then by the lower bound
    rows.sort(key=lambda r: (r["gate"] != "passed", r["selection"] == "failed", -r["precision_lo"], r["dataset"],
                             r["variant"]))
    return rows


#: Marks a leaderboard row whose (dataset, variant) the current datasets/variants files no longer define.
OUTSIDE_GRID_MARK = "†"


def _live(row: Mapping[str, Any]) -> str:
    if row["live_role"] is None:
        return "n/a"
    lo, hi = row["live_ci"]
    return f"{estimate(row['live_precision'], (lo, hi))} ({row['live_role']})"


def _selection(row: Mapping[str, Any]) -> str:
    if row["selection"] is None:
        return "n/a"
    return f"{row['selection_confidence']:.2f} ({row['selection']})"


def write_leaderboard(evaluations: Mapping[str, Mapping[str, Any]], path: PathLike,
                      live: Mapping[str, Mapping[str, Any]] | None = None,
                      outside_grid: Collection[str] = ()) -> tuple[str, list[dict[str, Any]]]:
    """Write the leaderboard markdown to ``path`` (atomically); return it and its rows.

    ``evaluations`` maps a cell key (``dataset|variant``) → its evaluation.json body, only for
    the cells that have one; the keys in ``outside_grid`` are marked as not in the current grid.
    """
    rows = leaderboard_rows(evaluations, live, outside_grid)
    lines = [
        "# Leaderboard",
        "",
        "One row per (dataset, variant). Precision is on each variant's gate split (test; val for variants without one), with its "
        "Wilson 95 % interval. Random pct = the strategy's percentile among random-entry draws "
        "with as many trades (50 = luck). Training wall time = the wall-clock seconds that variant's "
        "last run spent training, on whatever device and load it had: not a speed benchmark. Live = the "
        "forward ledger's out-of-sample resolved bets (overlapping buys of a symbol count once; the "
        "champion's, the shadow's where there is no champion) and the monitor's state. Looks = the models "
        "judged on the same test window (every variant, seed study and retrain), and selection = the "
        "confidence left after paying for them (promotion needs the gate and the selection gate; README "
        "\"Why a pass can be luck\").",
        "",
        "| dataset | variant | split | precision [95 % CI] | signals | lift | F1 | ROC-AUC | strategy | "
        "buy-and-hold | random pct | training wall time (s) | looks | selection confidence | gate | diagnosis | "
        "live precision [95 % CI] | live resolved bets | monitor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['variant']}{'' if r['in_grid'] else ' ' + OUTSIDE_GRID_MARK} | {r['split']} | "
            f"{num(r['precision'])} [{r['precision_lo']:.3f}, "
            f"{r['precision_hi']:.3f}] | {r['signals']} | {num(r['lift'], 2)} | {num(r['f1'])} | "
            f"{num(r['roc_auc'])} | {pct(r['strategy_return'], signed=True)} | "
            f"{pct(r['buy_and_hold_return'], signed=True)} | {num(r['random_percentile'], 0)} | "
            f"{r['training_seconds']:.0f} | {'n/a' if r['n_looks'] is None else r['n_looks']} | "
            f"{_selection(r)} | {r['gate']} | {', '.join(r['diagnosis']) or 'none'} | "
            f"{_live(r)} | {'n/a' if r['live_resolved'] is None else r['live_resolved']} | {r['monitor'] or 'n/a'} |")
    if not rows:
        lines.append("| (no evaluated variants yet) |" + " |" * 18)
    if not all(r["in_grid"] for r in rows):
        lines += ["", f"{OUTSIDE_GRID_MARK} not in the current grid: the datasets or variants file in use "
                      "(`PATX_DATASETS`, `PATX_VARIANTS`) no longer defines this cell; its evaluation.json "
                      "is still on disk, so its result is kept."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text, rows
