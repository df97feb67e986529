"""One console script, ``patx``: its subcommands, and plugins that patx_core does not import."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from patx_core import cli
from tests.cli_entry_points import REPO, declared_entry_points, installed_env


def _patx(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patx_core.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_patx_help_lists_every_subcommand_without_importing_dagster(tmp_path):
    code = ("import sys; from patx_core.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('dagster imported:', 'dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=installed_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    commands = out.stdout.split("commands:")[1]
    for name in ("ingest", "predict", "ledger", "check", "verdict"):
        assert f"\n    {name} " in commands, out.stdout
    assert "dagster imported: False" in out.stdout, "listing `verdict` must not load the code location"


def test_patx_without_a_command_prints_the_usage_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage: patx" in capsys.readouterr().err


def test_pyproject_registers_verdict_from_patx_dagster():
    (verdict,) = [ep for ep in declared_entry_points() if ep.name == "verdict"]
    assert verdict.value == "patx_dagster.verdict:add_parser"
    assert callable(verdict.load())


def test_a_plugin_subcommand_is_loaded_only_when_asked_for(monkeypatch, capsys):
    loaded = []

    def add_parser(subparsers: argparse._SubParsersAction) -> None:
        loaded.append(True)
        sub = subparsers.add_parser("hello")
        sub.add_argument("name")
        sub.set_defaults(run=lambda args: print(f"hello {args.name}") or 3)

    module = type(sys)("patx_test_plugin")
    module.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "patx_test_plugin", module)
    plugin = EntryPoint("hello", "patx_test_plugin:add_parser", cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [plugin] if group == cli.ENTRY_POINT_GROUP else [])

    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert not loaded, "another subcommand's run must not import the plugin"
    assert cli.main(["hello", "world"]) == 3, "the plugin's own exit status"
    assert loaded and capsys.readouterr().out.endswith("hello world\n")


def test_a_plugin_cannot_shadow_a_core_subcommand(monkeypatch):
    rogue = EntryPoint("predict", "nowhere:add_parser", cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [rogue])
    assert cli.plugin_commands() == {}


def test_the_public_api_is_importable_from_patx_core_and_light_to_import():
    code = ("import sys, patx_core\n"
            "heavy = [m for m in ('torch', 'polars', 'numba') if m in sys.modules]\n"
            "from patx_core import (PriceActionTransformer, ModelConfig, TrainConfig, Trainer, compute_indicators,\n"
            "    FEATURE_COLUMNS, build_feature_table, split_dataset, load_checkpoint, predict_frame)\n"
            "from patx_core.model.trainer import Trainer as T\n"
            "assert Trainer is T and len(FEATURE_COLUMNS) == 14\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", "`import patx_core` alone must not import torch/polars/numba"


def test_an_unknown_public_name_is_an_attribute_error():
    import patx_core

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        patx_core.Nope  # noqa: B018
