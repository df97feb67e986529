"""``patx predict``: score the newest candles of a raw parquet with a trained checkpoint.

Prints one JSON line per candle (oldest first); exit status 0, or 2 when the files do not fit
(bad candles, a record of another checkpoint, a missing file). :mod:`patx_core.serving.predict`
does the work.
"""

from __future__ import annotations

import argparse
import json

from patx_core.cli.command import run_command

EPILOG = """\
decision threshold, first found wins:
  --threshold P          buy when probability >= P (e.g. --threshold 0.62)
  --evaluation PATH      an evaluation.json of this checkpoint (data/<dataset>/reports/<variant>/evaluation.json)
  manifest.json          beside a promoted checkpoint (data/<dataset>/models/<variant>/)
without any of them, or when that evaluation says the model abstains, every row prints
"signal": "hold" with a "reason". An evaluation's threshold is under threshold.value.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict", help="score the newest candles with a trained model (one JSON line per candle)",
        description="Inference without Dagster: the buy probability for the newest candles of a raw parquet.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="best_model.pth (e.g. data/<dataset>/models/<variant>/best_model.pth)")
    parser.add_argument("--raw", required=True, help="raw candles parquet (timestamp, open, high, low, close, volume; "
                                                     "an optional symbol column gives one line per symbol)")
    parser.add_argument("--last", type=int, default=1, help="how many of the newest candles to score")
    parser.add_argument("--threshold", type=float, default=None, metavar="P",
                        help="decision threshold in [0, 1]: buy when probability >= P (default: see below)")
    parser.add_argument("--evaluation", default=None, metavar="PATH",
                        help="evaluation.json of this checkpoint to read the threshold from")
    parser.set_defaults(run=lambda args: run(args, parser))
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from patx_core.serving.predict import predict_from_paths

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")

    def predict() -> int:
        for row in predict_from_paths(args.checkpoint, args.raw, last=args.last, threshold=args.threshold,
                                      evaluation_path=args.evaluation):
            print(json.dumps(row))
        return 0

    return run_command(predict)
