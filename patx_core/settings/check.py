"""Validate the datasets and variants files before anything starts: one line per problem.

    python -m patx_core.settings.check        # exit 0: both files load; 2: the problem, one line

Dagster loads both files when it imports the code location, so one typo in one variant makes
every ``make`` target fail behind a hundred lines of tracebacks (the CLI's, then the verdict's,
which imports the same code location). The Makefile runs this first: a broken file then ends the
target with the file, the table, the field and the near match, and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from patx_core.settings.datasets import load_datasets
from patx_core.settings.variants import load_variants
from patx_core.storage.artifacts import PathLike


def settings_problem(datasets_file: PathLike | None = None, variants_file: PathLike | None = None) -> str | None:
    """The first problem of the datasets file, else of the variants file, as one line; ``None`` if both load.

    Files default to ``$PATX_DATASETS`` / ``$PATX_VARIANTS`` (or the shipped ones), as Dagster reads them.
    """
    for load, path in ((load_datasets, datasets_file), (load_variants, variants_file)):
        try:
            load(path)
        except (ValueError, FileNotFoundError) as exc:
            return " ".join(str(exc).split())
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patx_core.settings.check", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=None, help="datasets TOML (default: $PATX_DATASETS or datasets.toml)")
    parser.add_argument("--variants", default=None, help="variants TOML (default: $PATX_VARIANTS or variants.toml)")
    args = parser.parse_args(argv)
    problem = settings_problem(args.datasets, args.variants)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
