"""``patx ingest DATASET...``: merge the files in each dataset's landing folder into its curated store.

The same work as the ``ingested_candles`` asset, without Dagster, for a cron box. Prints one line
per dataset on stderr (what it merged, seeded or quarantined, or "nothing new") and a JSON summary
(one entry per dataset) on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from patx_core.cli.command import fail, setup_logging

#: Exit status: every batch merged, or none was waiting.
EXIT_OK = 0
#: Exit status: a batch was quarantined (the others still merged).
EXIT_QUARANTINED = 1
#: Exit status: the ingest could not run (usage, datasets file, unreadable store or source).
EXIT_FAILED = 2


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ingest", help="merge landed candle files into a dataset's curated store",
        description="Merge the candle files waiting in a dataset's landing folder into its curated store. "
                    "Prints a JSON summary; exit status 0: all merged or nothing waiting, 1: a batch was "
                    "quarantined, 2: the ingest could not run.")
    parser.add_argument("dataset", nargs="+", help="dataset name(s) from the datasets file")
    parser.add_argument("--datasets", default=None,
                        help="the datasets file (default: $PATX_DATASETS, else datasets.toml at the repo root)")
    parser.add_argument("--data-dir", default=None, help="the data dir (default: $PATX_DATA_DIR, else ./data)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from patx_core.ingest.landing import IngestError, ingest_dataset
    from patx_core.settings.datasets import load_datasets

    setup_logging(logging.INFO)
    try:
        datasets = load_datasets(args.datasets)
    except (FileNotFoundError, ValueError) as exc:
        return fail(str(exc), EXIT_FAILED)
    bad = [n for n in args.dataset if n not in datasets or not datasets[n].landing]
    if bad:
        fed = sorted(n for n, d in datasets.items() if d.landing)
        return fail(f"{bad} are not datasets with a landing folder; those are {fed}", EXIT_FAILED)
    summary: dict[str, Any] = {}
    code = EXIT_OK
    for name in args.dataset:
        try:
            report = ingest_dataset(datasets[name], args.data_dir)
        except IngestError as exc:
            summary[name] = {"dataset": name, "error": str(exc)}
            code = EXIT_FAILED
            continue
        summary[name] = report.metadata()
        print(report.summary_line(), file=sys.stderr)  # for a person; stdout keeps the JSON
        if not report.ok and code == EXIT_OK:
            code = EXIT_QUARANTINED
    print(json.dumps(summary, indent=2))
    return code
