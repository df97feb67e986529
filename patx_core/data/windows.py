"""Windowed samples as strided views over one contiguous normalized matrix.

The sample whose label sits at row ``t`` is ``matrix[t - W + 1 : t + 1]`` — the guide's diagram
"[t-63 … t] → label at t". Windows are never materialized: memory stays O(rows × features),
never O(rows × W × features); the trainer gathers batches the same way on the device.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from patx_core.storage.artifacts import PathLike, as_path, atomic_write_with


@dataclass(frozen=True)
class WindowedData:
    """Everything training and evaluation need: one matrix, labels, and per-split window ends."""

    matrix: np.ndarray  # (N, F) float32, C-contiguous, normalized with the train-only scaler
    labels: np.ndarray  # (N,) float32; NaN where a row has no label
    ends: dict[str, np.ndarray]  # split -> int64 row indices t of that split's samples (ascending)
    window_size: int
    feature_columns: tuple[str, ...]

    def __post_init__(self) -> None:
        n, f = self.matrix.shape
        if self.matrix.dtype != np.float32 or not self.matrix.flags.c_contiguous:
            raise ValueError("WindowedData.matrix must be a C-contiguous float32 array")
        if self.labels.shape != (n,):
            raise ValueError(f"WindowedData.labels must have shape ({n},), got {self.labels.shape}")
        if f != len(self.feature_columns):
            raise ValueError(f"WindowedData: matrix has {f} columns but {len(self.feature_columns)} names")
        for split, ends in self.ends.items():
            if ends.size and (ends.min() < self.window_size - 1 or ends.max() >= n):
                raise ValueError(f"WindowedData.ends[{split!r}] has rows outside "
                                 f"[{self.window_size - 1}, {n}) (window {self.window_size})")
            if ends.size and np.isnan(self.labels[ends]).any():
                raise ValueError(f"WindowedData.ends[{split!r}] includes rows without a label")

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.ends)

    def n_sequences(self, split: str) -> int:
        return int(self.ends[split].size)

    def all_windows(self) -> np.ndarray:
        """(N - W + 1, W, F) view: entry ``i`` is the window ending at row ``i + W - 1``."""
        # sliding_window_view puts the window axis last: (N-W+1, F, W) -> swap to (…, W, F).
        return sliding_window_view(self.matrix, self.window_size, axis=0).transpose(0, 2, 1)

    def windows(self, split: str) -> np.ndarray:
        """(n, W, F) windows of ``split``. Fancy indexing of a view copies, so use ``all_windows``
        for zero-copy access; this is for evaluation-sized reads."""
        return self.all_windows()[self.ends[split] - (self.window_size - 1)]

    def split_labels(self, split: str) -> np.ndarray:
        return self.labels[self.ends[split]]

    def save(self, path: PathLike) -> None:
        arrays = {"matrix": self.matrix, "labels": self.labels,
                  "window_size": np.asarray(self.window_size),
                  "feature_columns": np.asarray(self.feature_columns, dtype=str),
                  "split_names": np.asarray(list(self.ends), dtype=str)}
        arrays.update({f"ends_{k}": v for k, v in self.ends.items()})
        atomic_write_with(path, lambda buf: np.savez(buf, **arrays))

    @classmethod
    def load(cls, path: PathLike) -> "WindowedData":
        with np.load(io.BytesIO(as_path(path).read_bytes()), allow_pickle=False) as z:
            names: Sequence[str] = [str(s) for s in z["split_names"]]
            return cls(matrix=np.ascontiguousarray(z["matrix"], dtype=np.float32),
                       labels=z["labels"].astype(np.float32),
                       ends={s: z[f"ends_{s}"].astype(np.int64) for s in names},
                       window_size=int(z["window_size"]),
                       feature_columns=tuple(str(c) for c in z["feature_columns"]))
