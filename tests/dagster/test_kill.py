"""A training run killed while it writes its checkpoint (SIGKILL) leaves the previous one intact; a rerun works."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from patx_core.model.checkpoint import load_checkpoint
from tests.dagster.harness import cell_paths, snapshot

REPO = Path(__file__).resolve().parents[2]

# Train the smoke variant for two epochs; the checkpoint's bytes, once flushed, announce their
# file on stdout and stall before they are published, so the test kills the run while the
# checkpoint is being written: the moment a non-atomic write would tear the published file.
TRAIN = """
import os, sys, time, dataclasses
real_fsync = os.fsync
def stalled_fsync(fd):
    name = os.readlink(f"/proc/self/fd/{fd}")
    if os.path.basename(name).startswith(".best_model.pth.") and STALL:
        print("writing", name, flush=True)
        time.sleep(600)
    return real_fsync(fd)
STALL = len(sys.argv) > 2
os.fsync = stalled_fsync
from patx_core import pipeline
from patx_core.settings.datasets import DatasetConfig
from patx_core.settings.grid import GridCell
from patx_core.storage.paths import DatasetPaths
from patx_core.settings.variants import get_variant
v = get_variant("smoke")
v = dataclasses.replace(v, train=dataclasses.replace(v.train, max_epochs=2, patience=500))
# the windows, scaler and input record of the copied run are already in its work dir
cell = GridCell(DatasetConfig(name="nasdaq", source="already-read.parquet"), v,
                DatasetPaths.for_dataset("nasdaq", sys.argv[1]))
def tick(epoch, metrics):
    print("epoch", epoch, flush=True)
pipeline.train_model(cell, on_epoch_end=tick)
"""


def test_sigkill_while_the_checkpoint_is_written_leaves_the_old_one_loadable(tmp_path, good_run):
    data_dir = tmp_path / "data"
    shutil.copytree(good_run[0], data_dir)
    paths = cell_paths(data_dir)
    before = snapshot(paths.checkpoint_dir)
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(data_dir), "stall"], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        writing = ""
        while not writing and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            writing = line.split(" ", 1)[1].strip() if line.startswith("writing ") else ""
        assert Path(writing).name.startswith(".best_model.pth."), f"the run never wrote its checkpoint: {writing!r}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # the kill landed mid-write: the new bytes sit in a hidden temp file, the published files are the old ones
    assert Path(writing).exists()
    published = {k: v for k, v in snapshot(paths.checkpoint_dir).items() if not Path(k).name.startswith(".")}
    assert published == before
    load_checkpoint(paths.checkpoint)
    rerun = subprocess.run([sys.executable, "-c", TRAIN.replace("max_epochs=2,", "max_epochs=1,"),
                            str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert snapshot(paths.checkpoint_dir) != before
    assert load_checkpoint(paths.checkpoint).metrics["best_epoch"] == 1
