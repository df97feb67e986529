"""``patx search``: tune a variant on val with its ``[NAME.search]`` table; judge the winner once.

    patx search --dataset D --variant V [--trials N]

Runs (or resumes) the Optuna study at ``<dataset>/search/<variant>/study.journal`` until it holds
N finished trials, writes ``trials.parquet``, ``search.md`` and ``best.toml`` beside it, and ends
with ``best trial #k: <objective> <value> (<params>); wrote <path>/best.toml`` and, on the next
line, the one command that judges it on test. Exit status 0; 1 when no trial completed; 2 when it could not run.
"""

from __future__ import annotations

import argparse
import logging

from patx_core.cli.command import run_command, setup_logging


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("search", help="tune a variant on val (Optuna); the winner is judged on test once",
                                   description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="a dataset of $PATX_DATASETS (default datasets.toml)")
    parser.add_argument("--variant", required=True, help="a variant with a [VARIANT.search] table")
    parser.add_argument("--trials", type=int, default=None,
                        help="finished trials the study ends with (default: the variant's search.trials)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # One line per trial on stderr; the verdict lines on stdout.
    setup_logging(logging.WARNING)
    logging.getLogger("patx_core.search").setLevel(logging.INFO)
    import optuna

    # Optuna's own per-trial INFO lines would repeat ours with less in them.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from patx_core.search.study import run_search
    from patx_core.settings.grid import resolve_cell

    def search() -> int:
        report = run_search(resolve_cell(args.dataset, args.variant), trials=args.trials)
        print(report.final_line())
        if report.judge_command is None:
            return 1
        print(report.judge_command)  # alone on its line, to copy: the one look on test
        return 0

    return run_command(search)
