"""Trainer: the guide's recipe, early stopping, determinism, shuffling, faults, and the no-sync loop."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_score, recall_score

from patx_core.settings.config import ModelConfig, TrainConfig
from patx_core.model.transformer import PriceActionTransformer
from patx_core.model import inference
from patx_core.model.inference import predict_proba
from patx_core.model.trainer import NonFiniteLossError, Trainer, resolve_pos_weight
from patx_core.data.windows import WindowedData

W = 8
TINY = ModelConfig(window_size=W, d_model=16, n_heads=2, n_layers=1, d_ff=32, head_hidden=8)
COLUMNS = tuple(f"f{i}" for i in range(14))


def make_data(n: int = 200, *, seed: int = 0, flip_val: bool = False, n_val: int = 48) -> WindowedData:
    """Random features; the label is the sign of feature 0 at the window's last row (learnable).

    ``flip_val`` inverts the rule on val, so the better the model fits train, the worse val gets.
    """
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n, 14)).astype(np.float32)
    labels = (matrix[:, 0] > 0).astype(np.float32)
    ends = np.arange(W - 1, n, dtype=np.int64)
    train, val = ends[:-n_val], ends[-n_val:]
    if flip_val:
        labels[val] = 1.0 - labels[val]
    return WindowedData(matrix=matrix, labels=labels, ends={"train": train, "val": val}, window_size=W,
                        feature_columns=COLUMNS)


def cfg(**kwargs: Any) -> TrainConfig:
    base: dict[str, Any] = {"device": "cpu", "max_epochs": 2, "batch_size": 16, "lr": 3e-3}
    return TrainConfig(**(base | kwargs))


def epoch_metrics(history: dict) -> dict:
    return {k: v for k, v in history.items() if k not in ("seconds", "epoch_seconds")}


def test_history_follows_the_contract_and_val_metrics_match_sklearn() -> None:
    data = make_data()
    trainer = Trainer(TINY, cfg(max_epochs=1), data)
    history = trainer.train()
    for split in ("train", "val"):
        for metric in ("loss", "accuracy", "precision", "recall", "f1"):
            assert len(history[f"{split}_{metric}"]) == 1
    assert history["best_epoch"] == 1 and history["epochs_run"] == 1
    assert history["device"] == "cpu" and history["params"] > 0 and history["stopped_early"] is False
    # The model after one epoch is the best one: its predictions reproduce the logged val metrics.
    prob = predict_proba(trainer.model, data, "val")
    y = data.split_labels("val")
    pred = (prob > 0.5).astype(int)
    assert history["val_loss"][0] == pytest.approx(log_loss(y, prob, labels=[0, 1]), abs=1e-5)
    assert history["val_accuracy"][0] == pytest.approx(accuracy_score(y, pred))
    assert history["val_precision"][0] == pytest.approx(precision_score(y, pred, zero_division=0))
    assert history["val_recall"][0] == pytest.approx(recall_score(y, pred, zero_division=0))
    assert history["val_f1"][0] == pytest.approx(f1_score(y, pred, zero_division=0))


def test_logs_each_epoch_in_the_guides_shape_and_calls_on_epoch_end(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    with caplog.at_level(logging.INFO, logger="patx_core.model.trainer"):
        Trainer(TINY, cfg(max_epochs=2), make_data(), on_epoch_end=lambda e, m: seen.append((e, m))).train()
    text = caplog.text
    assert "Epoch [1/2]" in text and "Epoch [2/2]" in text
    assert "New best val loss " in text and " at epoch 1; weights kept in memory" in text
    assert "Train Loss: " in text and " | Acc: " in text and " | F1: " in text and "Val Loss: " in text
    assert [e for e, _ in seen] == [1, 2]
    assert {"train_loss", "val_loss", "val_f1", "epoch_seconds"} <= set(seen[0][1])
    assert all(isinstance(v, float) for v in seen[0][1].values())


def test_same_seed_gives_the_same_history_and_weights_on_cpu() -> None:
    data = make_data()
    runs = [Trainer(TINY, cfg(max_epochs=3), data) for _ in range(2)]
    h1, h2 = (t.train() for t in runs)
    # exact: both trainings run in this process on this machine, where seeded CPU training is deterministic
    assert epoch_metrics(h1) == epoch_metrics(h2)
    for (k, a), b in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().values()):
        assert torch.equal(a, b), k
    other = Trainer(TINY, cfg(max_epochs=3, seed=7), data).train()
    assert other["train_loss"] != h1["train_loss"]


def test_early_stopping_stops_on_rising_val_loss_and_restores_the_best_epoch() -> None:
    data = make_data(flip_val=True)  # fitting train makes val worse
    trainer = Trainer(TINY, cfg(max_epochs=30, patience=3, lr=1e-2), data)
    history = trainer.train()
    best = history["best_epoch"]
    assert history["stopped_early"] is True
    assert history["epochs_run"] == best + 3 < 30
    assert history["val_loss"][best - 1] == min(history["val_loss"])
    assert history["val_loss"][-1] > history["val_loss"][best - 1] + 0.01  # it really rose
    prob = predict_proba(trainer.model, data, "val")
    restored = log_loss(data.split_labels("val"), prob, labels=[0, 1])
    assert restored == pytest.approx(history["val_loss"][best - 1], abs=1e-5)


def _record_train_orders(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    orders: list[np.ndarray] = []
    original = Trainer._train_epoch

    def spy(self: Trainer, model, optimizer, loss_fn, dev, batches, *rest):  # type: ignore[no-untyped-def]
        orders.append(batches.idx[: batches.n].numpy().copy())
        return original(self, model, optimizer, loss_fn, dev, batches, *rest)

    monkeypatch.setattr(Trainer, "_train_epoch", spy)
    return orders


def test_shuffle_is_seeded_per_epoch_and_off_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_data()
    train_ends = data.ends["train"]
    orders = _record_train_orders(monkeypatch)
    Trainer(TINY, cfg(max_epochs=2, shuffle=False), data).train()
    assert all(np.array_equal(o, train_ends) for o in orders)

    orders.clear()
    Trainer(TINY, cfg(max_epochs=2, shuffle=True), data).train()
    first = list(orders)
    assert all(np.array_equal(np.sort(o), train_ends) for o in first)  # a permutation
    assert not np.array_equal(first[0], train_ends) and not np.array_equal(first[0], first[1])

    orders.clear()
    Trainer(TINY, cfg(max_epochs=2, shuffle=True), data).train()
    assert all(np.array_equal(a, b) for a, b in zip(first, orders))  # seeded
    orders.clear()
    Trainer(TINY, cfg(max_epochs=1, shuffle=True, seed=1), data).train()
    assert not np.array_equal(first[0], orders[0])


HOST_SYNCS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")


@pytest.mark.parametrize("warmup_steps", [0, 5])
def test_step_loop_never_copies_to_the_host(monkeypatch: pytest.MonkeyPatch, warmup_steps: int) -> None:
    calls: dict[str, int] = {}
    original = Trainer._train_epoch

    def guarded(self: Trainer, *args: Any) -> Any:
        saved = {name: getattr(torch.Tensor, name) for name in HOST_SYNCS}

        def counting(name: str) -> Any:
            def wrapper(tensor: torch.Tensor, *a: Any, **k: Any) -> Any:
                calls[name] = calls.get(name, 0) + 1
                return saved[name](tensor, *a, **k)
            return wrapper

        for name in HOST_SYNCS:
            setattr(torch.Tensor, name, counting(name))
        try:
            result = original(self, *args)
            torch.ones(()).item()  # the counter itself works: exactly one call expected from here
        finally:
            for name, fn in saved.items():
                setattr(torch.Tensor, name, fn)
        return result

    monkeypatch.setattr(Trainer, "_train_epoch", guarded)
    reported: list[tuple[int, int, int, int]] = []
    # progress reported after every step (interval 0): counting issued steps reads nothing back
    Trainer(TINY, cfg(max_epochs=2, warmup_steps=warmup_steps), make_data(),
            on_progress=lambda *a: reported.append(a), progress_interval_s=0.0).train()
    assert calls == {"item": 2}  # only the two sanity calls, none from the step loop
    assert reported and {r[0] for r in reported} == {1, 2}


def test_nan_input_fails_naming_the_epoch_and_the_step() -> None:
    data = make_data()
    bad_end = int(data.ends["train"][40])  # the first window containing this row is sample 40
    data.matrix[bad_end, 3] = np.nan
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3 of 10 \(batch size 16\)"):
        Trainer(TINY, cfg(shuffle=False), data).train()


def test_nan_only_in_val_rows_fails_naming_validation() -> None:
    data = make_data()
    data.matrix[-1, 0] = np.inf
    with pytest.raises(NonFiniteLossError, match="non-finite validation loss .* epoch 1"):
        Trainer(TINY, cfg(), data).train()


def _oom_above(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Make the model raise CUDA OOM in training for batches larger than ``limit``."""
    sizes: list[int] = []
    forward = PriceActionTransformer.forward

    def limited(self: PriceActionTransformer, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            sizes.append(x.shape[0])
            if x.shape[0] > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(PriceActionTransformer, "forward", limited)
    return sizes


def test_cuda_oom_retries_once_at_half_the_batch_size(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    sizes = _oom_above(monkeypatch, 8)
    with caplog.at_level(logging.WARNING, logger="patx_core.model.trainer"):
        history = Trainer(TINY, cfg(batch_size=16, max_epochs=1), make_data()).train()
    assert sizes[0] == 16 and set(sizes[1:]) == {8}
    assert history["batch_size"] == 8
    assert "retrying once at batch size 8" in caplog.text


def test_cuda_oom_twice_fails_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _oom_above(monkeypatch, 4)
    with pytest.raises(RuntimeError, match="out of memory at batch size 16 and again at the retry with 8"):
        Trainer(TINY, cfg(batch_size=16, max_epochs=1), make_data()).train()


def test_pos_weight_auto_is_negatives_over_positives_and_changes_the_loss() -> None:
    labels = np.array([1, 0, 0, 0], dtype=np.float32)
    assert resolve_pos_weight("auto", labels) == 3.0
    assert resolve_pos_weight(None, labels) is None and resolve_pos_weight(2.5, labels) == 2.5
    with pytest.raises(ValueError, match="both classes"):
        resolve_pos_weight("auto", np.ones(4, dtype=np.float32))
    data = make_data()
    plain = Trainer(TINY, cfg(max_epochs=1), data).train()
    weighted = Trainer(TINY, cfg(max_epochs=1, pos_weight=4.0), data).train()
    assert weighted["pos_weight"] == 4.0 and weighted["train_loss"][0] > plain["train_loss"][0]


def test_mismatched_window_or_missing_val_split_is_refused() -> None:
    data = make_data()
    with pytest.raises(ValueError, match="window_size"):
        Trainer(ModelConfig(window_size=16, d_model=16, n_heads=2), cfg(), data)
    no_val = WindowedData(data.matrix, data.labels, {"train": data.ends["train"]}, W, COLUMNS)
    with pytest.raises(ValueError, match="'val'"):
        Trainer(TINY, cfg(), no_val)


def test_torch_compile_is_refused_by_name() -> None:
    """The compile path is gone (the captured CUDA graph beat it 2.6x); a config asking for it fails loudly."""
    with pytest.raises(ValueError, match="TrainConfig.compile"):
        TrainConfig(compile=True)
    with pytest.raises(ValueError, match="TrainConfig.compile_mode"):
        TrainConfig(compile_mode="reduce-overhead")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_trains_in_bf16_without_host_syncs_in_the_step_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    dtypes: list[torch.dtype] = []
    forward = PriceActionTransformer.forward

    def spy(self: PriceActionTransformer, x: torch.Tensor) -> torch.Tensor:
        out = forward(self, x)
        dtypes.append(out.dtype)
        return out

    original = Trainer._train_epoch

    def no_sync(self: Trainer, *args: Any) -> Any:
        torch.cuda.set_sync_debug_mode("error")  # any device→host sync in the loop raises
        try:
            return original(self, *args)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(PriceActionTransformer, "forward", spy)
    monkeypatch.setattr(Trainer, "_train_epoch", no_sync)
    data = make_data(n=400, n_val=64)
    # warm-up on: refilling the lr tensor before each step must not sync either
    trainer = Trainer(TINY, TrainConfig(device="cuda", max_epochs=3, batch_size=32, warmup_steps=20), data)
    history = trainer.train()
    assert history["device"].startswith("cuda") and history["epochs_run"] == 3 and history["cuda_graph"]
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    assert set(dtypes) == {torch.bfloat16}  # every training and val forward ran under bf16 autocast
    assert next(trainer.model.parameters()).is_cuda
    prob = predict_proba(trainer.model, data, "val")  # fp32 by design
    assert prob.shape == (64,) and np.isfinite(prob).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("warmup_steps", [0, 15])
def test_gpu_graphed_step_matches_the_eager_step(monkeypatch: pytest.MonkeyPatch, warmup_steps: int) -> None:
    # with a warm-up the graph must read the lr tensor at replay, not the value seen at capture
    model = ModelConfig(window_size=W, d_model=16, n_heads=2, n_layers=1, d_ff=32, head_hidden=8, dropout=0.0)
    data = make_data(n=400, n_val=64)
    config = TrainConfig(device="cuda", max_epochs=2, batch_size=32, shuffle=False, warmup_steps=warmup_steps)
    graphed = Trainer(model, config, data).train()
    monkeypatch.setattr(Trainer, "_capture_step", lambda self, *args: None)
    eager = Trainer(model, config, data).train()
    assert graphed["cuda_graph"] is True and eager["cuda_graph"] is False
    # Warm-up steps before capture are undone: both runs start from the same weights and state.
    np.testing.assert_allclose(graphed["train_loss"], eager["train_loss"], rtol=2e-3)
    np.testing.assert_allclose(graphed["val_loss"], eager["val_loss"], rtol=2e-3)


def test_predict_proba_restores_training_mode_and_keeps_sample_order() -> None:
    torch.manual_seed(0)
    model = PriceActionTransformer(TINY).train()
    data = make_data()
    prob = predict_proba(model, data, "val", batch_size=7)
    assert model.training
    with torch.no_grad():
        direct = torch.sigmoid(model.eval()(torch.from_numpy(data.windows("val").copy()))).numpy()
    np.testing.assert_allclose(prob, direct, rtol=1e-5, atol=1e-6)
    assert inference.unwrap(torch.compile(model)) is model


def test_warmup_ramps_the_lr_linearly_then_holds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        seen.append(float(self.param_groups[0]["lr"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    data = make_data(n=200, n_val=48)  # 145 train windows: 10 steps of 16 per epoch
    history = Trainer(TINY, cfg(max_epochs=2, warmup_steps=15, lr=3e-3), data).train()
    assert len(seen) == 20 and history["warmup_steps"] == 15 and history["lr"] == 3e-3
    np.testing.assert_allclose(seen[:15], [3e-3 * k / 15 for k in range(1, 16)], rtol=1e-6)  # across epochs
    np.testing.assert_allclose(seen[15:], 3e-3, rtol=1e-6)


def _first_update(monkeypatch: pytest.MonkeyPatch, config: TrainConfig, data: WindowedData) -> list[torch.Tensor]:
    """Each parameter's change made by the run's first optimizer step."""
    updates: list[torch.Tensor] = []
    step = torch.optim.AdamW.step

    def spy(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        params = [p for group in self.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        out = step(self, *args, **kwargs)
        if not updates:
            updates.extend(p.detach() - b for p, b in zip(params, before))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    Trainer(TINY, config, data).train()
    monkeypatch.undo()
    return updates


def test_warmup_scales_the_first_update_by_one_over_its_steps_and_must_not_be_negative(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # AdamW's update (the Adam term and the decoupled weight decay alike) is linear in the lr, and
    # both runs start from the same seeded weights and batch: a warm-up of N steps makes the first
    # update exactly 1/N of the plain one. Off by one (lr 2/N, or the full lr) or not applied fails.
    data = make_data()
    plain = _first_update(monkeypatch, cfg(max_epochs=1, shuffle=False), data)
    warm = _first_update(monkeypatch, cfg(max_epochs=1, shuffle=False, warmup_steps=4), data)
    assert len(plain) == len(warm) and sum(int((u != 0).sum()) for u in plain) > 0
    for p, w in zip(plain, warm):
        # atol: the float32 spacing of the weights (~1e-8) the differences are taken at; an update
        # is ~lr/4 = 7.5e-4, so 2/N or N/N instead of 1/N is off by four orders more than that.
        torch.testing.assert_close(w, p / 4, rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(warmup_steps=-1)


def test_progress_is_reported_at_a_bounded_rate_in_batches_issued() -> None:
    from patx_core.model.progress import EpochProgress

    now = [0.0]
    calls: list[tuple[int, int, int, int]] = []
    progress = EpochProgress(3, 100, 50, callback=lambda *a: calls.append(a), interval_s=10.0,
                             bar=False, clock=lambda: now[0])
    for step in range(1, 51):
        now[0] += 1.0  # one second per step
        progress.advance(step)
    progress.close()
    # every 10 s, never for the last step (the epoch line follows at once)
    assert calls == [(3, 100, 10, 50), (3, 100, 20, 50), (3, 100, 30, 50), (3, 100, 40, 50)]


def test_the_trainer_forwards_in_epoch_progress_to_its_callback() -> None:
    data = make_data()
    reported: list[tuple[int, int, int, int]] = []
    trainer = Trainer(TINY, cfg(max_epochs=2), data, on_progress=lambda *a: reported.append(a),
                      progress_interval_s=0.0)
    trainer.train()
    steps = -(-data.n_sequences("train") // trainer.train_config.batch_size)
    assert reported == [(e, 2, k, steps) for e in (1, 2) for k in range(1, steps)]
