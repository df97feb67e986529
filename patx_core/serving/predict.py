"""Inference without Dagster: the buy probability for the newest candles of a raw parquet.

    patx predict --checkpoint data/nasdaq/models/baseline/best_model.pth \\
        --raw data/raw/nasdaq_daily_1999_2018.parquet --last 5

prints one JSON line per candle, oldest first (:mod:`patx_core.cli.predict`). Features, scaler,
window and model shape all come from the checkpoint; the raw file is validated exactly like the
pipeline's input. Pass the full history you have, not only the last few candles: EMA200 and the
Wilder averages are seeded at the start of the file, so a short file (under ~1,000 candles) gives
features the model never saw during training.

The decision threshold comes from ``--threshold``, else from an ``evaluation.json`` passed with
``--evaluation``, else from the ``manifest.json`` beside a promoted checkpoint. Without any of
them, or when the evaluation says the model abstains, every row says ``"signal": "hold"`` with a
``"reason"``: a model nobody has judged, or one judged to have no usable threshold, gives no buy.
The checkpoint records the candle interval it was trained on; candles of another interval are
scored, with a warning naming both, since the probabilities then mean little.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from patx_core.storage.artifacts import PathLike, as_path, read_json, sha256_file
from patx_core.data.intervals import format_interval, interval_differs, median_spacing_seconds
from patx_core.evaluation.metrics import signal_mask
from patx_core.model.ensemble import SeedEnsemble

if TYPE_CHECKING:
    import polars as pl

    from patx_core.model.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

# EMA200 seeded at the file's start needs ~4 time constants to forget its seed.
SHORT_HISTORY = 1000
#: The ``reason`` of a hold when no threshold was found anywhere.
NO_THRESHOLD = ("no decision threshold: no manifest.json beside the checkpoint (it was never promoted) "
                "and neither --threshold nor --evaluation was given")


def recorded_threshold(record: Mapping[str, Any], source: str) -> tuple[float | None, str | None]:
    """The decision threshold a ``manifest.json`` or ``evaluation.json`` records, or why there is none.

    Returns ``(threshold, None)``, or ``(None, reason)`` for an abstaining model or a record
    without a threshold. ``record["threshold"]`` is the evaluation's block (``value`` null when
    the model abstains) or, in manifests written before that block existed, a plain number.
    """
    block = record.get("threshold")
    if isinstance(block, Mapping):
        if block.get("value") is not None:
            return float(block["value"]), None
        if block.get("rule") == "abstain":
            why = block.get("explanation") or "no val threshold met the precision rule"
            return None, f"the model abstains ({source}: {why})"
        return None, f"{source} records no threshold"
    if block is None:
        return None, f"{source} records no threshold"
    return float(block), None


def _warn_on_another_interval(checkpoint: "LoadedCheckpoint", raw: "pl.DataFrame") -> None:
    trained = checkpoint.interval_seconds
    observed = median_spacing_seconds(raw["timestamp"])
    if trained is None or observed is None or not interval_differs(observed, trained):
        return
    log.warning("these candles are %s apart (median spacing) but the model was trained on %s candles; "
                "its probabilities are only meaningful on the interval it learned from",
                format_interval(observed), format_interval(trained))


def predict_frame(checkpoint: "LoadedCheckpoint", raw: "pl.DataFrame", *, last: int = 1,
                  threshold: float | None = None, hold_reason: str | None = None,
                  symbol: str | None = None) -> list[dict[str, Any]]:
    """Probabilities for the last ``last`` candles of validated ``raw`` (one symbol) that have a full window.

    ``symbol`` (added to each row when given) picks the symbol's scaler when the model was
    trained with per-symbol scaling.
    ``checkpoint`` is a ``LoadedCheckpoint``. Each row: timestamp (ISO), probability, threshold,
    signal ("buy" if probability >= threshold, else "hold") and reason: ``None`` when the
    threshold decided, else why there was no threshold (``hold_reason``, by default that none
    was given), with signal "hold". A seed ensemble's rows add ``member_probabilities`` (one per
    seed, in ``train.seeds`` order); its ``probability`` is their mean.
    """
    from patx_core.data.features import compute_features

    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    _warn_on_another_interval(checkpoint, raw)
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
        # A seed ensemble's probability is its members' mean; each member's is shown beside it.
        members = (model.member_probabilities(torch.from_numpy(windows)).numpy().T  # (n, K)
                   if isinstance(model, SeedEnsemble) else None)
    ts = feats["timestamp"].to_list()
    buys = signal_mask(prob, threshold)  # the evaluation's signal rule, not a second spelling of it
    rows = []
    for i, (e, p) in enumerate(zip(ends, prob)):
        if threshold is None:
            signal, reason = "hold", hold_reason or "no decision threshold given"
        else:
            signal, reason = ("buy" if buys[i] else "hold"), None
        rows.append({**({"symbol": symbol} if symbol is not None else {}), "timestamp": ts[e].isoformat(), "probability": float(p), "threshold": threshold,
                     "signal": signal, "reason": reason,
                     **({"member_probabilities": [float(m) for m in members[i]]} if members is not None else {})})
    return rows


def predict_universe(checkpoint: "LoadedCheckpoint", universe: "pl.DataFrame", *, last: int = 1,
                     threshold: float | None = None, hold_reason: str | None = None) -> list[dict[str, Any]]:
    """:func:`predict_frame` for every symbol of a long frame (``symbol`` column): one line per
    symbol and candle, symbol by symbol."""
    from patx_core.data.universe import SYMBOL

    rows: list[dict[str, Any]] = []
    for (symbol,), part in universe.group_by(SYMBOL, maintain_order=True):
        try:
            rows.extend(predict_frame(checkpoint, part.drop(SYMBOL), last=last, threshold=threshold,
                                      hold_reason=hold_reason, symbol=str(symbol)))
        except ValueError as exc:
            # A symbol the model cannot score (not in its per-symbol scaler, too short for a window)
            # must not take the other symbols' signals down with it: it holds, and says why.
            log.warning("symbol %r not scored: %s", symbol, exc)
            rows.append({"symbol": str(symbol), "timestamp": part["timestamp"].max().isoformat(),
                         "probability": None, "threshold": threshold, "signal": "hold",
                         "reason": f"cannot score this symbol: {exc}"})
    return rows


def _record_for(checkpoint_path: PathLike, record_path: PathLike, what: str) -> dict[str, Any]:
    """A manifest/evaluation that belongs to this very checkpoint file (by sha256), or an error."""
    record = read_json(record_path)
    recorded = record.get("checkpoint_sha256")
    if recorded is None and what == "manifest":
        raise RuntimeError(f"{record_path} names no checkpoint_sha256; pass --threshold explicitly")
    if recorded is not None and sha256_file(checkpoint_path) != recorded:
        hint = "an interrupted promotion?" if what == "manifest" else "the model was retrained since"
        raise RuntimeError(f"{checkpoint_path} does not match {record_path} ({hint}); "
                           "pass --threshold explicitly, re-evaluate or re-promote")
    return record


def _recorded_threshold_for(checkpoint_path: PathLike,
                            evaluation_path: PathLike | None) -> tuple[float | None, str | None]:
    """The threshold of an explicit evaluation.json, else of the manifest beside the checkpoint."""
    if evaluation_path is not None:
        return recorded_threshold(_record_for(checkpoint_path, evaluation_path, "evaluation"), str(evaluation_path))
    manifest_path = as_path(checkpoint_path).parent / "manifest.json"
    if manifest_path.exists():
        return recorded_threshold(_record_for(checkpoint_path, manifest_path, "manifest"), str(manifest_path))
    return None, NO_THRESHOLD


def predict_from_paths(checkpoint_path: PathLike, raw_path: PathLike, *, last: int = 1,
                       threshold: float | None = None,
                       evaluation_path: PathLike | None = None) -> list[dict[str, Any]]:
    """Score the newest candles of ``raw_path``; the threshold as the module docstring orders it."""
    from patx_core.model.checkpoint import load_checkpoint
    from patx_core.data.universe import read_universe

    checkpoint = load_checkpoint(checkpoint_path)
    reason = None
    if threshold is None:
        threshold, reason = _recorded_threshold_for(checkpoint_path, evaluation_path)
    universe = read_universe([raw_path]).frame
    return predict_universe(checkpoint, universe, last=last, threshold=threshold, hold_reason=reason)
