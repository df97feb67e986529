"""The project's performance record: ``python -m benchmarks train|large-batch|features|pipeline|pools|fused|selection|contention|bf16``.

Each command prints ONE JSON line on stdout (logs go to stderr), so results can be appended to
``benchmarks/RESULTS.md`` or compared by a script.

``train`` — the default model on generated data with the guide's shapes (``--rows`` candles,
14 features, 80/20 chronological split, window 64; ``--rows 7243`` gives the guide's 5,744 train
windows). One epoch = the training pass plus the val metrics. ``--reference`` also runs the
tutorial loop (``Dataset`` + ``DataLoader(batch_size=B, shuffle=False)`` over the same windows,
``loss.item()`` every step, same init and hyper-parameters) in the same process and reports
``speedup`` = reference / project median epoch time. Both loops use ``shuffle=False`` so their
val losses are comparable. On CUDA the JSON also gives model FLOP/s (analytic transformer FLOPs
per sample × 3 for forward + backward) against the card's dense bf16 peak.

Large batches: ``--batch-size 512`` (``--lr`` defaults to the guide's 1e-3 × sqrt(B / 32), the
square-root scaling rule for Adam, i.e. 4e-3 at 512). Measured on an H200 (torch 2.11): at 512
the post-norm model without warm-up sometimes collapses to the base-rate predictor (val loss
~0.63) at 4e-3 and at 2e-3, depending on the seed; the ``large-batch`` command below races it,
with a warm-up, against batch 32.

``large-batch`` — the large-batch mode against batch 32 in one process: both train to early
stopping with TrainConfig's defaults (shuffled), the target is batch 32's best val loss, and the
JSON gives each run's wall time to reach it (model build and graph capture included) and the
ratio. ``--warmup-steps`` sets the linear lr warm-up (``TrainConfig.warmup_steps``) of the large
run, e.g. ``--batch-size 512 --warmup-steps 60`` (5 epochs of 12 steps at the guide's size).

``--full`` trains to early stopping (≤ 100 epochs, patience 5) and reports total seconds
(model build and compilation included) and the best val loss.

``features`` — indicators + labels on ``--rows`` generated candles, in a child process: the
median of ``--repeats`` indicator runs and TA-Lib's median for the same indicators in that same
process (when ``talib`` imports; each after one untimed warm-up call, and the first call's time,
which loads or compiles the numba loop, reported apart), the labels' seconds, and the peak RSS of
indicators + labels + window views. polars and the feature
code are imported only there: the ``train`` command needs torch and numpy alone (GPU boxes).

``fused`` — K = ``--ks`` baseline-shaped models trained in one fused step (``train_many``) against
the same K trained one after another by ``Trainer``, one epoch each, best of 3 interleaved rounds
in one process: seconds, samples/s and the ratio per K (on CUDA also FLOP/s against the peak).

``pools`` — the nightly fan-out (or ``--variants``) started at once, each variant's graph its own
``dagster asset materialize``, at each ``--limits`` value of the ``gpu`` pool: total wall time and
whether the training steps overlapped.

``contention`` — the training step idle and beside a CPU-bound competitor, with the default
thread choice and fixed thread counts (:mod:`benchmarks.contention`).

``pipeline`` — the whole graph for ``--variant`` through ``dagster asset materialize`` in a fresh
``DAGSTER_HOME``: wall time, the steps' compute time and the difference (Dagster overhead).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from patx_core.settings.config import (
    DEFAULT_WINDOW,
    N_FEATURES,
    LabelConfig,
    ModelConfig,
    TrainConfig,
)
from patx_core.model.transformer import PriceActionTransformer
from patx_core.model.trainer import Trainer, resolve_device
from patx_core.data.windows import WindowedData
from benchmarks import bf16, contention

log = logging.getLogger("benchmarks.bench")

GUIDE_BATCH = 32
FEATURE_REPEATS = 7
GUIDE_LR = 1e-3
# Dense bf16 tensor-core peaks (no sparsity), by substring of torch.cuda.get_device_name().
BF16_PEAK_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12,
                   "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "RTX 4090": 165e12}


# -- data -----------------------------------------------------------------------------------------

def make_windows(rows: int, *, window: int = DEFAULT_WINDOW, seed: int = 0) -> WindowedData:
    """Guide-shaped data: (rows, 14) float32 features, 80/20 chronological split of the windows.

    Features are AR(1) series (candle features are autocorrelated); the label depends on the last
    few rows of two features plus noise, so there is a pattern to learn and val loss means something.
    """
    if rows < window + 10:
        raise ValueError(f"--rows must be at least {window + 10} for window {window}, got {rows}")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((rows, N_FEATURES))
    matrix = np.empty_like(noise)
    matrix[0] = noise[0]
    for t in range(1, rows):  # AR(1), phi 0.8, unit variance
        matrix[t] = 0.8 * matrix[t - 1] + 0.6 * noise[t]
    recent = np.convolve(matrix[:, 0], np.ones(5) / 5, mode="full")[:rows]  # causal 5-row mean
    score = recent + 0.5 * matrix[:, 1] + 0.5 * rng.standard_normal(rows)
    labels = (score > 0.5).astype(np.float32)
    ends = np.arange(window - 1, rows, dtype=np.int64)
    n_train = int(math.floor(ends.size * 0.8))
    return WindowedData(matrix=np.ascontiguousarray(matrix, dtype=np.float32), labels=labels,
                        ends={"train": ends[:n_train], "val": ends[n_train:]}, window_size=window,
                        feature_columns=tuple(f"f{i}" for i in range(N_FEATURES)))


# -- analytic cost ----------------------------------------------------------------------------------

def model_flops_per_sample(config: ModelConfig) -> int:
    """Forward FLOPs of one window (2 per multiply-add; attention's two matmuls included)."""
    w, f, d, ff, h = config.window_size, config.input_dim, config.d_model, config.d_ff, config.head_hidden
    per_layer = 2 * w * d * 3 * d + 2 * 2 * w * w * d + 2 * w * d * d + 2 * 2 * w * d * ff
    return 2 * w * f * d + config.n_layers * per_layer + 2 * d * h + 2 * h


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_peak_flops(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in name), None)


