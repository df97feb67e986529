"""One function per step of the lifecycle: what each Dagster asset calls, and what a notebook can.

Each step takes plain values and a :class:`~patx_core.settings.grid.GridCell` (the dataset, the variant
with the dataset's market settings, and their paths), writes its artifacts
atomically through ``patx_core``, and returns a ``StepResult``: the value (if any), metadata
for the UI, and ``CheckOutcome``s for the properties the orchestration turns into asset checks.

By stage: :mod:`.data` (raw prices → windows), :mod:`.training`, :mod:`.evaluation` (the gates,
the report, the looks), :mod:`.serving` (promotion, latest signal, ledger, track record) and
:mod:`.reports` (leaderboard, walk-forward); each module is glue over the library. The champion's
life after promotion is :mod:`patx_core.serving.champion`.
"""

from patx_core.pipeline.data import (build_features, build_splits, build_windows, freshness_check, load_raw_prices,
                                     purge_check)
from patx_core.pipeline.evaluation import code_version, evaluate_model
from patx_core.pipeline.reports import (build_leaderboard, walk_forward, walk_forward_fold_group, walk_forward_plan,
                                        walk_forward_report)
from patx_core.pipeline.serving import latest_signal, promote_champion, signal_ledger, track_record
from patx_core.pipeline.step import CheckOutcome, StepResult
from patx_core.pipeline.training import read_seed_predictions, train_model

__all__ = ["CheckOutcome", "StepResult", "build_features", "build_leaderboard", "build_splits", "build_windows",
           "code_version", "evaluate_model", "freshness_check", "latest_signal", "load_raw_prices",
           "promote_champion", "purge_check", "read_seed_predictions", "signal_ledger", "track_record",
           "train_model", "walk_forward", "walk_forward_fold_group", "walk_forward_plan", "walk_forward_report"]
