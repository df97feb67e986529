"""Across cells and time: the leaderboard and the walk-forward composition."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

import polars as pl

from patx_core.storage.artifacts import PathLike, read_json
from patx_core.storage.jsonsafe import json_safe
from patx_core.evaluation.looks import fold_looks, record_looks
from patx_core.settings.grid import GridCell
from patx_core.storage.paths import leaderboard_md
from patx_core.model import threads
from patx_core.pipeline.step import CheckOutcome, StepResult

log = logging.getLogger(__name__)


def build_leaderboard(root: PathLike, cells: list[GridCell]) -> StepResult:
    """Every ``evaluation.json`` under ``root``, as ``<root>/leaderboard.md`` and rows.

    The cells of the current grid come first, in grid order; evaluations of cells the grid no
    longer has (another ``PATX_DATASETS`` or ``PATX_VARIANTS``) stay, marked as outside it: a
    result on disk never vanishes from the leaderboard.
    """
    from patx_core.evaluation.report import write_leaderboard
    from patx_core.settings.grid import cell_key, parse_key
    from patx_core.storage.paths import DatasetPaths, evaluations_on_disk

    on_disk = {cell_key(d, v): path for (d, v), path in evaluations_on_disk(root).items()}
    in_grid = [cell.key for cell in cells if cell.key in on_disk]
    outside = [key for key in on_disk if key not in set(in_grid)]
    evaluations, live = {}, {}
    for key in [*in_grid, *outside]:
        evaluations[key] = read_json(on_disk[key])
        dataset, variant = parse_key(key)
        track = DatasetPaths.for_dataset(dataset, root).variant(variant).track_record_json
        if track.exists():
            live[key] = read_json(track)
    markdown, rows = write_leaderboard(evaluations, leaderboard_md(root), live, outside_grid=outside)
    columns = list(rows[0]) if rows else ["dataset", "variant"]
    return StepResult(value={"rows": rows, "columns": columns}, markdown=markdown,
                      metadata={"cells": list(evaluations), "outside_grid": outside,
                                "path": str(leaderboard_md(root))})


# ------------------------------------------------------------------------------ walk-forward


def walk_forward(features: pl.DataFrame, cell: GridCell) -> StepResult:
    """Retrain at past cutoffs and trade each following stretch; walk_forward.json + .md in the report dir.

    The whole walk-forward in this process, as one fold group; the Dagster asset runs the same
    three parts as separate steps (:func:`walk_forward_plan`, :func:`walk_forward_fold_group`,
    :func:`walk_forward_report`). The check ``walk_forward_gate_stable`` passes when the gate
    passed in at least ``walk_forward.min_pass_rate`` of the folds.
    """
    import time

    started = time.perf_counter()
    [group] = walk_forward_plan(features, cell, groups=1)
    results = walk_forward_fold_group(features, cell, group)
    return walk_forward_report(results, cell, concurrency="sequential", workers=1,
                               seconds=time.perf_counter() - started)


def walk_forward_plan(features: pl.DataFrame, cell: GridCell, *,
                      groups: int | Callable[[int], int]) -> list[list[Any]]:
    """The cell's folds (:func:`~patx_core.evaluation.walk_forward.plan_folds`) cut into at most
    ``groups`` contiguous fold groups (a number, or a function of the number of folds), each to be
    trained as one unit."""
    from patx_core.evaluation.walk_forward import fold_groups, plan_folds

    plans = plan_folds(features, cell.variant)
    return fold_groups(plans, groups(len(plans)) if callable(groups) else groups)


def walk_forward_fold_group(features: pl.DataFrame, cell: GridCell, plans: list[Any], *,
                            on_fold_end: Callable[[dict[str, Any]], None] | None = None) -> list[Any]:
    """Train, threshold, trade and judge one fold group on the variant's training device."""
    from patx_core.evaluation.walk_forward import run_fold_group
    from patx_core.model.trainer import resolve_device

    threads.use_threads()  # the cores free now: fold steps side by side must not thrash each other
    device = str(resolve_device(cell.variant.train.device))
    return run_fold_group(features, plans, cell.variant, device=device, on_fold_end=on_fold_end)


def walk_forward_report(results: list[Any], cell: GridCell, *, concurrency: str, workers: int,
                        seconds: float) -> StepResult:
    """Every fold group's results stitched (:func:`~patx_core.evaluation.walk_forward.stitch_folds`)
    into walk_forward.json + .md, its metadata and the ``walk_forward_gate_stable`` check."""
    from patx_core.evaluation.walk_forward import stitch_folds
    from patx_core.evaluation.walk_forward_report import write_walk_forward

    variant = cell.variant
    result = stitch_folds(results, variant, concurrency=concurrency, workers=workers, seconds=seconds)
    record_looks(cell.paths.dataset.looks, cell.paths.dataset.looks_lock,
                 fold_looks(results, dataset=cell.dataset.name, variant=variant.name,
                            judged_at=datetime.now(timezone.utc)))
    markdown = write_walk_forward(cell.paths.report_dir, result, variant, title=cell.key)
    s = json_safe(result.summary)
    keys = ("n_folds", "gate_pass_rate", "precision", "precision_ci95", "n_signals", "base_rate",
            "strategy_return", "buy_and_hold_return", "random_entry_percentile", "concurrency", "workers", "seconds")
    meta = {k: s[k] for k in keys} | {"path": str(cell.paths.report_dir / "walk_forward.json"),
                                       "folds_passed": [f["gate_passed"] for f in result.folds]}
    check = CheckOutcome(
        "walk_forward_gate_stable", bool(s["stable"]),
        {"gate_pass_rate": s["gate_pass_rate"], "min_pass_rate": s["min_pass_rate"],
         "gate_passed_folds": s["gate_passed_folds"], "n_folds": s["n_folds"]},
        f"gate passed in {s['gate_passed_folds']} of {s['n_folds']} folds "
        f"({s['gate_pass_rate']:.2f} vs min_pass_rate {s['min_pass_rate']:.2f})")
    return StepResult(value=result.to_json(), metadata=meta, checks=[check], markdown=markdown)
