"""Z-score scaler fitted on train rows only; serializable to plain arrays for the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Scaler:
    """Per-feature mean and population std (ddof 0), in ``feature_columns`` order."""

    mean: np.ndarray  # (F,) float64
    std: np.ndarray  # (F,) float64
    feature_columns: tuple[str, ...]

    def __post_init__(self) -> None:
        f = len(self.feature_columns)
        if self.mean.shape != (f,) or self.std.shape != (f,):
            raise ValueError(f"Scaler: mean/std must have shape ({f},), got {self.mean.shape}/{self.std.shape}")

    @classmethod
    def fit(cls, values: np.ndarray, feature_columns: Sequence[str]) -> "Scaler":
        """Fit on ``values`` (rows × features): pass *train rows only* — that is the leak guard."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(feature_columns) or values.shape[0] == 0:
            raise ValueError(f"Scaler.fit needs a non-empty (rows, {len(feature_columns)}) array, "
                             f"got shape {values.shape}")
        mean = values.mean(axis=0)
        std = values.std(axis=0, ddof=0)
        bad = [c for c, s in zip(feature_columns, std) if not np.isfinite(s) or s <= 0]
        if bad:
            raise ValueError(f"Scaler: feature(s) {bad} have zero (or non-finite) std over the "
                             f"{values.shape[0]} train rows; a constant feature cannot be z-scored")
        return cls(mean=mean, std=std, feature_columns=tuple(feature_columns))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """(…, F) → float32 z-scores, C-contiguous."""
        out = (np.asarray(values, dtype=np.float64) - self.mean) / self.std
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The ``scaler.pkl`` format: {mean: ndarray (F,), std: ndarray (F,), feature_columns: list}."""
        return {"mean": self.mean.copy(), "std": self.std.copy(), "feature_columns": list(self.feature_columns)}

    def to_plain(self) -> dict[str, Any]:
        """Lists only: safe for ``torch.load(weights_only=True)`` and JSON."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "feature_columns": list(self.feature_columns)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scaler":
        return cls(mean=np.asarray(d["mean"], dtype=np.float64), std=np.asarray(d["std"], dtype=np.float64),
                   feature_columns=tuple(d["feature_columns"]))
