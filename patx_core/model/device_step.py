"""The device side of a training step: data resident on the device, fixed-shape batches, the
step captured as a CUDA graph, and the learning-rate warm-up it reads.

Why these pieces look the way they do — the default model is ~0.4 M parameters and a batch is
32×64×14 floats, so a step is bound by kernel launches and host syncs, not by arithmetic:

* The normalized matrix and labels go to the device once (:class:`DeviceWindows`); a batch is
  gathered there by index arithmetic (rows ``end-W+1 … end`` of each window end), never
  materialized on the host.
* Every batch has the same shape (:class:`Batches`): the last one is padded with a repeated index
  and weight 0, so ``torch.compile`` (CUDA graphs under ``reduce-overhead``) sees one training
  shape, not two.
* On CUDA without ``torch.compile`` the whole step (gather, forward, loss, backward, AdamW) is
  captured once as a CUDA graph and replayed per batch (:class:`GraphedStep`): a batch-32 step is
  ~200 tiny kernels whose Python launch cost exceeds their run time.
* A linear learning-rate warm-up (:class:`WarmUp`) keeps the learning rate in a device tensor that
  the step reads, so the captured graph follows the schedule without being re-recorded; the value
  is refilled before each warm-up step (a device write, no sync).
* Predictions are reduced to confusion counts on the device (:func:`confusion_counts`), so an
  epoch needs one transfer to the host.

The rules that drive them — early stopping, the out-of-memory retry, the capture — are
:mod:`patx_core.model.loop`, used by :mod:`patx_core.model.trainer` and :mod:`patx_core.model.fused`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from patx_core.data.windows import WindowedData


class DeviceWindows:
    """Matrix and labels resident on the device; windows gathered from them by index arithmetic."""

    def __init__(self, data: WindowedData, device: torch.device) -> None:
        self.x = torch.from_numpy(data.matrix).to(device)  # (N, F)
        self.y = torch.from_numpy(data.labels).to(device)  # (N,)
        self.offsets = torch.arange(-(data.window_size - 1), 1, device=device)  # (W,)
        self.ends = {split: torch.from_numpy(e).to(device) for split, e in data.ends.items()}

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ending at rows ``idx`` and their labels: (B,) → (B, W, F), (B,)."""
        rows = idx.unsqueeze(1) + self.offsets  # (B, W)
        return self.x[rows], self.y[idx]  # (B, W, F), (B,)


@dataclass(frozen=True)
class Batches:
    """A split's sample ends padded to whole batches; ``weight`` is 0 on the padding."""

    idx: torch.Tensor  # (steps * B,) int64 window end rows
    weight: torch.Tensor  # (steps * B,) float32, 1 for real samples
    count: torch.Tensor  # (steps,) float32 real samples per step
    n: int
    batch_size: int

    @property
    def steps(self) -> int:
        return self.count.numel()

    @classmethod
    def pad(cls, ends: torch.Tensor, batch_size: int) -> "Batches":
        n = ends.numel()
        steps = math.ceil(n / batch_size)
        pad = steps * batch_size - n
        idx = torch.cat([ends, ends[:1].expand(pad)]) if pad else ends  # (steps*B,)
        weight = torch.ones(steps * batch_size, device=ends.device)
        weight[n:] = 0.0
        count = torch.full((steps,), float(batch_size), device=ends.device)
        count[-1] = float(n - (steps - 1) * batch_size)
        return cls(idx=idx, weight=weight, count=count, n=n, batch_size=batch_size)

    def __iter__(self) -> Iterator[tuple[int, slice]]:
        for step in range(self.steps):
            yield step, slice(step * self.batch_size, (step + 1) * self.batch_size)


class GraphedStep:
    """A training step captured as one CUDA graph over static input/output tensors.

    ``step(*inputs)`` returns (loss sums, predictions); :meth:`replay` copies new inputs into the
    static ones and reruns the recorded kernels.
    """

    WARMUP_STEPS = 3  # side-stream iterations before capture (cuBLAS workspaces, lazy optimizer state)

    def __init__(self, step: Callable[..., tuple[torch.Tensor, torch.Tensor]], inputs: tuple[torch.Tensor, ...],
                 device: torch.device) -> None:
        self.inputs = tuple(t.clone() for t in inputs)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_STEPS):
                step(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = step(*self.inputs)

    def replay(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the step on new inputs (device-to-device copies, no sync); outputs are overwritten next call."""
        for static, new in zip(self.inputs, inputs):
            static.copy_(new)
        self.graph.replay()
        return self.outputs


class WarmUp:
    """Linear warm-up: optimizer step ``k`` (1-based) runs at ``lr * min(1, k / steps)``.

    Counted in optimizer steps, so after an out-of-memory retry at half the batch size it spans
    half as many samples. (Not the graph capture's ``GraphedStep.WARMUP_STEPS``, which are undone.)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, steps: int) -> None:
        self.lr, self.steps, self.done = lr, steps, 0
        self.groups = optimizer.param_groups

    def before_step(self) -> None:
        if self.done >= self.steps:
            return
        self.done += 1
        value = self.lr * (self.done / self.steps)  # ends exactly on lr at step `steps`
        for group in self.groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)  # read by the kernel (and the CUDA graph) at run time
            else:
                group["lr"] = value


def confusion_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(true positives, predicted positives, actual positives) as a float (3,) device tensor."""
    t = target > 0.5
    return torch.stack([(pred & t).sum(), pred.sum(), t.sum()]).float()  # (3,)
