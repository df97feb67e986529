"""train_many: each fused model trains as it would alone, sees only its own data, and freezes when stopped."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from patx_core.data.windows import WindowedData
from patx_core.model import fused as fused_mod
from patx_core.model.batched import BatchedTransformer, StackedAdamW, dropout_sites, site_view
from patx_core.model.fused import train_many
from patx_core.model.inference import predict_proba
from patx_core.model.trainer import NonFiniteLossError, Trainer
from patx_core.model.transformer import PriceActionTransformer
from patx_core.settings.config import ModelConfig
from tests.core.model.test_trainer import HOST_SYNCS, TINY, cfg, epoch_metrics, make_data

@pytest.fixture(autouse=True)
def _always_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the fused step, whatever the rule says for this machine's device."""
    monkeypatch.setenv(fused_mod.EXECUTOR_ENV, "fused")


#: Relative tolerance of fused against alone (issue contract; measured ~2e-7 on CPU float32).
RTOL = 1e-4


def _three() -> tuple[list[Any], list[WindowedData]]:
    """Different data lengths, learning rates, warm-up, pos_weight and stopping epochs."""
    configs = [cfg(max_epochs=12, patience=2, lr=1e-2, seed=1),           # stops early (val rises)
               cfg(max_epochs=4, lr=1e-3, seed=2, warmup_steps=10),       # to max_epochs, shorter
               cfg(max_epochs=7, patience=3, lr=5e-3, seed=3, weight_decay=0.1, pos_weight="auto")]  # to max
    datas = [make_data(200, seed=0, flip_val=True), make_data(320, seed=1), make_data(150, seed=2, n_val=40)]
    return configs, datas


def _rel(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(x - y) / np.abs(y)))


def test_dropout_masks_drawn_per_model_reproduce_the_modules_own_training_forward() -> None:
    """The equivalence rests on this: masks from a generator holding the global RNG state, in the
    native draw order and layout, are the masks the module draws. Tolerance 1e-5: the GEMMs see
    differently laid-out inputs (~1e-7 apart); one mask drawn in another order moves it by ~1e-1."""
    config = ModelConfig(window_size=8, d_model=16, n_heads=2, n_layers=2, d_ff=32, head_hidden=8, dropout=0.3)
    torch.manual_seed(5)
    model = PriceActionTransformer(config).train()
    x = torch.randn(6, 8, 14)
    net = BatchedTransformer(config, [model])  # K = 1: the same weights, batched
    gen = torch.Generator()
    gen.set_state(torch.get_rng_state())
    native = model(x)
    masks = [torch.empty(s).bernoulli_(1 - config.dropout, generator=gen).div(1 - config.dropout).unsqueeze(0)
             for s in dropout_sites(config, 6)]
    out = net(x.unsqueeze(0), masks)[0]
    assert torch.allclose(out, native, rtol=0, atol=1e-5), (out - native).abs().max()
    assert torch.equal(gen.get_state(), torch.get_rng_state())  # same number of draws
    model.eval()
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(net(x.unsqueeze(0), None)[0], expected, rtol=1e-5, atol=1e-6)
    assert site_view(masks[1], 1).shape == (1, 6, 8, 16)  # the post-attention mask is drawn (W, B, C)


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_models_match_each_model_trained_alone(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 2 torch threads the models' dropout masks are drawn side by side in a thread pool; each
    model must still see exactly its own stream's draws, in the lone model's order."""
    draws: list[int] = []

    class Pool(fused_mod.ThreadPoolExecutor):
        def map(self, fn: Any, *iterables: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            draws.append(threading.get_ident())
            return super().map(fn, *iterables, **kwargs)

    monkeypatch.setattr(fused_mod, "ThreadPoolExecutor", Pool)
    configs, datas = _three()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = train_many(TINY, configs, datas)
    finally:
        torch.set_num_threads(saved)
    assert bool(draws) == (threads > 1)  # the pool drew the masks exactly when there were cores for it
    stops = []
    for k, ((model, history), config, data) in enumerate(zip(fused, configs, datas)):
        trainer = Trainer(TINY, config, data)
        alone = trainer.train()
        assert set(history) == set(alone), k
        assert history["epochs_run"] == alone["epochs_run"] and history["best_epoch"] == alone["best_epoch"], k
        assert history["stopped_early"] == alone["stopped_early"], k
        for key in ("train_loss", "val_loss"):
            assert _rel(history[key], alone[key]) < RTOL, (k, key, history[key], alone[key])
        assert history["val_precision"] == pytest.approx(alone["val_precision"], abs=1e-9), k
        prob, prob_alone = predict_proba(model, data, "val"), predict_proba(trainer.model, data, "val")
        assert np.allclose(prob, prob_alone, rtol=1e-3, atol=1e-4), k
        stops.append((alone["epochs_run"], alone["stopped_early"]))
    # three different stopping epochs: by patience (model 0) and by max_epochs (models 1 and 2)
    assert stops == [(3, True), (4, False), (7, False)], stops


def test_perturbing_one_models_data_leaves_the_others_exactly_unchanged() -> None:
    """Exact: no fused op mixes two models' values (the batched kernels compute each model's slice
    from its own inputs), so the others' floats are bit for bit the same."""
    configs, datas = _three()
    base = train_many(TINY, configs, datas)
    matrix = datas[1].matrix.copy()
    matrix[40:80] *= -1.0
    perturbed = list(datas)
    perturbed[1] = dataclasses.replace(datas[1], matrix=matrix)
    other = train_many(TINY, configs, perturbed)
    assert other[1][1]["train_loss"] != base[1][1]["train_loss"]  # the perturbation reached model 1
    for k in (0, 2):
        assert other[k][1]["train_loss"] == base[k][1]["train_loss"], k
        assert other[k][1]["val_loss"] == base[k][1]["val_loss"], k
        for name, value in base[k][0].state_dict().items():
            assert torch.equal(value, other[k][0].state_dict()[name]), (k, name)


