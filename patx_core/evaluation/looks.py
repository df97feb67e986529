"""The looks ledger: ``<dataset>/looks.parquet``, one row per model judged on a gate window.

Every variant of a grid row, every nightly retrain and every seed is a look at (almost) the same
test candles; the selection gate (:mod:`patx_core.evaluation.selection`) pays for them. This file
is how they are counted:

- a row is ``dataset, variant, checkpoint_sha256, gate_split, window_start, window_end,
  n_signals, hits, precision, eligible, judged_at``; the window is the first and last candle
  of the gate split;
- ``eligible`` is true for a model that could be promoted (a cell's candidate); a seed study's
  other seeds and walk-forward folds are recorded as diagnostics (false) and never counted;
- re-judging the same model (``checkpoint_sha256``) on the same window adds no row;
- the file is append-only, rewritten atomically under a per-dataset lock, so two evaluations of
  one dataset at once both land.

A model with no checkpoint file of its own is named by a digest that is stable across
re-evaluations: a seed study's seed by its study's checkpoint and the seed
(:func:`seed_identity`), a walk-forward fold by the sha256 of its weights.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Iterable

import polars as pl

from patx_core.storage.artifacts import PathLike, as_path, atomic_write_with, read_parquet
from patx_core.storage.locks import exclusive

if TYPE_CHECKING:  # the walk-forward module imports torch; the ledger only reads its results
    from patx_core.evaluation.walk_forward import FoldResult

# A look write is a read and a rewrite of a small file; a holder that takes longer than this is stuck.
LOCK_TIMEOUT_S = 300.0

TIME = pl.Datetime("us", "UTC")
SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String, "variant": pl.String, "checkpoint_sha256": pl.String, "gate_split": pl.String,
    "window_start": TIME, "window_end": TIME, "n_signals": pl.Int64, "hits": pl.Int64,
    "precision": pl.Float64, "eligible": pl.Boolean, "judged_at": TIME,
}
IDENTITY = ("checkpoint_sha256", "window_start", "window_end")


@dataclass(frozen=True)
class Look:
    """One model judged on one gate window (a row of ``looks.parquet``)."""

    dataset: str
    variant: str
    checkpoint_sha256: str
    gate_split: str
    window_start: datetime
    window_end: datetime
    n_signals: int
    hits: int
    eligible: bool
    judged_at: datetime

    @property
    def precision(self) -> float | None:
        return self.hits / self.n_signals if self.n_signals else None


class LooksBusyError(RuntimeError):
    """Another evaluation of the dataset held the looks ledger for longer than the timeout."""


def seed_identity(checkpoint_sha256: str, seed: int) -> str:
    """The name of a seed study's member that has no checkpoint file of its own: its study's
    checkpoint digest and its seed, so a re-evaluation of the same study names it the same."""
    return hashlib.sha256(f"{checkpoint_sha256}/seed/{int(seed)}".encode()).hexdigest()


def _frame(looks: Iterable[Look]) -> pl.DataFrame:
    rows = [{**asdict(look), "precision": look.precision} for look in looks]
    return pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)


def read_looks(path: PathLike) -> pl.DataFrame:
    """The ledger's rows (an empty frame with the schema when there is none yet)."""
    p = as_path(path)
    if not p.exists():
        return pl.DataFrame(schema=SCHEMA)
    frame, _ = read_parquet(p)
    return frame.select([pl.col(c).cast(t) for c, t in SCHEMA.items()])


