"""Configuration: invalid values fail at construction naming the field; the shipped variants."""

from __future__ import annotations

import pytest

from patx_core.settings.check import settings_problem
from patx_core.settings.config import (BacktestConfig, DataConfig, EvalConfig, LabelConfig, ModelConfig, SplitConfig,
                              TrainConfig, VariantConfig)
from patx_core.settings.variants import load_variants

BAD = [
    (DataConfig, {"feature_set": "raw"}, "DataConfig.feature_set"),
    (DataConfig, {"window_size": 1}, "DataConfig.window_size"),
    (LabelConfig, {"horizon": 0}, "LabelConfig.horizon"),
    (LabelConfig, {"take_profit": -1.0}, "LabelConfig.take_profit"),
    (LabelConfig, {"stop_loss": float("nan")}, "LabelConfig.stop_loss"),
    (SplitConfig, {"train": 0.7, "val": 0.2, "test": 0.2}, "train + val + test"),
    (SplitConfig, {"train": 0.0, "val": 0.5, "test": 0.5}, "SplitConfig.train"),
    (ModelConfig, {"d_model": 30, "n_heads": 4}, "ModelConfig.d_model"),
    (ModelConfig, {"dropout": 1.0}, "ModelConfig.dropout"),
    (TrainConfig, {"lr": 0.0}, "TrainConfig.lr"),
    (TrainConfig, {"batch_size": 0}, "TrainConfig.batch_size"),
    (TrainConfig, {"pos_weight": "sometimes"}, "TrainConfig.pos_weight"),
    (TrainConfig, {"shuffle": "false"}, "TrainConfig.shuffle"),
    (TrainConfig, {"device": "tpu"}, "TrainConfig.device"),
    (EvalConfig, {"target_precision": 1.5}, "EvalConfig.target_precision"),
    (EvalConfig, {"min_signals": 0}, "EvalConfig.min_signals"),
    (BacktestConfig, {"cost_bps": -1.0}, "BacktestConfig.cost_bps"),
]


@pytest.mark.parametrize("cls,kwargs,field", BAD, ids=[f"{c.__name__}-{f}" for c, _, f in BAD])
def test_invalid_values_raise_naming_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field.replace("+", r"\+")):
        cls(**kwargs)


def test_defaults_are_the_guides():
    t, m, s = TrainConfig(), ModelConfig(), SplitConfig()
    assert (t.lr, t.weight_decay, t.batch_size, t.max_epochs, t.patience) == (1e-3, 0.01, 32, 100, 5)
    assert (m.d_model, m.n_heads, m.n_layers, m.d_ff, m.dropout, m.window_size) == (128, 4, 2, 512, 0.1, 64)
    assert (s.train, s.val, s.test) == (0.70, 0.15, 0.15)
    assert SplitConfig.seed().names == ("train", "val")


def test_variant_from_dict_rejects_unknown_fields_and_mismatched_windows():
    with pytest.raises(ValueError, match=r"\['learning_rate'\]"):
        VariantConfig.from_dict("v", {"train": {"learning_rate": 0.1}})
    with pytest.raises(ValueError, match="unknown field"):
        VariantConfig.from_dict("v", {"optimizer": {}})
    with pytest.raises(ValueError, match="model.window_size"):
        VariantConfig.from_dict("v", {"data": {"window_size": 32}, "model": {"window_size": 64}})
    v = VariantConfig.from_dict("v", {"data": {"window_size": 32}})
    assert v.model.window_size == 32 and VariantConfig.from_dict("v", v.to_dict()) == v


def test_shipped_variants_keep_their_documented_settings():
    variants = load_variants()
    assert {"seed", "baseline", "smoke", "long_context", "large", "relative", "relative_smoke"} <= set(variants)
    seed = variants["seed"]
    assert (seed.split.train, seed.split.val, seed.split.test) == (0.8, 0.2, 0.0) and seed.gate_split == "val"
    assert seed.train.shuffle is False, "the seed variant keeps the guide's shuffle=False"
    assert seed.train == TrainConfig(shuffle=False) and seed.model == ModelConfig()
    assert all(v.train.shuffle for name, v in variants.items() if name != "seed")
    assert variants["baseline"].train == TrainConfig() and variants["baseline"].split == SplitConfig()
    lc, large = variants["long_context"], variants["large"]
    assert (lc.data.window_size, lc.train.batch_size, lc.train.lr) == (128, 64, 5e-4)
    assert (large.model.d_model, large.model.n_layers, large.train.lr) == (256, 4, 5e-4)
    assert variants["relative"].data.feature_set == "relative"
    assert variants["relative"].train == variants["baseline"].train
    assert variants["baseline"].data.feature_set == "seed"
    assert not variants["smoke"].nightly and variants["smoke"].model.d_model <= 32


def test_a_typo_in_a_variant_names_the_table_and_the_near_match(tmp_path):
    path = tmp_path / "variants.toml"
    path.write_text("[my_smoke]\n[my_smoke.train]\nmax_epoch = 2\n[other]\nnightlyy = true\n")
    problem = settings_problem(variants_file=path)
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"variants file {path}: variant 'my_smoke' [train]: unknown field(s) ['max_epoch']; "
                              "did you mean 'max_epochs'? (allowed: [")
    far = tmp_path / "far.toml"
    far.write_text("[v]\nzzz = 1\n")
    assert "did you mean" not in settings_problem(variants_file=far), "no near match: no guess"
    assert settings_problem(variants_file=tmp_path / "absent.toml").endswith("(set PATX_VARIANTS)")
    assert settings_problem() is None, "the shipped files load"
    with pytest.raises(ValueError, match=r"variant 'v': unknown field\(s\) \['nightlyy'\]; did you mean 'nightly'\?"):
        VariantConfig.from_dict("v", {"nightlyy": True})


def test_a_bool_is_not_an_integer_seed_for_backtests_either() -> None:
    # TOML's `seed = true` would be 1 to Python: refused, as TrainConfig refuses it
    with pytest.raises(ValueError, match=r"^BacktestConfig\.seed must be a non-negative integer, got True$"):
        BacktestConfig(seed=True)


def test_datasets_and_variants_share_one_name_rule_and_one_cost_rule() -> None:
    from patx_core.settings.datasets import DatasetConfig

    for bad in ("a b", "", "x/y", "a.b"):
        with pytest.raises(ValueError, match="name must be letters, digits, '_' or '-'"):
            DatasetConfig(name=bad, source="x.parquet")
        with pytest.raises(ValueError, match=r"VariantConfig\.name must be letters, digits, '_' or '-'"):
            VariantConfig(name=bad)
    for cost in (-0.5, 10_000.5, float("nan"), True):
        with pytest.raises(ValueError, match="cost_bps must be in "):
            DatasetConfig(name="d", source="x.parquet", cost_bps=cost)
        with pytest.raises(ValueError, match=r"BacktestConfig\.cost_bps must be in "):
            BacktestConfig(cost_bps=cost)
    assert DatasetConfig(name="d-1_x", source="x.parquet", cost_bps=10_000).cost_bps == 10_000
    assert BacktestConfig(cost_bps=10_000).cost_bps == 10_000
