"""``patx ledger``: a cell's forward track record, and lifting a champion's suspension.

    patx ledger DATASET VARIANT                         print track_record.md (written by `make score`)
    patx ledger reinstate DATASET VARIANT --reason T    reinstate a suspended champion

Reinstating is recorded in the champion's ``manifest.json`` and restarts the monitor from zero;
ledger rows are never rewritten. Exit status 0, or 2 with one ``error:`` line.
"""

from __future__ import annotations

import argparse

from patx_core.cli.command import fail, run_command


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ledger", help="a cell's forward track record; reinstate a suspended champion",
        description="patx ledger DATASET VARIANT prints the track record; "
                    "patx ledger reinstate DATASET VARIANT --reason TEXT lifts the champion's suspension.")
    parser.add_argument("words", nargs="+", metavar="[reinstate] DATASET VARIANT")
    parser.add_argument("--reason", default=None, help="why the suspended champion may signal again (reinstate)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    return run_command(lambda: _run(list(args.words), args.reason))


def _run(words: list[str], reason: str | None) -> int:
    from patx_core.settings.grid import resolve_cell

    if words and words[0] == "reinstate":
        if len(words) != 3 or not reason:
            return fail("usage: patx ledger reinstate DATASET VARIANT --reason TEXT")
        from patx_core.serving.champion import reinstate_champion

        cell = resolve_cell(words[1], words[2])
        manifest = reinstate_champion(cell, reason)
        print(f"{cell.key}: champion reinstated ({manifest['reinstated']['reason']}); the monitor restarts after "
              f"{manifest['reinstated']['monitor_restarts_after']}; recorded in {cell.paths.champion_manifest}")
        return 0
    if len(words) != 2:
        return fail("usage: patx ledger DATASET VARIANT")
    cell = resolve_cell(*words)
    path = cell.paths.track_record_md
    if not path.exists():
        return fail(f"{path} does not exist yet: run `make score DATASET={words[0]} VARIANT={words[1]}` first")
    print(path.read_text(encoding="utf-8"), end="")
    return 0
