"""Inference without Dagster: the buy probability for the newest candles of a raw parquet.

    python -m patx_core.predict --checkpoint data/models/baseline/best_model.pth \\
        --raw data/raw/nasdaq_daily_1999_2018.parquet --last 5

Prints one JSON line per candle (oldest first). Features, scaler, window and model shape all come
from the checkpoint; the raw file is validated exactly like the pipeline's input. Pass the full
history you have, not only the last few candles: EMA200 and the Wilder averages are seeded at the
start of the file, so a short file (under ~1,000 candles) gives features the model never saw
during training. The decision
threshold comes from ``--threshold``, else from the ``manifest.json`` beside a promoted checkpoint;
without either, only the probability is printed (``signal`` is null).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from patx_core.artifacts import PathLike, as_path, read_json, sha256_file

if TYPE_CHECKING:
    import polars as pl

    from patx_core.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

# EMA200 seeded at the file's start needs ~4 time constants to forget its seed.
SHORT_HISTORY = 1000


def predict_frame(checkpoint: "LoadedCheckpoint", raw: "pl.DataFrame", *, last: int = 1,
                  threshold: float | None = None, symbol: str | None = None) -> list[dict[str, Any]]:
    """Probabilities for the last ``last`` candles of validated ``raw`` (one symbol) that have a full window.

    ``symbol`` picks the symbol's scaler when the model was trained with per-symbol scaling.
    ``checkpoint`` is a ``LoadedCheckpoint``. Each row: timestamp (ISO), probability, threshold,
    signal ("buy" if probability >= threshold, "hold", or None without a threshold).
    """
    from patx_core.features import compute_features

    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    feature_set = checkpoint.variant.data.feature_set
    feats = compute_features(raw, feature_set)
    cols = list(checkpoint.feature_columns)
    missing = [c for c in cols if c not in feats.columns]
    if missing:
        raise ValueError(f"checkpoint expects feature columns {missing} that feature set {feature_set!r} "
                         "does not produce")
    values = feats.select(cols).to_numpy()
    complete = np.flatnonzero(np.isfinite(values).all(axis=1))
    if complete.size == 0:
        raise ValueError("no candle has all features yet: the raw data is shorter than the indicator warm-up")
    first = int(complete[0])  # indicators only ever start, never stop, so rows after `first` are complete
    w = checkpoint.window_size
    ends = np.arange(max(first + w - 1, values.shape[0] - last), values.shape[0])
    if ends.size == 0:
        raise ValueError(f"need at least {first + w} candles for one {w}-candle window after the "
                         f"{first}-candle warm-up, got {values.shape[0]}")
    if values.shape[0] < SHORT_HISTORY:
        log.warning("only %d candles: indicators seeded this close to the start differ from those the model "
                    "was trained on; pass >= %d candles of history", values.shape[0], SHORT_HISTORY)
    x = checkpoint.scaler.for_symbol(symbol).transform(values[first:])  # (rows, F) float32
    windows = np.stack([x[e - first - w + 1: e - first + 1] for e in ends])  # (n, W, F), n <= last
    model = checkpoint.model.eval()
    with torch.inference_mode():
        prob = torch.sigmoid(model(torch.from_numpy(windows))).double().numpy()
    ts = feats["timestamp"].to_list()
    rows = []
    for e, p in zip(ends, prob):
        signal = None if threshold is None else ("buy" if p >= threshold else "hold")
        rows.append({**({"symbol": symbol} if symbol is not None else {}), "timestamp": ts[e].isoformat(), "probability": float(p), "threshold": threshold,
                     "signal": signal})
    return rows


def predict_universe(checkpoint: "LoadedCheckpoint", universe: "pl.DataFrame", *, last: int = 1,
                     threshold: float | None = None) -> list[dict[str, Any]]:
    """:func:`predict_frame` for every symbol of a long frame (``symbol`` column), symbol by symbol."""
    from patx_core.universe import SYMBOL

    rows: list[dict[str, Any]] = []
    for (symbol,), part in universe.group_by(SYMBOL, maintain_order=True):
        rows.extend(predict_frame(checkpoint, part.drop(SYMBOL), last=last, threshold=threshold, symbol=str(symbol)))
    return rows


def predict_from_paths(checkpoint_path: PathLike, raw_path: PathLike, *, last: int = 1,
                       threshold: float | None = None) -> list[dict[str, Any]]:
    from patx_core.checkpoint import load_checkpoint
    from patx_core.universe import read_universe

    checkpoint = load_checkpoint(checkpoint_path)
    if threshold is None:
        manifest_path = as_path(checkpoint_path).parent / "manifest.json"
        if manifest_path.exists():
            manifest = read_json(manifest_path)
            if sha256_file(checkpoint_path) != manifest.get("checkpoint_sha256"):
                raise RuntimeError(f"{checkpoint_path} does not match {manifest_path} (an interrupted promotion?); "
                                   "pass --threshold explicitly or re-promote")
            threshold = float(manifest["threshold"])
    universe = read_universe([raw_path]).frame
    return predict_universe(checkpoint, universe, last=last, threshold=threshold)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patx_core.predict", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="best_model.pth (e.g. data/models/<variant>/)")
    parser.add_argument("--raw", required=True, help="raw candles parquet (timestamp, open, high, low, close, volume; "
                                                     "an optional symbol column gives one line per symbol)")
    parser.add_argument("--last", type=int, default=1, help="how many of the newest candles to score")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold (default: the manifest.json beside the checkpoint)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rows = predict_from_paths(args.checkpoint, args.raw, last=args.last, threshold=args.threshold)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
