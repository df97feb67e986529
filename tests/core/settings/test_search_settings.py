"""``[NAME.search]`` in a variants file: every searched field and bound is checked at load time."""

from __future__ import annotations

import pytest

from patx_core.settings.config import VariantConfig
from patx_core.settings.search import apply_params
from patx_core.settings.variants import load_variants

GOOD_SPACE = '"train.lr" = {low = 1e-4, high = 3e-3, log = true}\n'


def _load(tmp_path, search: str, space: str = GOOD_SPACE) -> dict[str, VariantConfig]:
    path = tmp_path / "variants.toml"
    path.write_text(f"[v]\n[v.search]\n{search}\n[v.search.space]\n{space}", encoding="utf-8")
    return load_variants(path)


@pytest.mark.parametrize("search, space, named", [
    ("trials = 3\nparalel = 2", GOOD_SPACE, "paralel"),  # unknown [search] field
    ("trials = 3", '"train.lrr" = {low = 1e-4, high = 1e-3}\n', "lrr"),  # unknown field of a section
    ("trials = 3", '"split.train" = {low = 0.5, high = 0.7}\n', "split.train"),  # a judging section
    ("trials = 3", '"train.seed" = {choices = [1, 2]}\n', "train.seed"),  # seeds are not tuned
    ("trials = 3", '"train.lr" = {low = 3e-3, high = 1e-4}\n', "low"),  # low > high
    ("trials = 3", '"model.d_model" = {choices = []}\n', "choices"),  # empty choices
    ("trials = 3", '"model.dropout" = {low = 0.0, high = 1.5}\n', "high 1.5"),  # out of the section's range
    ("trials = 3", '"model.d_model" = {choices = [64, 66]}\n', "choice 66"),  # 66 % n_heads != 0
    ("trials = 3", '"model.n_layers" = {low = 1, high = 2.5}\n', "integer"),  # int field, float bound
    ("trials = 3", '"train.lr" = {low = 0.0, high = 1e-3, log = true}\n', "log scale"),
    ("trials = 3", '"train.lr" = {low = 1e-4, hi = 1e-3}\n', "hi"),  # unknown key of a range
    ("parallel = 0", GOOD_SPACE, "parallel"),
    ("trials = 0", GOOD_SPACE, "trials"),
    ('sampler = "grid"', GOOD_SPACE, "sampler"),
    ('objective = "test_roc_auc"', GOOD_SPACE, "objective"),
    ('pruner = "hyperband"', GOOD_SPACE, "pruner"),
])
def test_a_bad_search_table_is_refused_at_load_naming_the_field(tmp_path, search, space, named):
    with pytest.raises(ValueError) as err:
        _load(tmp_path, search, space)
    message = str(err.value)
    assert named in message and "variant 'v'" in message and str(tmp_path) in message


def test_a_good_search_table_loads_with_bounds_typed_as_their_field(tmp_path):
    space = GOOD_SPACE + '"model.n_layers" = {low = 1, high = 3}\n"model.dropout" = {low = 0, high = 0.2}\n'
    search = _load(tmp_path, "trials = 5\nparallel = 2", space)["v"].search
    assert search is not None and search.trials == 5 and search.parallel == 2
    by_name = {p.name: p for p in search.space}
    assert isinstance(by_name["model.n_layers"].low, int)
    assert isinstance(by_name["model.dropout"].low, float)  # written as 0, searched as a float
    assert by_name["train.lr"].log is True


def test_a_searched_variant_round_trips_through_its_dict(tmp_path):
    variant = _load(tmp_path, "trials = 5")["v"]
    assert VariantConfig.from_dict("v", variant.to_dict()) == variant


def test_a_variant_without_search_writes_no_search_key():
    # Checkpoints and evaluations saved before searches existed keep comparing equal.
    assert "search" not in load_variants()["seed"].to_dict()


def test_shipped_smoke_and_baseline_have_a_search():
    variants = load_variants()
    assert {p.name for p in variants["baseline"].search.space} >= {
        "train.lr", "train.weight_decay", "model.dropout", "model.d_model", "model.n_layers"}
    assert variants["smoke"].search.trials <= 8


def test_apply_params_sets_fields_and_window_follows_data():
    base = load_variants()["smoke"]
    tuned = apply_params(base, {"train.lr": 0.005, "data.window_size": 16}, name="smoke_tuned")
    assert tuned.name == "smoke_tuned" and tuned.search is None
    assert tuned.train.lr == 0.005 and tuned.model.window_size == 16 == tuned.data.window_size


def test_the_readmes_search_table_loads_as_written(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Search without fooling yourself", 1)[1]
    block = next(b.split("\n", 1)[1] for b in section.split("```")[1::2] if b.startswith("toml"))
    path = tmp_path / "variants.toml"
    path.write_text(block, encoding="utf-8")
    search = load_variants(path)["baseline"].search
    assert search.parallel == 4 and {p.name for p in search.space} >= {"train.lr", "labels.horizon"}
