"""A report a trader can judge at a glance: report.md + PNG plots, and the variant leaderboard.

The markdown's first line names the verdict and the diagnosis codes (how the model failed),
then comes the verdict sentence (gate passed/failed and why, lift over the base rate, strategy
vs buy-and-hold vs random entries), one line per diagnosis, and a table of headline metrics
where every precision carries its interval and signal count. An abstaining model's best
operating point appears only in a section headed *Diagnostics*, apart from everything that
describes what the model does. On disk, report.md links the PNGs by
relative name; ``write_report`` returns the same markdown with the images inlined as base64
data URIs, for the Dagster UI (``MetadataValue.md``), which cannot read local files.

Plots are drawn on ``matplotlib.figure.Figure`` objects rendered by the Agg canvas, never through
``pyplot``: no global backend switch for a notebook that imports this module, no shared state
between Dagster runs in threads, nothing needing a display.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve

from patx_core.storage.artifacts import PathLike, as_path, atomic_write_bytes, atomic_write_text
from patx_core.evaluation.record import SplitPredictions

log = logging.getLogger(__name__)

_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
_DPI = 110


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _pct(x: float | None, digits: int = 1, *, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:+.{digits}f} %" if signed else f"{100 * x:.{digits}f} %"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _ordinal(x: float) -> str:
    n = int(round(x))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ---------------------------------------------------------------- plots

def plot_training(history: Mapping[str, Any]) -> Figure:
    """Train/val loss per epoch with the restored (best) epoch marked."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], "o-", color=_COLORS["train"], label="train loss")
    ax.plot(epochs, history["val_loss"], "o-", color=_COLORS["val"], label="val loss")
    best = int(history["best_epoch"])
    ax.axvline(best, color="grey", ls="--", lw=1)
    ax.plot([best], [history["val_loss"][best - 1]], "*", ms=16, color="crimson",
            label=f"best epoch {best} (restored)")
    ax.set(xlabel="epoch", ylabel="binary cross-entropy", title="Training curves")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_precision_recall(predictions: Mapping[str, SplitPredictions], threshold: float | None,
                          target: float, *, diagnostic: float | None = None) -> Figure:
    """PR curve per split, the chosen threshold's operating point and the target precision line.

    ``threshold=None`` (abstaining) marks no operating point; ``diagnostic`` (its max-F1 val
    threshold) is drawn on val as a hollow cross labelled as not used.
    """
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    for split, pred in predictions.items():
        y, p = pred.y, pred.prob
        color = _COLORS.get(split, None)
        if y.sum() == 0:
            continue  # no positives: the curve is undefined
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, color=color, lw=1.5, label=f"{split} (base rate {y.mean():.2f})")
        ax.axhline(y.mean(), color=color, ls=":", lw=1)
        sig = p >= threshold if threshold is not None else np.zeros(p.size, bool)
        if sig.any():
            ax.plot([y[sig].sum() / y.sum()], [y[sig].mean()], "o", ms=9, mec="black", color=color,
                    label=f"{split} at threshold: {sig.sum()} signals")
        if diagnostic is not None and split == "val" and (p >= diagnostic).any():
            d = p >= diagnostic
            ax.plot([y[d].sum() / y.sum()], [y[d].mean()], "x", ms=10, mew=2, color="black",
                    label=f"diagnostic max-F1 point on val ({d.sum()} signals): not used")
    ax.axhline(target, color="crimson", ls="--", lw=1.2, label=f"target precision {target:g}")
    title = f"threshold {threshold:.4f}" if threshold is not None else "abstains: no threshold met the rule"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"Precision–recall ({title})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_calibration(predictions: Mapping[str, SplitPredictions], threshold: float | None) -> Figure:
    """Reliability curve (quantile bins, so a narrow band of probabilities still shows) + histogram.

    The threshold is a red line; an abstaining model (``None``) has none.
    """
    fig = Figure(figsize=(7, 6.5))
    ax, hist = fig.subplots(2, 1, height_ratios=[3, 1.3], sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    for split, pred in predictions.items():
        n_bins = int(min(10, max(2, pred.y.size // 20)))
        frac, mean_p = calibration_curve(pred.y, pred.prob, n_bins=n_bins, strategy="quantile")
        color = _COLORS.get(split, None)
        ax.plot(mean_p, frac, "o-", color=color, label=split)
        hist.hist(pred.prob, bins=40, range=(0, 1), histtype="step", color=color, lw=1.5, label=split)
    for a in (ax, hist):
        if threshold is not None:
            a.axvline(threshold, color="crimson", ls="--", lw=1)
        a.grid(alpha=0.3)
    ax.set(ylabel="observed positive rate", ylim=(-0.02, 1.02), title="Reliability (calibration)")
    ax.legend(fontsize=8)
    xlabel = "predicted probability (red: threshold)" if threshold is not None else \
        "predicted probability (no threshold: the model abstains)"
    hist.set(xlabel=xlabel, ylabel="samples", xlim=(0, 1))
    return fig


#: Confusion-matrix axis labels: what the label and the decision mean, in a trader's words.
OUTCOME_LABELS = ("take-profit not hit", "take-profit hit")
DECISION_LABELS = ("no signal", "signal")


def plot_confusion(predictions: Mapping[str, SplitPredictions], threshold: float | None) -> Figure:
    """Confusion matrix per split at the threshold: counts and share of each true class.

    An abstaining model (``threshold=None``) gives no signal, so every sample is in "no signal".
    """
    fig = Figure(figsize=(4.2 * len(predictions), 4))
    axes = np.atleast_1d(fig.subplots(1, len(predictions)))
    for ax, (split, pred) in zip(axes, predictions.items()):
        signal = np.zeros(pred.prob.size, int) if threshold is None else (pred.prob >= threshold).astype(int)
        cm = confusion_matrix(pred.y, signal, labels=[0, 1])
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                        color="white" if share[i, j] > 0.6 else "black", fontsize=11)
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=list(DECISION_LABELS), yticklabels=list(OUTCOME_LABELS),
               xlabel="model", ylabel="outcome",
               title=f"{split} @ {threshold:.4f}" if threshold is not None else f"{split}: abstains (no signals)")
    fig.tight_layout()
    return fig


def plot_equity(equity: pl.DataFrame, backtest: Mapping[str, Any]) -> Figure:
    """Strategy vs buy-and-hold (value of 1 invested), with the random-entry 5–95 % band at the end."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    ts = equity["timestamp"].to_list()
    strategy = (f"strategy ({backtest['trades']} trades) {_pct(backtest['total_return'], signed=True)}"
                if backtest["trades"] else "strategy: no trades")
    ax.plot(ts, equity["strategy"].to_numpy(), color="#2ca02c", lw=1.6, label=strategy)
    ax.plot(ts, equity["buy_and_hold"].to_numpy(), color="grey", lw=1.2,
            label=f"buy-and-hold {_pct(backtest['buy_and_hold_return'], signed=True)}")
    rb = backtest["random_baseline"]
    if backtest["strategy_percentile"] is not None:
        mid, lo, hi = 1 + rb["p50"], 1 + rb["p5"], 1 + rb["p95"]
        ax.errorbar([ts[-1]], [mid], yerr=[[mid - lo], [hi - mid]], fmt="s", color="purple", capsize=6,
                    label=f"random entries p5–p95 ({rb['full_draws']} draws); strategy at "
                          f"{_ordinal(backtest['strategy_percentile'])} pct")
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set(ylabel="equity (start = 1)", title=f"Equity on the {backtest['split']} split, "
                                              f"{backtest['cost_bps']:g} bps per side")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    return fig


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
    versus = (f"strategy {_pct(bt['total_return'], signed=True)} vs buy-and-hold "
              f"{_pct(bt['buy_and_hold_return'], signed=True)}")
    if not bt["trades"]:
        luck = f"no trades (buy-and-hold {_pct(bt['buy_and_hold_return'], signed=True)})"
    elif bt["strategy_percentile"] is None:
        luck = (f"{versus}; no random-entry draw fit {bt['trades']} trades (the strategy is in the "
                f"market {_pct(bt['exposure'], 0)} of the time), so only buy-and-hold compares")
    else:
        luck = (f"{versus}, {_ordinal(bt['strategy_percentile'])} percentile of "
                f"{bt['random_baseline']['full_draws']} random-entry draws")
    return f"**Gate {word}** — {gate['reason']}. {lift_txt.capitalize()}; {luck}."


def _diagnosis_lines(evaluation: Mapping[str, Any]) -> list[str]:
    found = evaluation.get("diagnosis", [])
    if not found:
        return ["Diagnosis: no failure mode found."]
    return ["Diagnosis:", "", *[f"- `{d['code']}` — {d['explanation']}" for d in found]]


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    splits = list(metrics)

    def auc(m: Mapping[str, Any]) -> str:
        ci = m.get("roc_auc_ci95")
        return _num(m["roc_auc"]) + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")

    rows: list[tuple[str, Any]] = [
        ("precision [95 % CI]", lambda m: f"{_num(m['precision'])} [{m['precision_ci95'][0]:.3f}, "
                                          f"{m['precision_ci95'][1]:.3f}]"),
        ("buy signals / samples", lambda m: f"{m['n_signals']} / {m['n_samples']}"),
        ("base rate", lambda m: _num(m["base_rate"])),
        ("lift (precision / base rate)", lambda m: _num(m["lift"], 2)),
        ("recall", lambda m: _num(m["recall"])),
        ("F1", lambda m: _num(m["f1"])),
        ("ROC-AUC [95 % DeLong CI]", auc),
        ("PR-AUC", lambda m: _num(m["pr_auc"])),
        ("Brier", lambda m: _num(m["brier"])),
        ("accuracy", lambda m: _num(m["accuracy"])),
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
    pct = bt["strategy_percentile"]
    rows = [
        ("trades (signals before removing overlaps)", f"{bt['trades']} ({bt['n_signals']})"),
        ("hit rate (net return > 0)", _pct(bt["hit_rate"])),
        ("total return", _pct(bt["total_return"], signed=True)),
        ("annualized return", _annualized(bt, _pct(bt["annualized_return"], signed=True))),
        ("Sharpe (annualized)", _annualized(bt, _num(bt["sharpe"], 2))),
        ("max drawdown", _pct(bt["max_drawdown"])),
        ("exposure (time in a trade)", _pct(bt["exposure"])),
        ("buy-and-hold", _pct(bt["buy_and_hold_return"], signed=True)),
        (f"random entries p5 / p50 / p95 ({rb['full_draws']} of {rb['draws']} draws fit "
         f"{bt['trades']} trades, seed {rb['seed']})",
         f"{_pct(rb['p5'], signed=True)} / {_pct(rb['p50'], signed=True)} / {_pct(rb['p95'], signed=True)}"),
        ("strategy percentile among random", "n/a" if pct is None else f"{pct:.1f}"),
        ("cost per side", f"{bt['cost_bps']:g} bps"),
    ]
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _splits_table(evaluation: Mapping[str, Any]) -> list[str]:
    out = ["| split | rows | sequences | start | end | positive rate |", "|---|---|---|---|---|---|"]
    for name, s in evaluation["splits"].items():
        out.append(f"| {name} | {s['rows']} | {s['sequences']} | {str(s['start'])[:10]} | "
                   f"{str(s['end'])[:10]} | {_num(s['positive_rate'])} |")
    return out


def _threshold_lines(th: Mapping[str, Any]) -> list[str]:
    if th["value"] is None:
        return [f"**No threshold: the model abstains** — {th['explanation']}. It gives no signal on any split, "
                "so the backtest holds no trades; its best operating point is under *Diagnostics* below."]
    return [f"**Threshold {th['value']:.4f}** (target reachable on val): {th['explanation']}. Val precision at it "
            f"{_num(th['val_precision'])} (lower bound {_num(th['val_precision_lower'])}) on {th['n_signals']} "
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
        f"| val precision (Wilson lower bound) | {_num(d['val_precision'])} ({_num(d['val_precision_lower'])}) |",
        f"| val signals | {d['n_signals']} |",
        f"| val F1 | {_num(d['val_f1'])} |",
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
        out.append(f"| {symbol} | {m['samples']} | {m['signals']} | {_num(m['precision'])} "
                   f"[{m['precision_ci95'][0]:.3f}, {m['precision_ci95'][1]:.3f}] | {_num(m['base_rate'])} | "
                   f"{_pct(bt.get('total_return'), signed=True)} | {_pct(bt.get('buy_and_hold_return'), signed=True)} |")
    for symbol, u in untested.items():
        out.append(f"| {symbol} | 0 | — | not tested: {u['reason']} | — | — | — |")
    return out + ["", "The backtest above is the equal-weight portfolio of the tested symbols.", ""]


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
    lines = [
        title_line(evaluation),
        "",
        *([coverage, ""] if coverage else []),
        verdict(evaluation),
        "",
        *_diagnosis_lines(evaluation),
        "",
        *_metrics_table(evaluation["metrics"]),
        "",
        *_threshold_lines(th),
        "",
        f"F1 check ({f1['split']}, ≥ {f1['min_f1']:g}): {'passed' if f1['passed'] else 'failed'} "
        f"(F1 {_num(f1['f1'])}).",
        "",
        f"## Backtest — {bt['split']} split, {str(bt['start'])[:10]} → {str(bt['end'])[:10]}",
        "",
        *([f"**{_sentence(bt['no_trades_reason'])}.**", ""] if bt.get("no_trades_reason") else []),
        *_backtest_table(bt),
        "",
        *_symbols_table(evaluation),
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
        f"{_num(tr.get('best_val_loss'), 4)}), {tr['seconds']:.1f} s on {tr['device']}, "
        f"{tr['params']:,} parameters, seed {tr['seed']}.",
        "",
    ]
    return "\n".join(lines)


def write_figures(out_dir: Any, figures: Sequence[tuple[str, str, Figure]]
                  ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Write each ``(file name, caption, figure)`` as a PNG in ``out_dir`` (atomically); return the
    ``(caption, link)`` pairs for the markdown on disk and with the images inlined (for the UI)."""
    on_disk, inline = [], []
    for name, caption, fig in figures:
        data = _png(fig)
        atomic_write_bytes(out_dir / name, data)
        on_disk.append((caption, name))
        inline.append((caption, "data:image/png;base64," + base64.b64encode(data).decode("ascii")))
    return on_disk, inline


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
        ("equity.png", "Equity curve", plot_equity(equity, evaluation["backtest"])),
    ]
    on_disk, inline = write_figures(out_dir, figures)
    atomic_write_text(out_dir / "report.md", render_markdown(evaluation, on_disk))
    log.info("report for %s written to %s", evaluation["variant"], out_dir)
    return render_markdown(evaluation, inline)


# ---------------------------------------------------------------- leaderboard

def leaderboard_rows(evaluations: Mapping[str, Mapping[str, Any]],
                     outside_grid: Collection[str] = ()) -> list[dict[str, Any]]:
    """One flat row per (dataset, variant), gate passers first, then by the precision lower bound."""
    rows = []
    for key, ev in evaluations.items():
        gate, bt = ev["checks"]["precision_gate"], ev["backtest"]
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
            "gate": "passed" if gate["passed"] else "failed",
            "diagnosis": [d["code"] for d in ev.get("diagnosis", [])],  # absent from older evaluation.json
            "in_grid": key not in outside_grid,
        })
    rows.sort(key=lambda r: (r["gate"] != "passed", -r["precision_lo"], r["dataset"], r["variant"]))
    return rows


