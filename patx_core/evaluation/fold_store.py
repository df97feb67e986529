"""Walk-forward fold plans and fold results as JSON files, so a fold group trained on one machine
is stitched on another.

The encoding is exact: floats are written with Python's shortest round-trip repr (NaN and ±inf
as JSON's ``NaN``/``Infinity`` extensions, which :mod:`json` reads back), timestamps as integer
epochs in their own time unit with their time zone, arrays with their dtype. A loaded result
is therefore equal, field for field and bit for bit, to the one that was saved, and stitching
loaded results gives the numbers stitching the originals gives. JSON rather than pickle: a
file under the artifact root is data, never code to run on load.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from patx_core.evaluation.backtest import RandomBaseline
from patx_core.evaluation.walk_forward import FoldPlan, FoldResult
from patx_core.storage.artifacts import PathLike, as_path, atomic_write_text

__all__ = ["plan_to_json", "plan_from_json", "result_to_json", "result_from_json", "write_fold_file",
           "read_fold_file"]

FORMAT = "patx-walk-forward-folds/1"
_PLAN_TIMES = ("history_start", "val_start", "test_start", "test_end", "history_last", "test_last")


def plan_to_json(plan: FoldPlan) -> dict[str, Any]:
    return {"index": plan.index, **{k: _time(getattr(plan, k)) for k in _PLAN_TIMES}}


def plan_from_json(data: dict[str, Any]) -> FoldPlan:
    return FoldPlan(index=int(data["index"]), **{k: _parse_time(data[k]) for k in _PLAN_TIMES})


def _time(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _array(a: np.ndarray) -> dict[str, Any]:
    return {"dtype": a.dtype.str, "values": a.tolist()}


def _from_array(data: dict[str, Any]) -> np.ndarray:
    return np.asarray(data["values"], dtype=np.dtype(data["dtype"]))


def _frame(frame: pl.DataFrame) -> list[dict[str, Any]]:
    columns = []
    for name, dtype in frame.schema.items():
        col = frame.get_column(name)
        if isinstance(dtype, pl.Datetime):
            columns.append({"name": name, "kind": "datetime", "time_unit": dtype.time_unit,
                            "time_zone": dtype.time_zone, "values": col.dt.epoch(dtype.time_unit).to_list()})
        elif dtype == pl.Float64:
            columns.append({"name": name, "kind": "float64", "values": col.to_list()})
        elif dtype.is_integer():
            columns.append({"name": name, "kind": "int64", "values": col.to_list()})
        else:
            raise TypeError(f"fold_store: column {name!r} has dtype {dtype}, which has no exact JSON encoding here")
    return columns


def _from_frame(columns: list[dict[str, Any]]) -> pl.DataFrame:
    series = []
    for c in columns:
        if c["kind"] == "datetime":
            s = pl.from_epoch(pl.Series(c["name"], c["values"], dtype=pl.Int64), time_unit=c["time_unit"])
            series.append(s.dt.replace_time_zone(c["time_zone"]) if c["time_zone"] else s)
        else:
            series.append(pl.Series(c["name"], c["values"], dtype=pl.Float64 if c["kind"] == "float64" else pl.Int64))
    return pl.DataFrame(series)


def result_to_json(result: FoldResult) -> dict[str, Any]:
    r = result.random
    return {"row": result.row, "equity": _frame(result.equity),
            "random": {"returns": _array(r.returns), "trades": _array(r.trades), "n_trades": r.n_trades,
                       "seed": r.seed},
            "true_positives": result.true_positives, "n_samples": result.n_samples,
            "n_positives": result.n_positives, "fingerprint": result.fingerprint, "seconds": result.seconds,
            "periods_per_year": result.periods_per_year}


def result_from_json(data: dict[str, Any]) -> FoldResult:
    r = data["random"]
    return FoldResult(row=dict(data["row"]), equity=_from_frame(data["equity"]),
                      random=RandomBaseline(returns=_from_array(r["returns"]), trades=_from_array(r["trades"]),
                                            n_trades=int(r["n_trades"]), seed=r["seed"]),
                      true_positives=int(data["true_positives"]), n_samples=int(data["n_samples"]),
                      n_positives=int(data["n_positives"]), fingerprint=dict(data["fingerprint"]),
                      seconds=float(data["seconds"]), periods_per_year=float(data["periods_per_year"]))


def _default(value: Any) -> Any:
    """numpy scalars inside a fold row, as the Python numbers they hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"fold_store: {type(value).__name__} is not JSON-encodable")


def write_fold_file(path: PathLike, body: dict[str, Any]) -> None:
    """``body`` (plans and/or results already encoded) as one JSON file, written atomically."""
    atomic_write_text(path, json.dumps({"format": FORMAT, **body}, default=_default) + "\n")


def read_fold_file(path: PathLike) -> dict[str, Any]:
    data = json.loads(as_path(path).read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a walk-forward fold file (format {data.get('format')!r}, expected {FORMAT!r})")
    return data