def test_models_with_the_same_seed_and_data_agree_and_another_seed_differs() -> None:
    data = make_data()
    (m1, h1), (m2, h2), (_, h3) = train_many(TINY, [cfg(seed=4), cfg(seed=4), cfg(seed=9)], [data] * 3)
    assert h1["train_loss"] == h2["train_loss"] and h1["train_loss"] != h3["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_a_stopped_model_is_frozen_at_its_best_weights_while_the_others_train_on() -> None:
    data = make_data(flip_val=True)
    configs = [cfg(max_epochs=30, patience=2, lr=1e-2), cfg(max_epochs=8, lr=1e-3, seed=3)]
    (model, history), (_, longer) = train_many(TINY, configs, [data, make_data(seed=5)])
    assert history["stopped_early"] and history["epochs_run"] < longer["epochs_run"] == 8
    prob = predict_proba(model, data, "val")
    restored = log_loss(data.split_labels("val"), prob, labels=[0, 1])
    assert restored == pytest.approx(history["val_loss"][history["best_epoch"] - 1], abs=1e-5)
    assert history["val_loss"][-1] > history["val_loss"][history["best_epoch"] - 1]  # not the last weights


def test_a_masked_update_moves_neither_weights_nor_adamw_moments() -> None:
    """Masking the update, not the gradient: with momentum, a zero gradient would still move a model."""
    torch.manual_seed(0)
    net = BatchedTransformer(TINY, [PriceActionTransformer(TINY) for _ in range(2)])
    opt = StackedAdamW(net, [1e-3, 1e-3], [0.01, 0.01], [False, False])
    for _ in range(2):  # build up momentum in both rows
        for p in net.stacked:
            p.grad = torch.randn_like(p)
        opt.step(torch.tensor([True, True]), [True, True])

    def state() -> list[torch.Tensor]:
        return [t.detach().clone() for t in [*net.stacked, *opt.exp_avg, *opt.exp_avg_sq, opt.steps]]

    for host in ([True, False], None):  # skipped on the host, or stepped and undone (inside a CUDA graph)
        before = state()
        for p in net.stacked:
            p.grad = torch.zeros_like(p)  # a zero gradient alone would not stop row 1
        opt.step(torch.tensor([True, False]), host)
        after = state()
        for b, a in zip(before, after):
            assert torch.equal(a[1], b[1])
            assert not torch.equal(a[0], b[0])


def test_fused_step_loop_never_copies_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {}
    original = fused_mod._Fused._train_epoch

    def guarded(self: Any, *args: Any) -> Any:
        saved = {name: getattr(torch.Tensor, name) for name in HOST_SYNCS}

        def counting(name: str) -> Any:
            def wrapper(tensor: torch.Tensor, *a: Any, **k: Any) -> Any:
                calls[name] = calls.get(name, 0) + 1
                return saved[name](tensor, *a, **k)
            return wrapper

        for name in HOST_SYNCS:
            setattr(torch.Tensor, name, counting(name))
        try:
            return original(self, *args)
        finally:
            for name, fn in saved.items():
                setattr(torch.Tensor, name, fn)

    monkeypatch.setattr(fused_mod._Fused, "_train_epoch", guarded)
    train_many(TINY, [cfg(warmup_steps=5), cfg(seed=2)], [make_data(), make_data(260, seed=1)])
    assert calls == {}


def test_settings_one_step_must_share_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="TrainConfig.batch_size must be the same"):
        train_many(TINY, [cfg(), cfg(batch_size=32)], [make_data(), make_data()])
    with pytest.raises(ValueError, match="2 TrainConfigs but 1 WindowedData"):
        train_many(TINY, [cfg(), cfg()], [make_data()])
    with pytest.raises(ValueError, match="model 0: ModelConfig.window_size=9"):
        train_many(dataclasses.replace(TINY, window_size=9), [cfg(), cfg()], [make_data(), make_data()])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fused_step_is_graphed_and_matches_the_eager_fused_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast and the captured graph; without dropout both paths are deterministic, so the
    graph's first-epoch losses equal the eager ones to bf16 rounding (2e-2 relative)."""
    config = dataclasses.replace(TINY, dropout=0.0)
    configs = [cfg(device="cuda", max_epochs=2, seed=s, warmup_steps=3) for s in (1, 2)]
    datas = [make_data(), make_data(260, seed=1)]
    graphed = train_many(config, configs, datas)
    assert all(h["cuda_graph"] for _, h in graphed)
    monkeypatch.setattr(fused_mod._Fused, "_capture", lambda self, *a: None)
    eager = train_many(config, configs, datas)
    for (_, g), (_, e) in zip(graphed, eager):
        assert not e["cuda_graph"]
        assert _rel(g["train_loss"], e["train_loss"]) < 2e-2 and _rel(g["val_loss"], e["val_loss"]) < 2e-2