# -- the tutorial loop, for comparison ------------------------------------------------------------

class _TutorialDataset(Dataset):
    """The guide's Dataset: one window (copied out of the view) and its label per item."""

    def __init__(self, data: WindowedData, split: str) -> None:
        self.windows = data.all_windows()
        self.starts = data.ends[split] - (data.window_size - 1)
        self.labels = data.split_labels(split)

    def __len__(self) -> int:
        return int(self.starts.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.tensor(self.windows[self.starts[i]])  # (W, F) copied out of the read-only view
        return x, torch.tensor(self.labels[i])


class TutorialLoop:
    """The tutorial training loop (fp32, DataLoader, ``.item()`` and ``.cpu()`` every step).

    Run one epoch at a time from the project loop's ``on_epoch_end``, so both loops see the same
    machine load (a shared 2-core box swings by 2× from minute to minute). Its RNG stream is kept
    apart from the project's, so interleaving changes neither run's dropout masks.
    """

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, data: WindowedData) -> None:
        self.device = resolve_device(train_config.device)
        self._cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        torch.manual_seed(train_config.seed)  # same init as Trainer: seed, then build
        self.model = PriceActionTransformer(model_config).to(self.device)
        self._rng = self._get_rng()
        self.criterion = nn.BCEWithLogitsLoss()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train_config.lr,
                                           weight_decay=train_config.weight_decay)
        self.loaders = {s: DataLoader(_TutorialDataset(data, s), batch_size=train_config.batch_size, shuffle=False)
                        for s in ("train", "val")}
        self.epoch_s: list[float] = []
        self.val_loss: list[float] = []

    def _get_rng(self) -> list[torch.Tensor]:
        return [torch.get_rng_state()] + [torch.cuda.get_rng_state(i) for i in self._cuda]

    def _set_rng(self, states: list[torch.Tensor]) -> None:
        torch.set_rng_state(states[0])
        for i, state in zip(self._cuda, states[1:]):
            torch.cuda.set_rng_state(state, i)

    def run_epoch(self) -> None:
        with torch.random.fork_rng(devices=self._cuda):
            self._set_rng(self._rng)
            self._timed_epoch()
            self._rng = self._get_rng()

    def _timed_epoch(self) -> None:
        from sklearn.metrics import accuracy_score, f1_score

        model, device = self.model, self.device
        start = time.perf_counter()
        model.train()
        total, preds, ys = 0.0, [], []
        for xb, yb in self.loaders["train"]:
            xb, yb = xb.to(device), yb.to(device)
            self.optimizer.zero_grad()
            out = model(xb)
            loss = self.criterion(out, yb)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(yb)
            preds.append((torch.sigmoid(out) > 0.5).cpu())
            ys.append(yb.cpu())
        y_train = torch.cat(ys).numpy()
        train_acc = accuracy_score(y_train, torch.cat(preds).numpy())
        model.eval()
        val_total, vpreds, vys = 0.0, [], []
        with torch.no_grad():
            for xb, yb in self.loaders["val"]:
                xb, yb = xb.to(device), yb.to(device)
                out = model(xb)
                val_total += self.criterion(out, yb).item() * len(yb)
                vpreds.append((torch.sigmoid(out) > 0.5).cpu())
                vys.append(yb.cpu())
        y_val, p_val = torch.cat(vys).numpy(), torch.cat(vpreds).numpy()
        val_acc, val_f1 = accuracy_score(y_val, p_val), f1_score(y_val, p_val, zero_division=0)
        self.val_loss.append(val_total / len(y_val))
        self.epoch_s.append(time.perf_counter() - start)
        log.info("reference epoch: train loss %.4f acc %.4f | val loss %.4f acc %.4f F1 %.4f",
                 total / len(y_train), train_acc, self.val_loss[-1], val_acc, val_f1)


