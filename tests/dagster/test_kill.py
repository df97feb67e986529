"""A training run killed mid-epoch (SIGKILL) leaves the previous checkpoint intact; a rerun works."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from patx_core.storage.checkpoint import load_checkpoint
from tests.dagster.harness import cell_paths, snapshot

REPO = Path(__file__).resolve().parents[2]

# Train the smoke variant for many epochs, announcing each one on stdout so the test can kill
# it mid-run (after the first epoch has finished and the next has started).
TRAIN = """
import sys, dataclasses
from patx_core import pipeline
from patx_core.settings.datasets import DatasetConfig
from patx_core.settings.grid import GridCell
from patx_core.storage.paths import DatasetPaths
from patx_core.settings.variants import get_variant
v = get_variant("smoke")
v = dataclasses.replace(v, train=dataclasses.replace(v.train, max_epochs=500, patience=500))
# the windows, scaler and input record of the copied run are already in its work dir
cell = GridCell(DatasetConfig(name="nasdaq", source="already-read.parquet"), v,
                DatasetPaths.for_dataset("nasdaq", sys.argv[1]))
def tick(epoch, metrics):
    print("epoch", epoch, flush=True)
pipeline.train_model(cell, on_epoch_end=tick)
"""


def test_sigkill_during_training_leaves_the_old_checkpoint_loadable(tmp_path, good_run):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    paths = cell_paths(data_dir)
    before = snapshot(paths.checkpoint_dir)
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(data_dir)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        seen = 0
        while seen < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line.startswith("epoch")
        assert seen == 2, "training did not reach its second epoch"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # the kill landed mid-run: the published files are the old ones, whole, with no temp file left over
    assert snapshot(paths.checkpoint_dir) == before
    load_checkpoint(paths.checkpoint)
    rerun = subprocess.run([sys.executable, "-c", TRAIN.replace("max_epochs=500, patience=500", "max_epochs=1"),
                            str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert snapshot(paths.checkpoint_dir) != before
    assert load_checkpoint(paths.checkpoint).metrics["best_epoch"] == 1
