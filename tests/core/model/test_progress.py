"""Models trained together say what they are doing every ~10 s: each fold or seed, its epoch, its val loss."""

from __future__ import annotations

import threading
import time

from patx_core.model import progress
from patx_core.model.progress import Heartbeat, ModelsProgress


def test_the_line_names_each_model_with_its_last_epoch_and_val_loss():
    now = [100.0]
    p = ModelsProgress("walk-forward smoke", ["fold 0", "fold 1"], 50, clock=lambda: now[0])
    p.on_epoch_end(0, 3, {"val_loss": 0.61234, "train_loss": 0.7})
    now[0] = 112.4
    assert p.line() == ("walk-forward smoke: training, 12 s in; fold 0 epoch 3/50 (val loss 0.6123), "
                        "fold 1 epoch 0/50")


def test_a_heartbeat_emits_every_interval_while_open_and_never_after():
    lines: list[str] = []
    three = threading.Event()

    def emit(line: str) -> None:
        lines.append(line)
        if len(lines) >= 3:
            three.set()

    with Heartbeat(lambda: f"beat {len(lines)}", emit, interval_s=0.02):
        assert three.wait(10.0), "a heartbeat must keep emitting while the work runs"
    closed = len(lines)
    time.sleep(0.1)
    assert len(lines) == closed, "no line after the work ended"
    assert lines[:3] == ["beat 0", "beat 1", "beat 2"]


def test_the_default_interval_is_the_progress_interval_read_when_the_heartbeat_is_made(monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL_S", 0.5)
    assert Heartbeat(lambda: "").interval_s == 0.5
    assert Heartbeat(lambda: "", interval_s=2.0).interval_s == 2.0


def test_a_seed_study_logs_each_seeds_progress_and_forwards_the_first_seeds_epochs(monkeypatch, caplog):
    import dataclasses
    import logging

    from patx_core import pipeline
    from patx_core.model import fused
    from patx_core.settings.variants import get_variant

    variant = get_variant("smoke")
    variant = dataclasses.replace(variant, train=dataclasses.replace(variant.train, seeds=(3, 5)))

    def train_many(model_config, configs, datas, *, on_epoch_end):  # the fused step's callbacks, no torch work
        for k in range(len(configs)):
            on_epoch_end(k, 1, {"val_loss": 0.5 + k})
        time.sleep(0.3)
        return [(f"model {k}", {"k": k}) for k in range(len(configs))]

    monkeypatch.setattr(fused, "train_many", train_many)
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL_S", 0.05)
    first: list[int] = []
    with caplog.at_level(logging.INFO, logger=progress.__name__):
        model, history, rest = pipeline.training._train_seeds(variant, None, lambda e, m: first.append(e))
    assert (model, history, [s for s, _, _ in rest]) == ("model 0", {"k": 0}, [5])
    assert first == [1], "only the first seed's epochs reach the step's epoch callback"
    beats = [r.getMessage() for r in caplog.records if r.name == progress.__name__]
    assert beats and "seed 3 epoch 1/" in beats[-1] and "seed 5 epoch 1/" in beats[-1], beats
