"""The benchmark entry point: guide shapes, one JSON line, no polars for `train`, honest FLOP counts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench import make_windows, model_flops_per_sample
from patx_core.settings.config import ModelConfig
from patx_core.model.transformer import PriceActionTransformer

# Runs the CLI as a GPU box would: polars and dagster absent (importing either raises).
NO_POLARS_CLI = """
import importlib.abc, runpy, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("polars", "dagster"):
            raise ImportError(f"{name} is not installed on this (simulated GPU) box")

sys.meta_path.insert(0, Block())
sys.argv = ["benchmarks.bench", *sys.argv[1:]]
runpy.run_module("benchmarks.bench", run_name="__main__")
"""


def test_train_bench_prints_one_json_line_without_polars() -> None:
    args = ["train", "--rows", "140", "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--reference"]
    proc = subprocess.run([sys.executable, "-c", NO_POLARS_CLI, *args], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["train_windows"] == 61 and result["val_windows"] == 16  # 80/20 of 140 - 63 windows
    assert result["steps_per_epoch"] == 1 and result["params"] == 406_785
    assert result["lr"] == pytest.approx(1e-3 * (64 / 32) ** 0.5)  # the documented sqrt scaling
    assert result["device"] == "cpu" and result["torch"] == torch.__version__ and result["device_name"]
    assert result["median_epoch_s"] > 0 and result["samples_per_s"] > 0 and len(result["epoch_s"]) == 1
    assert np.isfinite(result["final_val_loss"]) and np.isfinite(result["reference_final_val_loss"])
    assert result["speedup"] == pytest.approx(result["reference_median_epoch_s"] / result["median_epoch_s"])


def test_generated_data_has_the_guides_shapes() -> None:
    data = make_windows(7243)  # the guide-sized series
    assert data.matrix.shape == (7243, 14) and data.matrix.dtype == np.float32
    assert data.n_sequences("train") == 5744 and data.window_size == 64
    assert data.ends["train"][-1] < data.ends["val"][0]  # chronological
    assert 0.1 < data.split_labels("train").mean() < 0.9


def test_analytic_flops_match_torchs_flop_counter() -> None:
    config = ModelConfig()
    model = PriceActionTransformer(config).train()  # train mode: the counted (non-fused) attention path
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, config.window_size, config.input_dim))
    assert model_flops_per_sample(config) == counter.get_total_flops() / 2


def test_features_bench_reports_time_and_peak_memory() -> None:
    pytest.importorskip("polars")
    pytest.importorskip("patx_core.data.labels")  # written alongside; the bench imports it lazily
    from benchmarks.bench import bench_features

    result = bench_features(rows=3000, repeats=3)
    assert result["seconds"] == pytest.approx(result["indicators_s"] + result["labels_s"])
    # both sides timed in the same process, steady state, median of the repeats
    assert len(result["indicators_runs_s"]) == len(result["talib_runs_s"]) == 3
    assert result["indicators_s"] == sorted(result["indicators_runs_s"])[1]
    assert result["ratio_vs_talib"] == pytest.approx(result["indicators_s"] / result["talib_s"])
    assert result["peak_rss_mb"] >= result["rss_after_imports_mb"] > 0
    assert result["windows_share_memory"] is True and result["windows_shape"] == [3000 - 63, 64, 14]


def test_seconds_to_val_loss_counts_setup_and_epochs_up_to_the_first_hit() -> None:
    from benchmarks.bench import seconds_to_val_loss

    history = {"seconds": 10.0, "epoch_seconds": [2.0, 2.0, 2.0, 2.0], "val_loss": [0.6, 0.5, 0.4, 0.45]}
    assert seconds_to_val_loss(history, 0.5) == pytest.approx(2.0 + 2.0 + 2.0)  # 2 s setup, 2 epochs
    assert seconds_to_val_loss(history, 0.45) == pytest.approx(2.0 + 6.0)
    assert seconds_to_val_loss(history, 0.3) is None


@pytest.mark.slow
def test_large_batch_bench_races_both_batches_to_the_reference_loss_without_polars() -> None:
    args = ["large-batch", "--rows", "200", "--batch-size", "64", "--warmup-steps", "4", "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-c", NO_POLARS_CLI, *args], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip())
    ref, large = result["reference"], result["large"]
    assert ref["batch_size"] == 32 and large["batch_size"] == 64 and large["warmup_steps"] == 4
    assert large["lr"] == pytest.approx(1e-3 * 2 ** 0.5)
    assert result["target_val_loss"] == ref["best_val_loss"]
    assert result["target_val_loss"] == pytest.approx(min(ref["val_loss"]), abs=1e-4)  # listed rounded
    assert 0 < ref["seconds_to_target"] <= ref["total_seconds"]  # the reference reaches its own best
    if large["seconds_to_target"] is None:
        assert result["speedup_to_target"] is None and min(large["val_loss"]) > result["target_val_loss"] - 1e-4
    else:
        assert result["speedup_to_target"] == pytest.approx(ref["seconds_to_target"] / large["seconds_to_target"])


def test_universe_bench_runs_the_data_path_of_a_ragged_universe_with_window_views() -> None:
    from benchmarks.bench import bench_universe

    result = bench_universe(symbols=4, rows=700)
    assert result["candles"] == 2800 and result["windows_are_views"] is True
    assert set(result["samples"]) == {"train", "val", "test"} and all(result["samples"].values())
    assert result["seconds"] == pytest.approx(result["features_labels_s"] + result["splits_s"] + result["windows_s"],
                                              abs=0.02)
    assert result["peak_rss_mb"] > 0


def test_step_seconds_reads_dagsters_durations_and_failed_steps_from_the_log() -> None:
    from benchmarks.bench import _step_seconds

    log = ('2024-05-01 10:00:00 +0000 - dagster - DEBUG - run - abc - features - STEP_START - Started\n'
           'Finished execution of step "features" in 1m34s.\n'
           'Finished execution of step "splits" in 120ms.\n'
           'Finished execution of step "trained_model" in 1h2m3.5s.\n'
           '2024-05-01 10:00:01 +0000 - dagster - DEBUG - run - abc - windows - STEP_START - Started\n'
           '2024-05-01 10:00:04 +0000 - dagster - ERROR - run - abc - windows - STEP_FAILURE - Failed\n')
    steps = _step_seconds(log)
    assert steps == pytest.approx({"features": 94.0, "splits": 0.12, "trained_model": 3723.5, "windows": 3.0})


@pytest.mark.slow
def test_contention_bench_compares_the_default_with_fixed_threads_idle_and_beside_a_competitor() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "contention", "--steps", "1", "--repeats", "1",
                           "--fixed", "1"], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    result = json.loads(line)
    for condition in ("idle", "competitor"):
        rows = result[condition]
        assert set(rows) == {"today", "default", "1", "default_vs_best_fixed", "default_vs_today"}
        # "today" is the loop as it was: OpenMP's spinning default; every other worker sleeps when waiting
        assert rows["today"]["wait_policy"] == "unset"
        assert rows["default"]["wait_policy"] == rows["1"]["wait_policy"] == "PASSIVE"
        assert rows["1"]["threads"] == [1] and rows["today"]["threads"] == [result["cores"]]
        assert rows["default_vs_today"] == pytest.approx(rows["default"]["median_s"] / rows["today"]["median_s"],
                                                         rel=1e-12)
        assert rows["default_vs_best_fixed"] == pytest.approx(rows["default"]["median_s"] / rows["1"]["median_s"],
                                                              rel=1e-12)
