"""One seed against a seed ensemble: how much the verdict moves across realizations of one generator.

    python -m benchmarks.ensemble_spread [--realizations 4] [--seeds 5] [--rows 3000]

Each realization is ``tests.synthetic.planted_candles(rows, seed=r)``: the same planted pattern,
other noise. Every realization trains ``smoke`` under seed 0 alone and as the ensemble of seeds
``0..K-1`` (``train.ensemble``), through the pipeline's own steps (split, train, evaluate), and
reports test precision, gate verdict and training seconds; the ensemble's seed study adds each
seed's model judged alone. The spread (max - min) of test precision across realizations mixes the
data's noise with the initialization's; the spread across seeds within one realization is the
initialization's alone. Prints one JSON object (per-run rows and the summary).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from patx_core import pipeline
from patx_core.settings.config import VariantConfig
from patx_core.settings.variants import get_variant
from patx_core.storage.artifacts import read_json


def run_cell(root: Path, candles: Any, variant: VariantConfig) -> dict[str, Any]:
    """Split, train and evaluate one cell; its test precision, gate and training seconds."""
    from tests.cells import make_cell

    cell = make_cell(root, candles, variant)
    table = pipeline.build_features(pipeline.load_raw_prices(cell).value, cell).value
    frame = pipeline.build_splits(table, cell).value
    pipeline.build_windows(frame, cell)
    trained = pipeline.train_model(cell)
    pipeline.evaluate_model(table, frame, cell)
    evaluation = read_json(cell.paths.evaluation_json)
    gate = evaluation["checks"]["precision_gate"]
    # A seed study also judges each seed's model alone: the initialization's share of the spread.
    per_seed = {r["seed"]: r["precision"] for r in evaluation["seeds"]["per_seed"]}
    return {"precision": gate["precision"], "n_signals": gate["n_signals"], "passed": gate["passed"],
            "training_seconds": trained.metadata["training_seconds"],
            **({"seed_precisions": per_seed} if len(per_seed) > 1 else {})}


def spread(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if len(known) == len(values) and known else None


def main(argv: list[str] | None = None) -> int:
    from tests.synthetic import planted_candles

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realizations", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    smoke = get_variant("smoke")
    single = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, seed=0))
    ensemble = dataclasses.replace(smoke, name="smoke_ensemble", train=dataclasses.replace(
        smoke.train, seeds=tuple(range(args.seeds)), ensemble=True))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.realizations):
            candles = planted_candles(args.rows, seed=r)
            for kind, variant in (("one seed", single), (f"{args.seeds}-seed ensemble", ensemble)):
                row = {"realization": r, "candidate": kind,
                       **run_cell(Path(tmp) / f"{r}_{variant.name}", candles, variant)}
                logging.warning("%s", row)
                rows.append(row)
    summary = {}
    for kind in dict.fromkeys(r["candidate"] for r in rows):
        mine = [r for r in rows if r["candidate"] == kind]
        summary[kind] = {"test_precision": [r["precision"] for r in mine],
                         "spread": spread([r["precision"] for r in mine]),
                         "passed": sum(r["passed"] for r in mine),
                         "training_seconds": [round(r["training_seconds"], 1) for r in mine]}
        if "seed_precisions" in mine[0]:  # each realization's spread across its seeds, each model alone
            summary[kind]["seed_spread_within_realization"] = [
                spread(list(r["seed_precisions"].values())) for r in mine]
    print(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