def record_looks(path: PathLike, lock: PathLike, looks: Iterable[Look]) -> pl.DataFrame:
    """Append ``looks`` not already in the ledger (same model, same window) and return the whole ledger.

    Held under ``lock`` from the read to the publish: two evaluations of one dataset at once
    take turns instead of each publishing its own extension of the same file.
    """
    new = _frame(looks)

    def busy(timeout_s: float) -> Exception:
        return LooksBusyError(f"{as_path(lock)} was held for {timeout_s:.0f} s by another evaluation of this "
                              "dataset; rerun when it has finished")

    with exclusive(lock, timeout_s=LOCK_TIMEOUT_S, busy=busy, what="looks ledger"):
        existing = read_looks(path)
        fresh = new.unique(subset=list(IDENTITY), keep="first", maintain_order=True).join(
            existing.select(IDENTITY), on=list(IDENTITY), how="anti")
        if fresh.is_empty():
            return existing
        merged = pl.concat([existing, fresh], how="vertical")

        def write(buf: io.BytesIO) -> None:
            merged.write_parquet(buf)

        atomic_write_with(path, write)
        return merged


def counted_looks(ledger: pl.DataFrame, window: pl.Series) -> pl.DataFrame:
    """The eligible looks a verdict on ``window`` (the gate split's candle timestamps) pays for.

    A look counts when its window holds at least half of this window's candles: the variants of
    one grid row count each other, a nightly retrain on a barely grown window counts again, and a
    window that has moved on by more than half is a fresh test. One row per distinct model (its
    first look), oldest first.
    """
    candles = window.cast(TIME).unique().sort()
    if candles.is_empty():
        raise ValueError("counted_looks: the gate window has no candles")
    n = candles.len()
    eligible = ledger.filter(pl.col("eligible"))
    if eligible.is_empty():
        return eligible
    inside = [int(((candles >= start) & (candles <= end)).sum())
              for start, end in zip(eligible["window_start"], eligible["window_end"])]
    overlapping = eligible.with_columns(pl.Series("overlap", inside, dtype=pl.Int64)).filter(2 * pl.col("overlap") >= n)
    return (overlapping.sort("judged_at").unique(subset=["checkpoint_sha256"], keep="first", maintain_order=True)
            .drop("overlap"))


def evaluation_looks(evaluation: dict, window: pl.Series, *, judged_at: datetime) -> list[Look]:
    """The looks one ``evaluation.json`` body is: its candidate (eligible) and, for a seed study,
    every other seed (diagnostics, not eligible), all on the gate split's ``window``. A seed
    ensemble's candidate is the ensemble (its checkpoint); every member is a diagnostic."""
    gate = evaluation["checks"]["precision_gate"]
    metrics = evaluation["metrics"][gate["split"]]
    candles = window.cast(TIME)
    base = {"dataset": evaluation["dataset"]["name"], "variant": evaluation["variant"], "gate_split": gate["split"],
            "window_start": candles.min(), "window_end": candles.max(), "judged_at": judged_at}
    checkpoint = evaluation["checkpoint_sha256"]
    looks = [Look(**base, checkpoint_sha256=checkpoint, n_signals=int(metrics["n_signals"]),
                  hits=int(metrics["true_positives"]), eligible=True)]
    seeds = evaluation.get("seeds") or {}
    for row in seeds.get("per_seed", []) if seeds.get("n_seeds", 1) > 1 else []:
        if row["seed"] == seeds.get("champion_seed") and not seeds.get("ensemble"):
            continue  # the candidate itself, recorded above under its own checkpoint
        n = int(row["n_signals"])
        looks.append(Look(**base, checkpoint_sha256=seed_identity(checkpoint, row["seed"]), n_signals=n,
                          hits=int(round((row["precision"] or 0.0) * n)), eligible=False))
    return looks


def fold_looks(results: Iterable[FoldResult], *, dataset: str, variant: str, judged_at: datetime) -> list[Look]:
    """A walk-forward's folds as looks: diagnostics of how a configuration holds up, never a
    candidate for promotion (not eligible), each named by its weights' sha256 on its test window."""
    looks = []
    for r in results:
        looks.append(Look(dataset=dataset, variant=variant, checkpoint_sha256=r.fingerprint["weights"],
                          gate_split="test", window_start=datetime.fromisoformat(r.row["test_start"]),
                          window_end=datetime.fromisoformat(r.row["test_end"]), n_signals=int(r.row["n_signals"]),
                          hits=int(r.true_positives), eligible=False, judged_at=judged_at))
    return looks