#: Marks a leaderboard row whose (dataset, variant) the current datasets/variants files no longer define.
OUTSIDE_GRID_MARK = "†"


def write_leaderboard(evaluations: Mapping[str, Mapping[str, Any]], path: PathLike,
                      outside_grid: Collection[str] = ()) -> tuple[str, list[dict[str, Any]]]:
    """Write the leaderboard markdown to ``path`` (atomically); return it and its rows.

    ``evaluations`` maps a cell key (``dataset|variant``) → its evaluation.json body, only for
    the cells that have one; the keys in ``outside_grid`` are marked as not in the current grid.
    """
    rows = leaderboard_rows(evaluations, outside_grid)
    lines = [
        "# Leaderboard",
        "",
        "One row per (dataset, variant). Precision is on each variant's gate split (test; val for variants without one), with its "
        "Wilson 95 % interval. Random pct = the strategy's percentile among random-entry draws "
        "with as many trades (50 = luck). Training wall time = the wall-clock seconds that variant's "
        "last run spent training, on whatever device and load it had: not a speed benchmark.",
        "",
        "| dataset | variant | split | precision [95 % CI] | signals | lift | F1 | ROC-AUC | strategy | "
        "buy-and-hold | random pct | training wall time (s) | gate | diagnosis |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pct = r["random_percentile"]
        lines.append(
            f"| {r['dataset']} | {r['variant']}{'' if r['in_grid'] else ' ' + OUTSIDE_GRID_MARK} | {r['split']} | {_num(r['precision'])} [{r['precision_lo']:.3f}, "
            f"{r['precision_hi']:.3f}] | {r['signals']} | {_num(r['lift'], 2)} | {_num(r['f1'])} | "
            f"{_num(r['roc_auc'])} | {_pct(r['strategy_return'], signed=True)} | "
            f"{_pct(r['buy_and_hold_return'], signed=True)} | {'n/a' if pct is None else f'{pct:.0f}'} | "
            f"{r['training_seconds']:.0f} | {r['gate']} | {', '.join(r['diagnosis']) or 'none'} |")
    if not rows:
        lines.append("| (no evaluated variants yet) |" + " |" * 13)
    if not all(r["in_grid"] for r in rows):
        lines += ["", f"{OUTSIDE_GRID_MARK} not in the current grid: the datasets or variants file in use "
                      "(`PATX_DATASETS`, `PATX_VARIANTS`) no longer defines this cell; its evaluation.json "
                      "is still on disk, so its result is kept."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    return text, rows
