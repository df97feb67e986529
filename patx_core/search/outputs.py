"""What a search leaves under ``<dataset>/search/<variant>/``: ``trials.parquet``, ``search.md``
(with its plots) and ``best.toml``, each written atomically from the study alone, so a rerun of a
finished study rewrites them identically."""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from patx_core.search.study import TrialOutcome, best_outcome, trial_outcomes
from patx_core.settings.grid import GridCell
from patx_core.settings.search import SearchConfig, apply_params
from patx_core.storage.artifacts import atomic_write_text, atomic_write_with

log = logging.getLogger(__name__)

#: The name of the best trial's variant table in ``best.toml``.
TUNED_SUFFIX = "_tuned"


@dataclass(frozen=True)
class SearchReport:
    """The written outputs and what the shell and the UI show of them."""

    trials: pl.DataFrame
    best: TrialOutcome | None
    objective: str
    tuned_name: str
    best_toml: Path | None  # None when no trial completed
    markdown: str  # search.md with the plots inlined (for the UI)
    judge_command: str | None

    def final_line(self) -> str:
        """``best trial #k: val_roc_auc 0.61 (params); wrote <path>``, or why there is no best."""
        if self.best is None:
            states = self.trials["state"].value_counts(sort=True).iter_rows() if self.trials.height else []
            return f"no trial completed ({', '.join(f'{n} {s}' for s, n in states) or 'no trials'}): no best.toml"
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.best.params.items())
        return (f"best trial #{self.best.number}: {self.objective} {self.best.objective:.4g} ({params}); "
                f"wrote {self.best_toml}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_frame(outcomes: list[TrialOutcome], search: SearchConfig) -> pl.DataFrame:
    """``number``, one column per searched field (named as in the space), ``objective``, ``state``,
    ``best_epoch``, ``seconds``; one row per ended trial."""
    columns: dict[str, list[Any]] = {"number": [o.number for o in outcomes]}
    for p in search.space:
        columns[p.name] = [o.params.get(p.name) for o in outcomes]
    columns |= {"objective": [o.objective for o in outcomes], "state": [o.state for o in outcomes],
                "best_epoch": [o.best_epoch for o in outcomes], "seconds": [o.seconds for o in outcomes]}
    schema = {"number": pl.Int64, "objective": pl.Float64, "state": pl.String, "best_epoch": pl.Int64,
              "seconds": pl.Float64}
    return pl.DataFrame(columns, schema_overrides=schema, strict=False)


def _importances(study: Any) -> dict[str, float] | str:
    """Optuna's parameter importances, or the reason there are none yet."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return f"{len(complete)} complete trial(s): importances need at least 2"
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as exc:  # e.g. every complete trial has the same params
        return f"not computable: {exc}"


def _figures(outcomes: list[TrialOutcome], objective: str, direction: str, best: TrialOutcome | None,
             importances: dict[str, float] | str) -> list[tuple[str, str, Any]]:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figs = []
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    done = [o for o in outcomes if o.state == "COMPLETE"]
    if done:
        x = np.array([o.number for o in done])
        y = np.array([o.objective for o in done], dtype=np.float64)
        ax.scatter(x, y, s=18, label="complete")
        running = np.maximum.accumulate(y) if direction == "maximize" else np.minimum.accumulate(y)
        ax.step(x, running, where="post", color="C1", label="best so far")
    for state, marker in (("PRUNED", "x"), ("FAIL", "v")):
        numbers = [o.number for o in outcomes if o.state == state]
        if numbers:
            ax.scatter(numbers, [ax.get_ylim()[0]] * len(numbers), marker=marker, color="grey", label=state.lower())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective} (val)")
    ax.legend(fontsize=8)
    figs.append(("objective_by_trial.png", f"{objective} on val by trial", fig))

    if best is not None:
        fig = Figure(figsize=(7, 0.6 + 0.45 * len(best.params)))
        ax = fig.subplots()
        ax.axis("off")
        ax.table(cellText=[[k, _short(v)] for k, v in best.params.items()], colLabels=["field", "value"],
                 loc="center", cellLoc="left")
        ax.set_title(f"best trial #{best.number}: {objective} {best.objective:.4g}")
        figs.append(("best_params.png", "Best trial's parameters", fig))

    if isinstance(importances, dict) and importances:
        fig = Figure(figsize=(7, 0.8 + 0.4 * len(importances)))
        ax = fig.subplots()
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel(f"importance for {objective} (optuna.importance.get_param_importances)")
        fig.tight_layout()
        figs.append(("param_importances.png", "Parameter importances", fig))
    return figs


def _markdown(cell: GridCell, frame: pl.DataFrame, report_head: str, best: TrialOutcome | None,
              importances: dict[str, float] | str, images: list[tuple[str, str]]) -> str:
    lines = [report_head, ""]
    lines += [f"![{caption}]({link})" for caption, link in images]
    if best is not None:
        lines += ["", f"## Best trial: #{best.number}", "", "| field | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {_short(v)} |" for k, v in best.params.items()]
    lines += ["", "## Parameter importances", ""]
    if isinstance(importances, dict):
        lines += [f"- `{k}`: {v:.3f}" for k, v in importances.items()]
    else:
        lines.append(importances)
    lines += ["", "## Trials", "", "| " + " | ".join(frame.columns) + " |",
              "| " + " | ".join("---" for _ in frame.columns) + " |"]
    lines += ["| " + " | ".join("" if v is None else _short(v) for v in row) + " |" for row in frame.iter_rows()]
    lines += ["", "Every trial trained on train, early-stopped on val and was scored on val; none read the test "
              "split. The best trial's test figures come from judging it once (the command above)."]
    return "\n".join(lines) + "\n"


def judge_command(cell: GridCell, best_toml: Path, tuned_name: str) -> str:
    """The one materialization that judges the tuned variant on test."""
    return (f"PATX_VARIANTS={shlex.quote(str(best_toml))} make materialize DATASET={shlex.quote(cell.dataset.name)} "
            f"VARIANT={shlex.quote(tuned_name)}")


def write_search_outputs(study: Any, cell: GridCell) -> SearchReport:
    """``trials.parquet``, ``search.md`` + plots and (when a trial completed) ``best.toml``."""
    from patx_core.evaluation.figures import write_figures
    from patx_core.settings.variants import variant_toml

    variant, paths = cell.variant, cell.paths
    search = variant.search
    assert search is not None, "write_search_outputs needs a searched variant"
    outcomes = trial_outcomes(study)
    frame = trials_frame(outcomes, search)
    atomic_write_with(paths.search_trials, lambda buf: frame.write_parquet(buf))
    best = best_outcome(study)
    tuned_name = f"{variant.name}{TUNED_SUFFIX}"
    best_toml, command = None, None
    if best is not None:
        tuned = apply_params(variant, best.params, name=tuned_name)
        tuned = type(tuned).from_dict(tuned_name, {
            **tuned.to_dict(), "nightly": False,
            "description": f"{variant.name} tuned by `patx search` on {cell.dataset.name}: trial #{best.number}, "
                           f"{search.objective} {best.objective:.4g} on val; judged on test by one materialization"})
        atomic_write_text(paths.search_best, variant_toml(tuned))
        best_toml = paths.search_best
        command = judge_command(cell, best_toml, tuned_name)
    importances = _importances(study)
    figures = _figures(outcomes, search.objective, search.direction, best, importances)
    on_disk, inline = write_figures(paths.search_dir, figures)
    counts = {s: sum(o.state == s for o in outcomes) for s in ("COMPLETE", "PRUNED", "FAIL")}
    head = (f"# Search {cell.key}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed\n\n"
            f"Objective `{search.objective}` on val ({search.direction}), sampler `{search.sampler}` "
            f"(seed {search.seed}), pruner `{search.pruner}`.")
    if best is not None:
        head += (f"\n\nBest: trial #{best.number}, {search.objective} {best.objective:.4g}; "
                 f"`{best_toml}` holds it as `[{tuned_name}]`. Judge it once on test:\n\n    {command}")
    atomic_write_text(paths.search_md, _markdown(cell, frame, head, best, importances, on_disk))
    return SearchReport(trials=frame, best=best, objective=search.objective, tuned_name=tuned_name,
                        best_toml=best_toml, markdown=_markdown(cell, frame, head, best, importances, inline),
                        judge_command=command)