def _warm_up(model_config: ModelConfig, device: torch.device, batch_size: int) -> None:
    """One throwaway step and eval so neither timed loop pays the process's first-call costs."""
    model = PriceActionTransformer(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.randn(batch_size, model_config.window_size, model_config.input_dim, device=device)
    model(x).sum().backward()
    optimizer.step()
    with torch.no_grad():
        model.eval()(x)


# -- commands ---------------------------------------------------------------------------------------

def bench_train(*, rows: int, epochs: int, batch_size: int, device: str, reference: bool = False,
                lr: float | None = None,
                full: bool = False, seed: int = TrainConfig.seed) -> dict[str, Any]:
    """Time the project loop (and, interleaved epoch by epoch, the tutorial loop) on guide-shaped data."""
    if full and reference:
        raise ValueError("--reference compares fixed epochs; run it without --full")
    data = make_windows(rows)
    model_config = ModelConfig()
    lr = scaled_lr(batch_size, lr)
    max_epochs = 100 if full else epochs
    train_config = TrainConfig(lr=lr, batch_size=batch_size, max_epochs=max_epochs,
                               patience=5 if full else max_epochs + 1, shuffle=False, seed=seed,
                               device=device)
    dev = resolve_device(device)
    _warm_up(model_config, dev, batch_size)
    tutorial = TutorialLoop(model_config, train_config, data) if reference else None
    on_epoch_end = (lambda epoch, metrics: tutorial.run_epoch()) if tutorial else None
    wall_start = time.perf_counter()
    history = Trainer(model_config, train_config, data, on_epoch_end=on_epoch_end).train()
    # The project's own wall time: the interleaved tutorial epochs ran inside its callbacks.
    wall = time.perf_counter() - wall_start - (sum(tutorial.epoch_s) if tutorial else 0.0)
    n_train, n_val = data.n_sequences("train"), data.n_sequences("val")
    epoch_s = history["epoch_seconds"]
    median = statistics.median(epoch_s)
    fwd = model_flops_per_sample(model_config)
    flop_per_s = (3 * fwd * n_train + fwd * n_val) / median
    name = device_name(dev)
    peak = bf16_peak_flops(name) if dev.type == "cuda" else None
    out: dict[str, Any] = {
        "bench": "train_full" if full else "train", "rows": rows, "window": data.window_size,
        "train_windows": n_train, "val_windows": n_val, "batch_size": history["batch_size"], "lr": lr,
        "device": str(dev), "device_name": name, "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "amp_bf16": dev.type == "cuda" and train_config.amp, "params": history["params"],
        "epochs_run": history["epochs_run"], "steps_per_epoch": math.ceil(n_train / history["batch_size"]),
        "epoch_s": [round(s, 4) for s in epoch_s], "median_epoch_s": median,
        "steady_epoch_s": statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else median,
        "samples_per_s": n_train / median, "final_val_loss": history["val_loss"][-1],
        "best_val_loss": history["best_val_loss"], "best_epoch": history["best_epoch"],
        "train_wall_s": wall, "model_fwd_flops_per_sample": fwd, "model_flop_per_s": flop_per_s,
        "bf16_peak_flop_per_s": peak, "fraction_of_bf16_peak": flop_per_s / peak if peak else None,
    }
    if full:
        out.update(total_seconds=history["seconds"], stopped_early=history["stopped_early"])
    if tutorial:
        ref_median = statistics.median(tutorial.epoch_s)
        out.update(reference_epoch_s=[round(s, 4) for s in tutorial.epoch_s], reference_median_epoch_s=ref_median,
                   reference_final_val_loss=tutorial.val_loss[-1], speedup=ref_median / median,
                   # Fastest epoch of each: other load only ever adds time, so on a shared box
                   # this ratio is the steadier one.
                   speedup_min=min(tutorial.epoch_s) / min(epoch_s))
        if len(epoch_s) > 1:
            out["steady_speedup"] = statistics.median(tutorial.epoch_s[1:]) / out["steady_epoch_s"]
    return out


def seconds_to_val_loss(history: dict[str, Any], target: float) -> float | None:
    """Wall seconds from the start of the training run (model build and graph capture included)
    to the end of the first epoch whose val loss is ``<= target``; ``None`` if none reached it.
    ``history["seconds"]`` minus the epochs is counted as set-up (it also holds the ms that restore
    the best weights after the last epoch)."""
    elapsed = history["seconds"] - sum(history["epoch_seconds"])  # setup before the first epoch
    for loss, seconds in zip(history["val_loss"], history["epoch_seconds"]):
        elapsed += seconds
        if loss <= target:
            return elapsed
    return None


def bench_large_batch(*, rows: int, batch_size: int, device: str, warmup_steps: int, lr: float | None = None,
                      reference_batch: int = GUIDE_BATCH, seed: int = TrainConfig.seed) -> dict[str, Any]:
    """Large-batch mode against the guide's batch in the same process: both train to early stopping
    (TrainConfig's defaults, shuffled); the target is the reference run's best val loss, and the
    result is each run's wall time to reach it."""
    data = make_windows(rows)
    model_config = ModelConfig()
    dev = resolve_device(device)
    runs: dict[str, dict[str, Any]] = {}
    for name, batch, warmup, run_lr in (("reference", reference_batch, 0, scaled_lr(reference_batch, None)),
                                        ("large", batch_size, warmup_steps, scaled_lr(batch_size, lr))):
        _warm_up(model_config, dev, batch)
        config = TrainConfig(lr=run_lr, batch_size=batch, warmup_steps=warmup, seed=seed, device=device)
        history = Trainer(model_config, config, data).train()
        runs[name] = {"batch_size": history["batch_size"], "lr": run_lr, "warmup_steps": warmup,
                      "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
                      "best_val_loss": history["best_val_loss"], "total_seconds": history["seconds"],
                      "median_epoch_s": statistics.median(history["epoch_seconds"]),
                      "val_loss": [round(v, 4) for v in history["val_loss"]],
                      "cuda_graph": history["cuda_graph"], "_history": history}
    target = runs["reference"]["best_val_loss"]
    for run in runs.values():
        run["seconds_to_target"] = seconds_to_val_loss(run.pop("_history"), target)
    large_s, reference_s = runs["large"]["seconds_to_target"], runs["reference"]["seconds_to_target"]
    return {"bench": "large_batch", "rows": rows, "train_windows": data.n_sequences("train"), "device": str(dev),
            "device_name": device_name(dev), "torch": torch.__version__, "seed": seed, "target_val_loss": target,
            "reference": runs["reference"], "large": runs["large"],
            "speedup_to_target": reference_s / large_s if large_s else None}


def scaled_lr(batch_size: int, lr: float | None) -> float:
    """``lr`` if given, else the guide's 1e-3 scaled by sqrt(batch_size / 32) (Adam's square-root rule)."""
    return GUIDE_LR * math.sqrt(batch_size / GUIDE_BATCH) if lr is None else lr


def make_candles(rows: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Consistent OHLCV numpy columns (a geometric random walk), shared by patx and TA-Lib timings."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(rows)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(0.002 * rng.standard_normal(rows))
    spread = np.abs(0.01 * rng.standard_normal(rows)) * close
    high = np.maximum(open_, close) + spread * rng.uniform(0.1, 1.0, rows)
    low = np.maximum(np.minimum(open_, close) - spread * rng.uniform(0.1, 1.0, rows), 1e-3)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(1e5, 1e6, rows)}


def _features_child(rows: int, seed: int, repeats: int) -> dict[str, Any]:
    """Indicators + labels + window views in a fresh process, so its peak RSS is theirs alone; then
    TA-Lib's time for the same indicators in this same process (after the RSS is read)."""
    import resource

    import polars as pl

    from patx_core.data.features import FEATURE_COLUMNS, compute_indicators
    from patx_core.data.labels import triple_barrier

    cols = make_candles(rows, seed=seed)
    ts = np.datetime64("2000-01-03", "us") + np.arange(rows).astype("timedelta64[D]")
    raw = pl.DataFrame({"timestamp": ts, **cols}).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The first call also loads (or, on a new machine, compiles) the numba loop: reported on its
    # own, and kept out of the steady-state figure compared with TA-Lib.
    start = time.perf_counter()
    indicators = compute_indicators(raw)
    first_call_s = time.perf_counter() - start
    indicators_runs = _timed_runs(lambda: compute_indicators(raw), repeats)
    atr = indicators["atr_14"].to_numpy().astype(np.float64)
    start = time.perf_counter()
    result = triple_barrier(cols["open"], cols["high"], cols["low"], cols["close"], atr, LabelConfig())
    labels_s = time.perf_counter() - start
    matrix = np.ascontiguousarray(indicators.select(FEATURE_COLUMNS).to_numpy(), dtype=np.float32)
    labels = result.label.astype(np.float32)
    valid = np.isfinite(labels) & np.isfinite(matrix).all(axis=1)
    ends = np.flatnonzero(valid)
    ends = ends[ends >= DEFAULT_WINDOW - 1].astype(np.int64)
    data = WindowedData(matrix=matrix, labels=labels, ends={"all": ends}, window_size=DEFAULT_WINDOW,
                        feature_columns=tuple(FEATURE_COLUMNS))
    windows = data.all_windows()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    talib_runs = _talib_runs(cols, repeats)
    indicators_s = statistics.median(indicators_runs)
    talib_s = statistics.median(talib_runs) if talib_runs else None
    return {"indicators_s": indicators_s, "indicators_runs_s": indicators_runs,
            "indicators_first_call_s": first_call_s, "labels_s": labels_s,
            "talib_s": talib_s, "talib_runs_s": talib_runs,
            "ratio_vs_talib": indicators_s / talib_s if talib_s else None,
            "windows_shape": list(windows.shape), "windows_share_memory": bool(np.shares_memory(windows, matrix)),
            "rss_after_imports_mb": rss_before / 1024, "peak_rss_mb": rss_peak / 1024}


def _timed_runs(fn: Callable[[], object], repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return runs


def _talib_runs(cols: dict[str, np.ndarray], repeats: int) -> list[float]:
    """TA-Lib's C implementation of the same 9 indicator columns (the two band ratios in numpy),
    after one untimed call; empty when ``talib`` does not import."""
    try:
        import talib
    except ImportError:
        return []
    high, low, close = cols["high"], cols["low"], cols["close"]

    def run() -> None:
        talib.EMA(close, 50)
        talib.EMA(close, 200)
        talib.RSI(close, 14)
        upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0)
        _ = (upper - lower) / middle, (close - lower) / (upper - lower)
        talib.ATR(high, low, close, 14)

    run()
    return _timed_runs(run, repeats)


def bench_features(*, rows: int, seed: int = 0, repeats: int = FEATURE_REPEATS) -> dict[str, Any]:
    """Median seconds of ``repeats`` indicator runs vs TA-Lib's (same process, after a warm-up
    call each), labels, and peak memory."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        child = pool.submit(_features_child, rows, seed, repeats).result()
    return {"bench": "features", "rows": rows, "seconds": child["indicators_s"] + child["labels_s"], **child,
            "repeats": repeats, "device_name": device_name(torch.device("cpu")), "cpus": os.cpu_count()}


def _universe_child(symbols: int, rows: int, seed: int, feature_set: str) -> dict[str, Any]:
    """features + labels + splits + windows of a synthetic universe in a fresh process, so the peak
    RSS is the data path's alone (the input frame included)."""
    import resource

    import polars as pl

    from patx_core.settings.config import DataConfig, SplitConfig
    from patx_core.data.splits import build_feature_table, split_dataset

    start_day = np.datetime64("2000-01-03", "us")
    frames = []
    for i in range(symbols):
        cols = make_candles(rows, seed=seed + i)
        # ragged like a real universe: each symbol lists on its own day (0-2 years apart)
        first = start_day + np.timedelta64(int(i * 730 / max(symbols, 1)), "D")
        ts = first + np.arange(rows).astype("timedelta64[D]")
        frames.append(pl.DataFrame({"symbol": f"S{i:04d}", "timestamp": ts, **cols}))
    raw = pl.concat(frames).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    del frames
    data, labels = DataConfig(feature_set=feature_set), LabelConfig()
    times: dict[str, float] = {}
    start = time.perf_counter()
    table = build_feature_table(raw, data, labels)
    times["features_labels_s"] = time.perf_counter() - start
    start = time.perf_counter()
    ds = split_dataset(table, SplitConfig(), labels, data)
    times["splits_s"] = time.perf_counter() - start
    start = time.perf_counter()
    windows = ds.to_windows()
    times["windows_s"] = time.perf_counter() - start
    views = bool(np.shares_memory(windows.all_windows(), windows.matrix))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {**{k: round(v, 2) for k, v in times.items()}, "seconds": round(sum(times.values()), 2),
            "peak_rss_mb": round(peak_mb, 1), "windows_are_views": views,
            "samples": {s: windows.n_sequences(s) for s in windows.splits},
            "matrix_mb": round(windows.matrix.nbytes / 2**20, 1)}


def bench_universe(*, symbols: int, rows: int, seed: int = 0, feature_set: str = "seed") -> dict[str, Any]:
    """The data path of a many-symbol dataset: features + labels + splits + windows, seconds and
    peak RSS of a fresh process (targets on 2 cores for 500 × 5,000: under 60 s and 4 GB)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        child = pool.submit(_universe_child, symbols, rows, seed, feature_set).result()
    return {"bench": "universe", "symbols": symbols, "rows_per_symbol": rows, "candles": symbols * rows,
            "feature_set": feature_set, **child, "cpu": device_name(torch.device("cpu")), "cores": os.cpu_count()}


_STEP_DONE = re.compile(r'Finished execution of step "(\w+)" in ((?:[\d.]+(?:ms|h|m|s))+)')
_STEP_EVENT = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) .* - (\w+) - (STEP_START|STEP_SUCCESS|STEP_FAILURE) - ',
                         re.MULTILINE)
_PART = re.compile(r"([\d.]+)(ms|h|m|s)")


def _step_seconds(log: str) -> dict[str, float]:
    """Each step's compute time from a Dagster CLI log: the "Finished execution of step … in 1m34s"
    line where there is one, else (a failed step) its STEP_START → STEP_FAILURE timestamps (1 s)."""
    from datetime import datetime

    # Imported here: intervals needs polars, which the training benchmarks run without.
    from patx_core.data.intervals import UNIT_SECONDS

    steps = {name: sum(float(v) * UNIT_SECONDS[u] for v, u in _PART.findall(text)) for name, text in _STEP_DONE.findall(log)}
    starts: dict[str, datetime] = {}
    for stamp, step, event in _STEP_EVENT.findall(log):
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
        if event == "STEP_START":
            starts[step] = when
        elif step not in steps and step in starts:
            steps[step] = (when - starts[step]).total_seconds()
    return steps


def bench_pipeline(*, variant: str, raw: str | None = None, dataset: str = "nasdaq") -> dict[str, Any]:
    """Wall time of ``dagster asset materialize --select '*latest_signal' --partition DATASET|VARIANT``
    (what ``make materialize`` runs, leaderboard aside) in a fresh home,
    split into the steps' own compute time (from Dagster's "Finished execution of step … in Xs"
    lines) and everything else: process start-up, imports, IO-manager and event-log overhead.

    Runs the Dagster CLI as a subprocess, so patx_core itself still never imports dagster.
    """
    import subprocess
    import tempfile

    from patx_core.storage.paths import REPO_ROOT

    with tempfile.TemporaryDirectory(prefix="patx-bench-") as tmp:
        env = _fresh_instance(tmp, "pipeline", raw, dataset)
        cmd = [_dagster_cli(), "asset", "materialize", "-m", "patx_dagster", "--select", "*latest_signal",
               "--partition", f"{dataset}|{variant}", *DEBUG_EVENTS]
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
    log = out.stdout + out.stderr
    steps = _step_seconds(log)
    compute = sum(steps.values())
    return {"bench": "pipeline", "dataset": dataset, "variant": variant, "exit_code": out.returncode,
            "gate_failed": "precision gate failed" in log, "wall_s": round(wall, 2),
            "steps_s": {k: round(v, 2) for k, v in steps.items()}, "compute_s": round(compute, 2),
            "dagster_overhead_s": round(wall - compute, 2), "cpu": device_name(torch.device("cpu")),
            "cores": os.cpu_count(), "torch": torch.__version__}


def _fresh_instance(tmp: str, name: str, raw: str | None, dataset: str = "nasdaq") -> dict[str, str]:
    """Environment for Dagster CLI calls against a new DAGSTER_HOME (the project's instance.yaml) and
    a new PATX_DATA_DIR under ``tmp``; ``raw`` (a file, folder or glob) becomes ``dataset``'s source."""
    import shutil

    from patx_core.storage.paths import REPO_ROOT

    home = os.path.join(tmp, name, "home")
    os.makedirs(home)
    shutil.copy(REPO_ROOT / "instance.yaml", os.path.join(home, "dagster.yaml"))
    env = {**os.environ, "DAGSTER_HOME": home, "PATX_DATA_DIR": os.path.join(tmp, name, "data")}
    if raw:
        datasets = os.path.join(tmp, name, "datasets.toml")
        with open(datasets, "w", encoding="utf-8") as f:
            f.write(f'[{dataset}]\nsource = "{os.path.abspath(raw)}"\ninterval = "1d"\n')
        env["PATX_DATASETS"] = datasets
    return env


def _shipped_pool_limit() -> int:
    """``concurrency.pools.default_limit`` of the project's instance.yaml."""
    import yaml

    from patx_core.storage.paths import REPO_ROOT

    return int(yaml.safe_load((REPO_ROOT / "instance.yaml").read_text())["concurrency"]["pools"]["default_limit"])


def _dagster_cli() -> str:
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    return dagster if os.path.exists(dagster) else "dagster"


#: The step timings are read from Dagster's DEBUG events (STEP_START/STEP_SUCCESS, "Step blocked
#: by limit for pool"), which instance.yaml's INFO level keeps off a shell run's console.
DEBUG_EVENTS = ["--config-json", json.dumps({"loggers": {"console": {"config": {"log_level": "DEBUG"}}}})]


def _intervals_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` intervals open at one moment (touching ends don't count)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def bench_pools(*, variants: Sequence[str], limits: Sequence[int | None], raw: str | None = None,
                step: str = "trained_model") -> dict[str, Any]:
    """The nightly fan-out at each ``gpu`` pool limit: every variant's whole graph as its own
    ``dagster asset materialize`` process, all started at once against one fresh instance (the
    project's ``instance.yaml``) whose limit was set with ``dagster instance concurrency set gpu N``;
    a limit of ``None`` keeps what ``instance.yaml`` ships. All runs start together: the run queue
    would hold back runs beyond ``max_concurrent_runs`` (4 in ``instance.yaml``), so pass at most
    that many variants to measure what a night does. Reports the total wall time per limit, when
    each run's training step ran (log timestamps, 1 s resolution) and the most at once.
    """
    import subprocess
    import tempfile
    from datetime import datetime

    from patx_core.storage.paths import REPO_ROOT

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="patx-pools-") as tmp:
        for index, limit in enumerate(limits):
            env = _fresh_instance(tmp, f"run{index}", raw)
            # Create the instance's storage first: N processes creating a fresh SQLite store at
            # once race, and one fails within seconds.
            subprocess.run([_dagster_cli(), "instance", "migrate"], env=env, cwd=REPO_ROOT, check=True,
                           capture_output=True)
            # "shipped" sets the pool to instance.yaml's default limit first, as `make setup` does: a
            # brand-new instance creates a default-limit pool's slots lazily, and two runs claiming
            # at the same moment can each create one (a race in Dagster's set-up) and train together.
            subprocess.run([_dagster_cli(), "instance", "concurrency", "set", "gpu",
                            str(_shipped_pool_limit() if limit is None else limit)], env=env,
                           cwd=REPO_ROOT, check=True, capture_output=True)
            start = time.perf_counter()
            procs = {v: subprocess.Popen([_dagster_cli(), "asset", "materialize", "-m", "patx_dagster", "--select",
                                          "*latest_signal", "--partition", f"nasdaq|{v}", *DEBUG_EVENTS], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True) for v in variants}
            runs: dict[str, Any] = {}
            # one waiting thread per run, so each run's own finish time is recorded
            with ThreadPoolExecutor(max_workers=len(procs)) as waiters:
                done = {v: waiters.submit(lambda p: (p.communicate()[0], time.perf_counter()), proc)
                        for v, proc in procs.items()}
            for variant, proc in procs.items():
                log, finished = done[variant].result()
                events = {(s, e): datetime.strptime(t, "%Y-%m-%d %H:%M:%S").timestamp()
                          for t, s, e in _STEP_EVENT.findall(log) if s == step}
                end = events.get((step, "STEP_SUCCESS"), events.get((step, "STEP_FAILURE")))
                runs[variant] = {"exit_code": proc.returncode, "wall_s": round(finished - start, 2),
                                 "gate_failed": "precision gate failed" in log,
                                 "step_s": _step_seconds(log).get(step),
                                 "blocked_by_pool": "Step blocked by limit for pool gpu" in log,
                                 "step_window": [events.get((step, "STEP_START")), end]}
                if proc.returncode != 0 and not runs[variant]["gate_failed"]:
                    runs[variant]["log_tail"] = log[-2000:]  # failed for another reason than the gate
            wall = time.perf_counter() - start
            windows = [tuple(r["step_window"]) for r in runs.values() if None not in r["step_window"]]
            origin = min((w[0] for w in windows), default=0.0)
            for r in runs.values():  # seconds after the first training step started
                r["step_window"] = [None if t is None else t - origin for t in r["step_window"]]
            key = "shipped" if limit is None else str(limit)
            results[key] = {"wall_s": round(wall, 2), "max_concurrent_steps": _intervals_overlap(windows),
                            "runs": runs}
    out: dict[str, Any] = {"bench": "pools", "variants": list(variants), "step": step, "limits": results,
                           "cpu": device_name(torch.device("cpu")), "cores": os.cpu_count(),
                           "torch": torch.__version__,
                           "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if len(results) == 2:
        first, second = (r["wall_s"] for r in results.values())
        out["wall_ratio"] = first / second  # > 1: the second limit finished the fan-out sooner
    return out


def bench_walk_forward(*, variant: str, dataset: str = "nasdaq", raw: str | None = None,
                       gpu_workers: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """Wall time of the ``walk_forward`` asset of one (dataset, variant) on Celery, one fold per
    step, with each count of ``gpu``-queue workers in ``gpu_workers`` (one task process each, the
    ``gpu`` pool set to the same count) and one ``cpu`` worker, against a fresh instance
    (``deploy/celery/dagster.yaml``) and a ``redis-server`` of its own on a free loopback port.

    The upstream cell (raw prices, features) is materialized in process first and not timed; each
    timed run is ``dagster asset materialize --select walk_forward`` from start to exit. The folds
    must come out identical at every worker count (``identical``). ``raw`` replaces the dataset's
    source. Workers and broker are stopped however the bench ends.
    """
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    from patx_core.storage.paths import REPO_ROOT, DatasetPaths
    from patx_dagster.workers import start_redis, start_worker, worker_env

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="patx-bench-") as tmp:
        env = _fresh_instance(tmp, "walk_forward", raw, dataset)
        shutil.copy(REPO_ROOT / "deploy" / "celery" / "dagster.yaml", os.path.join(env["DAGSTER_HOME"], "dagster.yaml"))
        partition = ["--partition", f"{dataset}|{variant}"]
        cli = [_dagster_cli(), "asset", "materialize", "-m", "patx_dagster"]
        up = subprocess.run([*cli, "--select", "ingested_candles,raw_prices,features", *partition], cwd=REPO_ROOT,
                            env={**env, "PATX_EXECUTOR": "in_process"}, capture_output=True, text=True, check=False)
        if up.returncode != 0:
            raise RuntimeError(f"upstream materialization failed:\n{(up.stdout + up.stderr)[-3000:]}")
        report = DatasetPaths.for_dataset(dataset, env["PATX_DATA_DIR"]).variant(variant).report_dir
        broker = f"redis://127.0.0.1:{free_port()}/0"
        server = start_redis(int(broker.rsplit(":", 1)[1].split("/")[0]), Path(tmp) / "redis")
        try:
            for n in gpu_workers:
                wenv = worker_env(broker, env)
                started = []
                try:
                    started.append(start_worker("cpu", "cpu1", Path(tmp) / "logs" / f"cpu1_{n}.log", env=wenv))
                    for i in range(1, n + 1):
                        started.append(start_worker("gpu", f"gpu{i}", Path(tmp) / "logs" / f"gpu{i}_{n}.log", env=wenv))
                    subprocess.run([_dagster_cli(), "instance", "concurrency", "set", "gpu", str(n)], env=env,
                                   capture_output=True, check=True)
                    start = time.perf_counter()
                    out = subprocess.run([*cli, "--select", "walk_forward", *partition], cwd=REPO_ROOT, env=wenv,
                                         capture_output=True, text=True, check=False)
                    wall = time.perf_counter() - start
                finally:
                    for w in started:
                        w.stop()
                if out.returncode != 0:
                    raise RuntimeError(f"walk_forward with {n} gpu worker(s) failed:\n{(out.stdout + out.stderr)[-3000:]}")
                body = json.loads((report / "walk_forward.json").read_text())
                runs[str(n)] = {"wall_s": round(wall, 2), "stitched_seconds": round(body["summary"]["seconds"], 2),
                                "fold_seconds": [round(f["seconds"], 2) for f in body["folds"]],
                                "folds": [{k: v for k, v in f.items() if k != "seconds"} for f in body["folds"]]}
        finally:
            server.stop()
    folds = [r.pop("folds") for r in runs.values()]
    first, last = (runs[str(n)]["wall_s"] for n in (gpu_workers[0], gpu_workers[-1]))
    return {"benchmark": "walk-forward", "executor": "celery", "source": raw or dataset, "variant": variant,
            "folds": len(folds[0]), "gpu_workers": runs, "identical": all(f == folds[0] for f in folds),
            "wall_ratio": first / last, "load_avg_1min": os.getloadavg()[0]}


def bench_fused(*, ks: Sequence[int], steps: int, device: str, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """K baseline-shaped models trained fused (``train_many``) against the same K trained one
    after another (``Trainer``), one epoch each, best of ``repeats`` rounds interleaved.

    An epoch is ``steps`` batches of 32 windows plus the val pass (the 80/20 split of
    :func:`make_windows`); each model has its own seed, the same data. ``samples_per_s`` counts
    train windows per second of epoch time (``history["epoch_seconds"]``, model build excluded).
    On CUDA the fused step is CUDA-graphed and the JSON gives model FLOP/s against the card's peak.
    """
    from patx_core.model.fused import EXECUTOR_ENV, fuses, train_many

    config = ModelConfig()
    rows = math.ceil(steps * GUIDE_BATCH / 0.8) + config.window_size - 1
    data = make_windows(rows, window=config.window_size, seed=seed)
    n_train = data.n_sequences("train")
    dev = resolve_device(device)

    def cfg(k: int) -> TrainConfig:
        return TrainConfig(device=str(dev), max_epochs=1, seed=seed + k, batch_size=GUIDE_BATCH)

    def fused(k: int) -> float:
        # The fused step itself, whatever the engine's rule would choose for this device.
        saved = os.environ.get(EXECUTOR_ENV)
        os.environ[EXECUTOR_ENV] = "fused"
        try:
            return train_many(config, [cfg(j) for j in range(k)], [data] * k)[0][1]["epoch_seconds"][0]
        finally:
            if saved is None:
                del os.environ[EXECUTOR_ENV]
            else:
                os.environ[EXECUTOR_ENV] = saved

    def one_by_one(k: int) -> float:
        return sum(Trainer(config, cfg(j), data).train()["epoch_seconds"][0] for j in range(k))

    times: dict[int, dict[str, list[float]]] = {k: {"fused": [], "sequential": []} for k in ks}
    fused(1), one_by_one(1)  # untimed: first-call allocations and kernel selection
    for _ in range(repeats):  # interleaved, so a load change hits both sides alike
        for k in ks:
            times[k]["fused"].append(fused(k))
            times[k]["sequential"].append(one_by_one(k))
    name = device_name(dev)
    peak = bf16_peak_flops(name) if dev.type == "cuda" else None
    flops = 3 * model_flops_per_sample(config)  # forward + backward per train window
    rows_out = []
    for k in ks:
        f, q = min(times[k]["fused"]), min(times[k]["sequential"])
        row = {"k": k, "fused_s": f, "sequential_s": q, "ratio": q / f,
               "fused_samples_per_s": k * n_train / f, "sequential_samples_per_s": k * n_train / q,
               "fused_runs_s": times[k]["fused"], "sequential_runs_s": times[k]["sequential"],
               "engine_fuses": fuses(dev, k)}  # what train_many does here by its rule (FUSE_FROM_K)
        if peak:
            row["fused_flops_fraction_of_peak"] = k * n_train * flops / f / peak
        rows_out.append(row)
    return {"command": "fused", "device": str(dev), "device_name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "steps_per_epoch": steps, "train_windows": n_train,
            "val_windows": data.n_sequences("val"), "repeats": repeats, "bf16_peak_flops": peak,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "rows": rows_out}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="time training epochs (project loop, optionally vs the tutorial loop)")
    train.add_argument("--rows", type=int, default=2000)
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--batch-size", type=int, default=GUIDE_BATCH)
    train.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    train.add_argument("--reference", action="store_true", help="also run the tutorial DataLoader loop")
    train.add_argument("--lr", type=float, default=None, help="default: 1e-3 * sqrt(batch_size / 32)")
    train.add_argument("--full", action="store_true", help="train to early stopping (<= 100 epochs)")
    train.add_argument("--seed", type=int, default=TrainConfig.seed)
    pipe = sub.add_parser("pipeline", help="time the whole graph for one variant through `dagster asset materialize`")
    pipe.add_argument("--variant", default="smoke")
    pipe.add_argument("--raw", default=None, help="candles for the `nasdaq` dataset (default: its datasets.toml source)")
    pools = sub.add_parser("pools", help="all nightly variants at once, at each gpu pool limit")
    pools.add_argument("--variants", default=None,
                       help="comma-separated partitions (default: the variants file's nightly ones)")
    pools.add_argument("--limits", default="1,2",
                       help="comma-separated pool limits to compare; 'shipped' = instance.yaml's own")
    pools.add_argument("--raw", default=None, help="candles for the `nasdaq` dataset (default: its datasets.toml source)")
    large = sub.add_parser("large-batch", help="time to the batch-32 val loss: large batch (+ warm-up) vs batch 32")
    large.add_argument("--rows", type=int, default=7243)
    large.add_argument("--batch-size", type=int, default=512)
    large.add_argument("--warmup-steps", type=int, default=TrainConfig.warmup_steps,
                       help="linear lr warm-up steps (TrainConfig.warmup_steps)")
    large.add_argument("--lr", type=float, default=None, help="default: 1e-3 * sqrt(batch_size / 32)")
    large.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    large.add_argument("--seed", type=int, default=TrainConfig.seed)
    feats = sub.add_parser("features", help="time indicators + labels and measure peak memory")
    feats.add_argument("--rows", type=int, default=1_000_000)
    feats.add_argument("--seed", type=int, default=0)
    feats.add_argument("--repeats", type=int, default=FEATURE_REPEATS, help="timed runs of each side (median)")
    uni = sub.add_parser("universe", help="features + labels + splits + windows of a synthetic many-symbol dataset")
    uni.add_argument("--symbols", type=int, default=500)
    uni.add_argument("--rows", type=int, default=5000, help="candles per symbol")
    uni.add_argument("--seed", type=int, default=0)
    uni.add_argument("--feature-set", default="seed", choices=["seed", "relative"])
    wf = sub.add_parser("walk-forward", help="the walk_forward asset on Celery with 1, 2, ... gpu workers")
    wf.add_argument("--dataset", default="nasdaq", help="a dataset of datasets.toml ($PATX_DATASETS)")
    wf.add_argument("--variant", default="smoke")
    wf.add_argument("--raw", default=None, help="candles (parquet file, folder or glob) instead of the dataset's")
    wf.add_argument("--gpu-workers", default="1,2", help="comma-separated gpu-queue worker counts to compare")
    fz = sub.add_parser("fused", help="K models fused in one step vs the same K one after another")
    fz.add_argument("--ks", default="1,2,4,6,8", help="comma-separated model counts")
    fz.add_argument("--steps", type=int, default=20, help="train batches of 32 per epoch")
    fz.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best of each side counts")
    fz.add_argument("--device", default="cpu", help="cpu, cuda[:N], auto")
    sel = sub.add_parser("selection", help="false-promotion rate of N edgeless models: literal gate vs + selection gate")
    sel.add_argument("--campaigns", type=int, default=2000)
    sel.add_argument("--looks", default="1,10,50", help="comma-separated models per campaign (N)")
    sel.add_argument("--true-precision", default="0.65,0.70", help="comma-separated true precisions of the models")
    sel.add_argument("--seed", type=int, default=0)
    sel.add_argument("--workers", type=int, default=None, help="judging processes (default: the usable cores)")
    contention.add_parser(sub)
    bf16.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # Use every core this process may run on (not the machine's count under a cgroup/affinity mask).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cores or 1))
    if args.command == "selection":
        from benchmarks.selection import bench_selection

        for row in bench_selection(campaigns=args.campaigns, looks=[int(n) for n in args.looks.split(",")],
                                   precisions=[float(q) for q in args.true_precision.split(",")], seed=args.seed,
                                   workers=args.workers):
            print(json.dumps(row), flush=True)
        return 0
    if args.command == "train":
        result = bench_train(rows=args.rows, epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                             reference=args.reference, lr=args.lr, full=args.full, seed=args.seed)
    elif args.command == "pipeline":
        result = bench_pipeline(variant=args.variant, raw=args.raw)
    elif args.command == "pools":
        from patx_core.settings.variants import load_variants

        names = (args.variants.split(",") if args.variants
                 else [name for name, v in load_variants().items() if v.nightly])
        limits = [None if n == "shipped" else int(n) for n in args.limits.split(",")]
        result = bench_pools(variants=names, limits=limits, raw=args.raw)
    elif args.command == "large-batch":
        result = bench_large_batch(rows=args.rows, batch_size=args.batch_size, device=args.device,
                                   warmup_steps=args.warmup_steps, lr=args.lr, seed=args.seed)
    elif args.command == "universe":
        result = bench_universe(symbols=args.symbols, rows=args.rows, seed=args.seed, feature_set=args.feature_set)
    elif args.command == "fused":
        result = bench_fused(ks=[int(k) for k in args.ks.split(",")], steps=args.steps, device=args.device,
                             repeats=args.repeats)
    elif args.command == "contention":
        result = contention.run(args)
    elif args.command == "bf16":
        result = bf16.run(args)
    elif args.command == "walk-forward":
        result = bench_walk_forward(variant=args.variant, dataset=args.dataset, raw=args.raw,
                                    gpu_workers=[int(n) for n in args.gpu_workers.split(",")])
    else:
        result = bench_features(rows=args.rows, seed=args.seed, repeats=args.repeats)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
