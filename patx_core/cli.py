"""``patx``: the command line of patx_core, one subcommand per job, no Dagster needed.

    patx ledger DATASET VARIANT                        print the cell's track record
    patx ledger reinstate DATASET VARIANT --reason T   lift a champion's suspension (recorded in its manifest)

Each subcommand registers itself through an ``add_*_parser(subparsers)`` function; errors print
one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence


def _ledger(args: argparse.Namespace) -> int:
    from patx_core.settings.grid import resolve_cell

    words = list(args.words)
    if words and words[0] == "reinstate":
        if len(words) != 3 or not args.reason:
            print("error: usage: patx ledger reinstate DATASET VARIANT --reason TEXT", file=sys.stderr)
            return 2
        from patx_core.pipeline import reinstate_champion

        cell = resolve_cell(words[1], words[2])
        manifest = reinstate_champion(cell, args.reason)
        print(f"{cell.key}: champion reinstated ({manifest['reinstated']['reason']}); the monitor restarts after "
              f"{manifest['reinstated']['monitor_restarts_after']}; recorded in {cell.paths.champion_manifest}")
        return 0
    if len(words) != 2:
        print("error: usage: patx ledger DATASET VARIANT", file=sys.stderr)
        return 2
    cell = resolve_cell(*words)
    path = cell.paths.track_record_md
    if not path.exists():
        print(f"error: {path} does not exist yet: run `make score DATASET={words[0]} VARIANT={words[1]}` first",
              file=sys.stderr)
        return 2
    print(path.read_text(encoding="utf-8"), end="")
    return 0


def add_ledger_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """``patx ledger``: print a cell's track record, or reinstate its suspended champion."""
    parser = subparsers.add_parser("ledger", help="a cell's forward track record; reinstate a suspended champion",
                                   description="patx ledger DATASET VARIANT | patx ledger reinstate DATASET VARIANT "
                                               "--reason TEXT")
    parser.add_argument("words", nargs="+", metavar="[reinstate] DATASET VARIANT")
    parser.add_argument("--reason", default=None, help="why the suspended champion may signal again (reinstate)")
    parser.set_defaults(run=_ledger)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patx", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_ledger_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
