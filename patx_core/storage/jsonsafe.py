"""Plain values for the artifacts: JSON files (evaluation.json, walk_forward.json, metadata) and the
checkpoint's ``metrics`` (which ``torch.load(weights_only=True)`` must read back).

One rule for both: undefined numbers are ``None`` (JSON ``null``), never NaN, and timestamps are
ISO 8601 strings, so a figure reads the same in every file a run writes.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any, Mapping

import numpy as np


def iso(ts: date | datetime | None) -> str | None:
    """ISO 8601 text of a timestamp (``None`` stays ``None``)."""
    return None if ts is None else ts.isoformat()


def json_safe(value: Any, *, strict: bool = False) -> Any:
    """Built-in JSON types only, with NaN/inf as ``None`` so ``json.dumps(allow_nan=False)`` holds.

    Mappings become dicts with ``str`` keys, lists/tuples/arrays lists, numpy and one-element torch
    scalars ``bool``/``int``/``float``, datetimes ISO strings. Anything else is returned as it is,
    or with ``strict`` a ``TypeError`` naming its type (the checkpoint asks for that: an object
    pickled into ``best_model.pth`` would make ``weights_only`` loading fail later, far from here).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v, strict=strict) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if value is None or isinstance(value, str):
        return value
    # A torch scalar (e.g. a loss tensor), recognised without importing torch here.
    if callable(getattr(value, "numel", None)) and callable(getattr(value, "item", None)) and value.numel() == 1:
        return json_safe(value.item(), strict=strict)
    if strict:
        raise TypeError(f"expected plain numbers, strings, lists or mappings; got {type(value).__name__}")
    return value


def rounded(value: Any, digits: int = 4) -> Any:
    """``value`` with every float cut to ``digits`` significant digits, for metadata a person reads
    in the UI (``0.9191``, not ``0.9190751445086706``); the JSON artifacts keep full precision."""
    if isinstance(value, Mapping):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        return float(f"{float(value):.{digits}g}")
    return value