@pytest.mark.slow
def test_fused_first_epoch_matches_alone_at_baseline_shapes() -> None:
    """At the baseline model shape (not only the tests' tiny one) and over enough steps for Adam to
    amplify rounding: each fused model's first-epoch train and val loss equal the lone model's to
    1e-4 relative, with different data lengths and learning rates. Batched kernels that round a
    gradient sum differently from the lone model's (as ``vmap`` did) leave model 1 ~2e-3 apart here."""
    from benchmarks.bench import make_windows

    config = ModelConfig()
    datas = [make_windows(1500, window=config.window_size, seed=0),
             make_windows(900, window=config.window_size, seed=1)]
    configs = [cfg(max_epochs=1, batch_size=32, seed=2, lr=3e-4),
               cfg(max_epochs=1, batch_size=32, seed=1, lr=1e-3, warmup_steps=5)]
    fused = train_many(config, configs, datas)
    for k, ((_, history), config_k, data) in enumerate(zip(fused, configs, datas)):
        alone = Trainer(config, config_k, data).train()
        for key in ("train_loss", "val_loss"):
            assert _rel(history[key], alone[key]) < RTOL, (k, key, history[key], alone[key])


def test_nan_in_one_models_train_rows_fails_naming_that_model_the_epoch_and_the_step() -> None:
    datas = [make_data(), make_data(seed=1)]
    bad_end = int(datas[1].ends["train"][40])  # the first window containing this row is sample 40
    datas[1].matrix[bad_end, 3] = np.nan
    with pytest.raises(NonFiniteLossError, match=r"model 1: non-finite training loss \(nan\) at epoch 1, "
                                                 r"step 3 of 10 \(batch size 16\)"):
        train_many(TINY, [cfg(shuffle=False), cfg(shuffle=False)], datas)
    val_bad = [make_data(), make_data(seed=1)]
    val_bad[0].matrix[-1, 0] = np.inf
    with pytest.raises(NonFiniteLossError, match="model 0: non-finite validation loss .* epoch 1"):
        train_many(TINY, [cfg(), cfg()], val_bad)


