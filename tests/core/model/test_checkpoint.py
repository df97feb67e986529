"""best_model.pth / scaler.pkl: weights_only round trip, unwrapped state, atomicity, no unpickling."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from patx_core.model import checkpoint as ckpt_mod
from patx_core.model.checkpoint import load_checkpoint, save_checkpoint, save_scaler
from patx_core.settings.config import DataConfig, ModelConfig, VariantConfig
from patx_core.model.transformer import PriceActionTransformer
from patx_core.data.scaler import Scaler
from patx_core.model.inference import predict_proba
from patx_core.data.windows import WindowedData

W = 8
COLUMNS = tuple(f"f{i}" for i in range(14))
VARIANT = VariantConfig(name="tiny", data=DataConfig(window_size=W),
                        model=ModelConfig(window_size=W, d_model=16, n_heads=2, n_layers=1, d_ff=32, head_hidden=8))
SCALER = Scaler(mean=np.linspace(-1, 1, 14), std=np.linspace(0.5, 2, 14), feature_columns=COLUMNS)
METRICS = {"best_epoch": np.int64(3), "val_loss": np.float32(0.61), "val_f1": 0.5, "history": [0.7, 0.65]}


def make_model(seed: int = 0) -> PriceActionTransformer:
    torch.manual_seed(seed)
    return PriceActionTransformer(VARIANT.model)


def make_data() -> WindowedData:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((60, 14)).astype(np.float32)
    labels = (rng.random(60) > 0.5).astype(np.float32)
    return WindowedData(matrix, labels, {"val": np.arange(W - 1, 60, dtype=np.int64)}, W, COLUMNS)


def save(path: Path, model: torch.nn.Module) -> None:
    save_checkpoint(path, model=model, variant=VARIANT, scaler=SCALER, metrics=METRICS, feature_columns=COLUMNS)


def test_round_trip_through_weights_only_load_gives_identical_predictions(tmp_path: Path) -> None:
    model, data = make_model(), make_data()
    path = tmp_path / "best_model.pth"
    save(path, model)

    raw = torch.load(path, weights_only=True)  # plain types + tensors only, or this raises
    assert {"model_state_dict", "feature_columns", "window_size", "input_dim", "config", "variant",
            "scaler", "metrics"} <= set(raw)
    assert raw["window_size"] == W and raw["input_dim"] == 14 and raw["feature_columns"] == list(COLUMNS)
    assert raw["config"] == VARIANT.to_dict() and raw["variant"] == "tiny"
    assert raw["scaler"]["mean"] == SCALER.mean.tolist()
    assert raw["metrics"] == {"best_epoch": 3, "val_loss": pytest.approx(0.61), "val_f1": 0.5, "history": [0.7, 0.65]}

    loaded = load_checkpoint(path)
    assert not loaded.model.training
    assert loaded.variant == VARIANT and loaded.window_size == W and loaded.feature_columns == COLUMNS
    np.testing.assert_array_equal(loaded.scaler.mean, SCALER.mean)
    np.testing.assert_array_equal(loaded.scaler.std, SCALER.std)
    assert loaded.metrics["best_epoch"] == 3
    # exact: the same weights (a lossless round trip) scoring the same windows in this process
    np.testing.assert_array_equal(predict_proba(loaded.model, data, "val"), predict_proba(model, data, "val"))


def test_compiled_model_is_saved_unwrapped(tmp_path: Path) -> None:
    model = make_model()
    path = tmp_path / "best_model.pth"
    save(path, torch.compile(model))  # wrapping is lazy: nothing is compiled here
    keys = torch.load(path, weights_only=True)["model_state_dict"].keys()
    assert keys == model.state_dict().keys()
    assert not any(k.startswith("_orig_mod.") for k in keys)
    load_checkpoint(path)


def _assert_previous_intact(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before
    load_checkpoint(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_a_save_that_fails_while_serializing_leaves_the_previous_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "best_model.pth"
    save(path, make_model(0))
    before = path.read_bytes()
    real_save = torch.save

    def half_then_crash(obj: object, f: io.BytesIO) -> None:
        full = io.BytesIO()
        real_save(obj, full)
        f.write(full.getvalue()[: len(full.getvalue()) // 2])
        raise KeyboardInterrupt  # a kill mid-serialization

    monkeypatch.setattr(ckpt_mod.torch, "save", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save(path, make_model(1))
    _assert_previous_intact(path, before)


def test_a_save_that_fails_while_writing_to_disk_leaves_the_previous_file(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "best_model.pth"
    save(path, make_model(0))
    before = path.read_bytes()

    def disk_full(fd: int) -> None:  # the temp file holds the new bytes, not yet renamed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("patx_core.storage.artifacts.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save(path, make_model(1))
    monkeypatch.undo()
    _assert_previous_intact(path, before)


class _Tripwire:
    """Unpickling this creates a directory: proof that someone unpickled the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.makedirs, (str(self.marker),))


def test_load_rebuilds_the_scaler_from_the_checkpoint_never_from_scaler_pkl(tmp_path: Path) -> None:
    path = tmp_path / "best_model.pth"
    save(path, make_model())
    marker = tmp_path / "unpickled"
    (tmp_path / "scaler.pkl").write_bytes(pickle.dumps(_Tripwire(marker)))
    loaded = load_checkpoint(path)
    assert not marker.exists()
    np.testing.assert_array_equal(loaded.scaler.mean, SCALER.mean)
    pickle.loads((tmp_path / "scaler.pkl").read_bytes())  # the tripwire itself works
    assert marker.exists()


def test_scaler_pkl_has_the_guides_format(tmp_path: Path) -> None:
    path = tmp_path / "scaler.pkl"
    save_scaler(path, SCALER)
    with path.open("rb") as fh:
        data = pickle.load(fh)  # a file this test just wrote
    assert set(data) == {"mean", "std", "feature_columns"}
    assert isinstance(data["mean"], np.ndarray) and data["mean"].shape == (14,)
    assert isinstance(data["std"], np.ndarray) and data["std"].shape == (14,)
    np.testing.assert_array_equal(data["std"], SCALER.std)
    assert data["feature_columns"] == list(COLUMNS)


def test_feature_columns_that_disagree_with_the_scaler_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ from the scaler"):
        save_checkpoint(tmp_path / "m.pth", model=make_model(), variant=VARIANT, scaler=SCALER, metrics={},
                        feature_columns=COLUMNS[::-1])
    assert not (tmp_path / "m.pth").exists()


def test_the_training_candle_interval_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "best_model.pth"
    save_checkpoint(path, model=make_model(), variant=VARIANT, scaler=SCALER, metrics=METRICS,
                    feature_columns=COLUMNS, interval_seconds=3600.0)
    assert torch.load(path, weights_only=True)["interval_seconds"] == 3600.0
    assert load_checkpoint(path).interval_seconds == 3600.0


def test_a_checkpoint_without_an_interval_loads_with_none(tmp_path: Path) -> None:
    path = tmp_path / "best_model.pth"
    save(path, make_model())
    payload = torch.load(path, weights_only=True)
    del payload["interval_seconds"]  # as saved before the interval was recorded
    torch.save(payload, path)
    assert load_checkpoint(path).interval_seconds is None


@pytest.mark.parametrize("bad", [0.0, -60.0, float("nan")])
def test_a_nonsense_interval_is_refused_before_writing(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "best_model.pth"
    with pytest.raises(ValueError, match="interval_seconds"):
        save_checkpoint(path, model=make_model(), variant=VARIANT, scaler=SCALER, metrics=METRICS,
                        feature_columns=COLUMNS, interval_seconds=bad)
    assert not path.exists()
