"""The report's and the walk-forward's figures: matplotlib ``Figure`` builders and their PNGs.

Plots are drawn on ``matplotlib.figure.Figure`` objects rendered by the Agg canvas, never through
``pyplot``: no global backend switch for a notebook that imports this module, no shared state
between Dagster runs in threads, nothing needing a display. One equity-curve plot
(:func:`plot_equity`) draws both the gate split's backtest and the stitched walk-forward record.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_curve

from patx_core.evaluation.formatting import ordinal, pct
from patx_core.evaluation.metrics import signal_mask
from patx_core.evaluation.record import SplitPredictions
from patx_core.storage.artifacts import atomic_write_bytes

_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
_DPI = 110


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg canvas, at the reports' resolution)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


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
        sig = signal_mask(p, threshold)
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
        signal = signal_mask(pred.prob, threshold).astype(int)
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


@dataclass(frozen=True)
class RandomBand:
    """The random-entry draws' p5–p95 total returns, drawn as a bar at the curve's end."""

    p5: float
    p50: float
    p95: float
    label: str


def plot_equity(equity: pl.DataFrame, *, strategy_label: str, buy_and_hold_label: str, title: str,
                band: RandomBand | None = None, boundaries: Sequence[Any] = ()) -> Figure:
    """Strategy vs buy-and-hold (value of 1 invested), with an optional random-entry band at the
    end and dotted vertical lines at ``boundaries`` (the walk-forward's fold starts)."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    ts = equity["timestamp"].to_list()
    ax.plot(ts, equity["strategy"].to_numpy(), color="#2ca02c", lw=1.6, label=strategy_label)
    ax.plot(ts, equity["buy_and_hold"].to_numpy(), color="grey", lw=1.2, label=buy_and_hold_label)
    if band is not None:
        mid, lo, hi = 1 + band.p50, 1 + band.p5, 1 + band.p95
        ax.errorbar([ts[-1]], [mid], yerr=[[mid - lo], [hi - mid]], fmt="s", color="purple", capsize=6,
                    label=band.label)
    for start in boundaries:
        ax.axvline(start, color="black", lw=0.4, ls=":")
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set(ylabel="equity (start = 1)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    return fig


def plot_backtest_equity(equity: pl.DataFrame, backtest: Mapping[str, Any]) -> Figure:
    """The gate split's curve (``BacktestResult.equity``) with evaluation.json's ``backtest`` block."""
    rb = backtest["random_baseline"]
    band = None
    if backtest["strategy_percentile"] is not None:
        band = RandomBand(p5=rb["p5"], p50=rb["p50"], p95=rb["p95"],
                          label=f"random entries p5–p95 ({rb['full_draws']} draws); strategy at "
                                f"{ordinal(backtest['strategy_percentile'])} pct")
    return plot_equity(
        equity,
        strategy_label=(f"strategy ({backtest['trades']} trades) {pct(backtest['total_return'], signed=True)}"
                        if backtest["trades"] else "strategy: no trades"),
        buy_and_hold_label=f"buy-and-hold {pct(backtest['buy_and_hold_return'], signed=True)}",
        title=f"Equity on the {backtest['split']} split, {backtest['cost_bps']:g} bps per side",
        band=band)


def plot_stitched_equity(equity: pl.DataFrame, summary: Mapping[str, Any]) -> Figure:
    """The walk-forward folds' test periods compounded in order (walk_forward.json's ``summary``)."""
    starts = equity.group_by("fold", maintain_order=True).agg(pl.col("timestamp").first())["timestamp"][1:]
    return plot_equity(
        equity,
        strategy_label=f"strategy ({summary['trades']} trades) {pct(summary['strategy_return'], signed=True)}",
        buy_and_hold_label=f"buy-and-hold {pct(summary['buy_and_hold_return'], signed=True)}",
        title="Stitched out-of-sample equity (dotted: fold boundaries)",
        boundaries=starts)


def plot_fold_precision(folds: list[dict[str, Any]], *, target: float) -> Figure:
    """Each fold's test precision with its Wilson interval, against the target and its base rate."""
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    x = np.arange(len(folds))
    silent_labelled = False
    for i, f in enumerate(folds):
        color = "#2ca02c" if f["gate_passed"] else "#d62728"
        lo, hi = f["precision_ci95"]
        if f["precision"] is None:  # no signal: the interval is all of [0, 1]
            # One legend entry for all of them: a dotted line is a fold that gave no signal.
            ax.vlines(i, lo, hi, color=color, lw=1, linestyles="dotted",
                      label=None if silent_labelled else "no signal (precision undefined, interval [0, 1])")
            silent_labelled = True
            continue
        ax.errorbar([i], [f["precision"]], yerr=[[f["precision"] - lo], [hi - f["precision"]]], fmt="o",
                    color=color, capsize=5)
        ax.annotate(f"{f['n_signals']}", (i, hi), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ax.plot(x, [f["base_rate"] for f in folds], "_", color="grey", ms=18, mew=2, label="base rate")
    ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xticks(x, [f"{f['fold']}\n{(f['test_start'] or '')[:10]}" for f in folds], fontsize=8)
    ax.set(ylim=(0, 1), ylabel="test precision (95 % Wilson)",
           title="Precision per fold (green: gate passed; number: signals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def write_figures(out_dir: Any, figures: Sequence[tuple[str, str, Figure]]
                  ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Write each ``(file name, caption, figure)`` as a PNG in ``out_dir`` (atomically); return the
    ``(caption, link)`` pairs for the markdown on disk and with the images inlined (for the UI)."""
    on_disk, inline = [], []
    for name, caption, fig in figures:
        data = png_bytes(fig)
        atomic_write_bytes(out_dir / name, data)
        on_disk.append((caption, name))
        inline.append((caption, "data:image/png;base64," + base64.b64encode(data).decode("ascii")))
    return on_disk, inline
