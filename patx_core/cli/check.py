"""``patx check``: do the datasets and variants files load? One line per problem.

    patx check      exit 0: both files load; 2: the problem on one line (stderr)

Every ``make`` target runs it first (``make settings-check``): Dagster loads both files when it
imports the code location, so a typo would otherwise fail the target behind pages of tracebacks.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("check", help="check the datasets and variants files (one line per problem)",
                                   description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=None, help="datasets TOML (default: $PATX_DATASETS or datasets.toml)")
    parser.add_argument("--variants", default=None, help="variants TOML (default: $PATX_VARIANTS or variants.toml)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from patx_core.settings.check import settings_problem

    problem = settings_problem(args.datasets, args.variants)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return 0
