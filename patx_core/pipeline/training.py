"""The training step: the cell's model (or seed study / ensemble), checkpoint and per-seed predictions."""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from patx_core.storage.artifacts import read_json, sha256_file
from patx_core.storage.jsonsafe import json_safe
from patx_core.settings.config import VariantConfig
from patx_core.settings.grid import GridCell
from patx_core.storage.paths import VariantPaths
from patx_core.data.scaler import UniverseScaler
from patx_core.data.windows import WindowedData
from patx_core.model import threads
from patx_core.pipeline.step import StepResult

log = logging.getLogger(__name__)


def train_model(cell: GridCell, *, on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
                on_progress: Callable[[int, int, int, int], None] | None = None) -> StepResult:
    """Train with early stopping; publish ``scaler.pkl`` and then ``best_model.pth``.

    The checkpoint carries its own scaler, config and training history, so it alone is the commit
    point of a training run: a kill before its rename leaves the previous model whole and
    self-consistent (``scaler.pkl`` is a convenience copy for the guide's users, never read here).
    """
    from patx_core.model.checkpoint import save_checkpoint, save_scaler
    from patx_core.model.trainer import Trainer

    threads.use_threads()  # the cores free now: a step beside another job must not thrash
    variant, paths = cell.variant, cell.paths
    data = WindowedData.load(paths.windows)
    scaler = UniverseScaler.from_dict(read_json(paths.scaler_json))
    seeds = variant.train.seed_list
    if len(seeds) == 1:
        trainer = Trainer(variant.model, variant.train, data, on_epoch_end=on_epoch_end,
                          on_progress=on_progress)
        history = trainer.train()
        model, others = trainer.model, []
    else:  # a seed study: every seed's model in one fused step; the first seed's is the candidate
        model, history, others = _train_seeds(variant, data, on_epoch_end)
    best = history["best_epoch"] - 1
    best_metrics = {k: float(v[best]) for k, v in history.items() if isinstance(v, list) and len(v) > best}
    candidate, extra = model, {}
    if variant.train.ensemble:  # the candidate is every seed's model, averaged; the curves stay the first seed's
        from patx_core.model.ensemble import SeedEnsemble

        candidate = SeedEnsemble.from_members(variant.model, [model, *(m for _, m, _ in others)])
        extra = {"ensemble_seeds": list(seeds), "member_best_epochs": [h["best_epoch"] for h in
                                                                       [history, *(h for _, _, h in others)]]}
    save_scaler(paths.scaler, scaler)
    save_checkpoint(paths.checkpoint, model=candidate, variant=variant, scaler=scaler,
                    metrics={**best_metrics, "best_epoch": history["best_epoch"], **extra,
                             "history": json_safe(history)},
                    feature_columns=data.feature_columns,
                    interval_seconds=cell.input_info()["median_spacing_seconds"])
    _write_seed_predictions(paths, data, variant, [(seeds[0], model, history), *others])
    meta = {"epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
            "best_val_loss": best_metrics.get("val_loss"), "training_seconds": history["seconds"],
            "device": history["device"], "params": history["params"], "seed": variant.train.seed,
            "stopped_early": history.get("stopped_early"), "checkpoint": str(paths.checkpoint)}
    if len(seeds) > 1:
        meta["seeds"] = list(seeds)
        meta["candidate"] = f"{len(seeds)}-seed ensemble" if variant.train.ensemble else f"seed {seeds[0]}"
        meta["seed_best_val_loss"] = {str(s): h["best_val_loss"] for s, _, h in [(seeds[0], model, history), *others]}
    return StepResult(value=history, metadata=meta)


def _train_seeds(variant: VariantConfig, data: WindowedData,
                 on_epoch_end: Callable[[int, dict[str, float]], None] | None) -> tuple[Any, dict[str, Any], list]:
    """Train the cell's model under every seed of ``train.seeds``, fused; progress of the first seed."""
    from patx_core.model.ensemble import train_seeds
    from patx_core.model.progress import Heartbeat, ModelsProgress

    seeds = variant.train.seed_list
    progress = ModelsProgress(f"seed study {variant.name}", [f"seed {s}" for s in seeds], variant.train.max_epochs)

    def forward(k: int, epoch: int, metrics: dict[str, float]) -> None:
        progress.on_epoch_end(k, epoch, metrics)
        if k == 0 and on_epoch_end is not None:
            on_epoch_end(epoch, metrics)

    with Heartbeat(progress.line):
        [trained] = train_seeds(variant.model, variant.train, [data], on_epoch_end=forward)
    (model, history), rest = trained[0], trained[1:]
    return model, history, [(s, m, h) for s, (m, h) in zip(seeds[1:], rest)]


def _write_seed_predictions(paths: VariantPaths, data: WindowedData, variant: VariantConfig,
                            runs: list[tuple[int, Any, dict[str, Any]]]) -> None:
    """Record each seed's probabilities on the evaluation splits with the checkpoint they belong to,
    so an evaluation never mixes a seed study with another training run."""
    import io

    from patx_core.model.inference import predict_proba
    from patx_core.storage.artifacts import atomic_write_with

    arrays: dict[str, np.ndarray] = {"seeds": np.asarray([s for s, _, _ in runs], dtype=np.int64),
                                     "checkpoint_sha256": np.asarray(sha256_file(paths.checkpoint)),
                                     "best_epoch": np.asarray([h["best_epoch"] for _, _, h in runs], dtype=np.int64)}
    for split in variant.split.names:
        if split != "train":
            for seed, model, _ in runs:
                arrays[f"{split}_{seed}"] = predict_proba(model, data, split, batch_size=variant.train.eval_batch_size)

    def write(buf: io.BytesIO) -> None:
        np.savez(buf, **arrays)

    atomic_write_with(paths.seed_predictions, write)


def read_seed_predictions(cell: GridCell) -> dict[str, Any]:
    """The seed study ``trained_model`` recorded: seeds, best epochs and per-split probabilities."""
    import io

    path = cell.paths.seed_predictions
    if not path.exists():
        raise RuntimeError(f"{path} is missing: re-materialize trained_model for {cell.key}")
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
