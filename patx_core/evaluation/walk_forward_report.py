"""walk_forward.md and walk_forward.json: a walk-forward's folds and stitched record, as a person reads them."""

from __future__ import annotations

from typing import Any

from patx_core.evaluation.formatting import estimate, num
from patx_core.evaluation.walk_forward import WalkForwardResult
from patx_core.settings.config import VariantConfig


def render_markdown(result: WalkForwardResult, variant: VariantConfig, images: list[tuple[str, str]], *,
                    title: str | None = None) -> str:
    """walk_forward.md: verdict, summary, one row per fold, then the plots (``(caption, src)``);
    ``title`` names what was walked forward (default: the variant), e.g. ``nasdaq|baseline``."""
    s = result.summary
    lo, hi = s["precision_ci95"]
    verdict = "stable" if s["stable"] else "not stable"
    lines = [
        f"# Walk-forward: {title or variant.name}",
        "",
        f"**Gate {verdict}**: passed in {s['gate_passed_folds']} of {s['n_folds']} folds "
        f"({100 * s['gate_pass_rate']:.0f} %; needs {100 * s['min_pass_rate']:.0f} %). Each fold retrains on the "
        f"data before its test period ({s['mode']} history) and trades the next stretch out of sample.",
        "",
        f"- Pooled test precision {estimate(s['precision'], (lo, hi))} on {s['n_signals']} "
        f"signals vs base rate {s['base_rate']:.3f} (target {s['target_precision']:g}).",
        f"- Stitched strategy {100 * s['strategy_return']:+.1f} % ({s['trades']} trades) vs buy-and-hold "
        f"{100 * s['buy_and_hold_return']:+.1f} %, {s['test_start'][:10]} → {s['test_end'][:10]}; random entries: "
        f"strategy at percentile {num(s['random_entry_percentile'], 0)}.",
        "",
        "| fold | train | test | threshold | signals | precision [95 % CI] | base rate | ROC AUC | strategy | "
        "buy & hold | gate |",
        "|---:|---|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for f in result.folds:
        flo, fhi = f["precision_ci95"]
        lines.append(
            f"| {f['fold']} | {f['train_start'][:10]} → {f['train_end'][:10]} | {f['test_start'][:10]} → "
            f"{f['test_end'][:10]} | {num(f['threshold'], 3) if f['threshold_reachable'] else 'abstain'} | "
            f"{f['n_signals']} | {estimate(f['precision'], (flo, fhi), ci_digits=2)} | {f['base_rate']:.3f} | "
            f"{num(f['roc_auc'], 3)} | {100 * f['strategy_return']:+.1f} % | "
            f"{100 * f['buy_and_hold_return']:+.1f} % | {'pass' if f['gate_passed'] else 'fail'} |")
    lines.append("")
    for caption, src in images:
        lines += [f"## {caption}", "", f"![{caption}]({src})", ""]
    return "\n".join(lines)


def write_walk_forward(report_dir: Any, result: WalkForwardResult, variant: VariantConfig, *,
                       title: str | None = None) -> str:
    """walk_forward.json, walk_forward.md and its PNGs into ``report_dir`` (atomically); returns
    the markdown with the images inlined."""
    from patx_core.storage.artifacts import as_path, atomic_write_json, atomic_write_text
    from patx_core.evaluation.figures import plot_fold_precision, plot_stitched_equity, write_figures

    out = as_path(report_dir)
    atomic_write_json(out / "walk_forward.json", result.to_json())
    figures = [("walk_forward_precision.png", "Precision per fold",
                plot_fold_precision(result.folds, target=variant.eval.target_precision)),
               ("walk_forward_equity.png", "Stitched equity", plot_stitched_equity(result.equity, result.summary))]
    on_disk, inline = write_figures(out, figures)
    atomic_write_text(out / "walk_forward.md", render_markdown(result, variant, on_disk, title=title))
    return render_markdown(result, variant, inline, title=title)
