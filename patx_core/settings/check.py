"""Validate the datasets and variants files before anything starts: one line per problem.

``patx check`` prints :func:`settings_problem` and exits 2 when there is one (exit 0 otherwise).
Dagster loads both files when it imports the code location, so one typo in one variant makes
every ``make`` target fail behind a hundred lines of tracebacks (the CLI's, then the verdict's,
which imports the same code location). The Makefile runs this first: a broken file then ends the
target with the file, the table, the field and the near match, and nothing else.
"""

from __future__ import annotations

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
