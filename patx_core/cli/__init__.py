"""The ``patx`` command: one console script, one subcommand per job.

    patx ingest DATASET...          merge landed candle files into the curated store
    patx predict --checkpoint ...   score the newest candles with a trained model
    patx ledger DATASET VARIANT     a cell's forward track record (``reinstate`` lifts a suspension)
    patx check                      do the datasets and variants files load? (one line per problem)
    patx search --dataset D --variant V   tune a variant on val; the winner is judged on test once
    patx verdict DATASET VARIANT    the verdict of the latest run (provided by patx_dagster)

Each subcommand is a module with ``add_parser(subparsers)``: it adds its parser and sets
``run`` (a function of the parsed arguments returning the exit status) as a default. A new
subcommand in this package is that module plus its name in :data:`COMMANDS`.

``patx_core`` never imports Dagster, so subcommands that need it come from other packages
through the ``patx.commands`` entry-point group (``patx_dagster`` declares ``verdict`` in
pyproject.toml). They are imported only when asked for, so ``patx predict`` does not pay for
loading the code location.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Sequence

#: The subcommands of this package, in the order ``patx --help`` lists them.
COMMANDS = ("ingest", "predict", "ledger", "check", "search")
#: Where other packages register subcommands: ``name = "module:add_parser"``.
ENTRY_POINT_GROUP = "patx.commands"


def plugin_commands() -> dict[str, EntryPoint]:
    """Subcommands other installed packages provide, by name (the first registration wins)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in COMMANDS:
            found.setdefault(ep.name, ep)
    return found


def _requested(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``patx`` parser. A plugin subcommand is imported only when ``argv`` names it: listing
    it in ``patx --help`` must not import Dagster and load the code location (nor fail with it)."""
    parser = argparse.ArgumentParser(prog="patx", description="PriceActionTransformer from the shell; "
                                                              "`patx COMMAND --help` gives a command's arguments.")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    wanted = _requested(argv)
    for name, ep in plugin_commands().items():
        if wanted == name:
            ep.load()(subparsers)
        else:
            subparsers.add_parser(name, add_help=False,
                                  help=f"from {ep.value.split(':')[0]}; `patx {name} --help` for its arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    return int(args.run(args))