def _fused_oom_above(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Make the batched training forward raise CUDA OOM for batches larger than ``limit``."""
    sizes: list[int] = []
    forward = BatchedTransformer.forward

    def limited(self: BatchedTransformer, x: torch.Tensor, masks: Any = None) -> torch.Tensor:
        if torch.is_grad_enabled():  # training steps, not the val pass
            sizes.append(x.shape[1])
            if x.shape[1] > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x, masks)

    monkeypatch.setattr(BatchedTransformer, "forward", limited)
    return sizes


def test_fused_cuda_oom_retries_once_at_half_the_batch_size(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    sizes = _fused_oom_above(monkeypatch, 8)
    with caplog.at_level(logging.WARNING, logger="patx_core.model.fused"):
        out = train_many(TINY, [cfg(max_epochs=1), cfg(max_epochs=1, seed=3)], [make_data(), make_data(seed=1)])
    assert sizes[0] == 16 and set(sizes[1:]) == {8}
    assert [h["batch_size"] for _, h in out] == [8, 8]
    assert "train_many: CUDA out of memory at batch size 16" in caplog.text
    assert "retrying once at batch size 8" in caplog.text


def test_fused_cuda_oom_twice_fails_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fused_oom_above(monkeypatch, 4)
    with pytest.raises(RuntimeError, match="train_many: CUDA out of memory at batch size 16 and again at the retry with 8; .* fuse fewer"):
        train_many(TINY, [cfg(max_epochs=1), cfg(max_epochs=1)], [make_data(), make_data()])


def test_where_fusing_was_measured_slower_the_models_train_one_after_another_and_the_log_says_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(fused_mod.EXECUTOR_ENV, "auto")
    monkeypatch.setitem(fused_mod.FUSE_FROM_K, "cpu", None)  # as if measured slower fused on every K

    def refuse(*args: Any) -> Any:
        raise AssertionError("the fused step ran")

    monkeypatch.setattr(fused_mod._Fused, "fit", refuse)
    configs, datas = [cfg(seed=1), cfg(seed=2, lr=1e-2)], [make_data(), make_data(260, seed=1)]
    seen: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO, logger="patx_core.model.fused"):
        out = train_many(TINY, configs, datas, on_epoch_end=lambda k, e, m: seen.append((k, e)))
    assert "training 2 models one after another on cpu: fusing was measured slower there" in caplog.text
    assert seen == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for (model, history), config, data in zip(out, configs, datas):
        trainer = Trainer(TINY, config, data)
        alone = trainer.train()
        assert epoch_metrics(history) == epoch_metrics(alone)  # exact: the same Trainer run
        assert not model.training


def test_the_fusing_rule_follows_the_measured_table_and_the_environment_overrides_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv(fused_mod.EXECUTOR_ENV, "auto")
    monkeypatch.setitem(fused_mod.FUSE_FROM_K, "cpu", 4)
    assert [fused_mod.fuses(cpu, k) for k in (1, 3, 4, 8)] == [False, False, True, True]
    monkeypatch.setitem(fused_mod.FUSE_FROM_K, "cpu", None)
    assert not fused_mod.fuses(cpu, 8)
    monkeypatch.setenv(fused_mod.EXECUTOR_ENV, "fused")
    assert fused_mod.fuses(cpu, 8)
    monkeypatch.setenv(fused_mod.EXECUTOR_ENV, "sequential")
    monkeypatch.setitem(fused_mod.FUSE_FROM_K, "cpu", 2)
    assert not fused_mod.fuses(cpu, 8)
    monkeypatch.setenv(fused_mod.EXECUTOR_ENV, "fast")
    with pytest.raises(ValueError, match="PATX_TRAIN_MANY='fast'"):
        fused_mod.fuses(cpu, 8)
