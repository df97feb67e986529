"""Has a cell's input changed since its latest evaluation? The nightly retrain asks this and only this.

Training is deterministic, so retraining on the input the last evaluation already saw reproduces
the same model: work that adds no information. The nightly schedule asks :func:`input_changed`
for every nightly cell and retrains only those whose answer is ``changed``. The input is what
``raw_prices`` would read (:meth:`GridCell.input_files`), identified by the same digest the
evaluation records (``evaluation.json`` → ``dataset.source_sha256``); files waiting in the
dataset's landing folder count as a change, since the run ingests them first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from patx_core.data.intervals import format_duration
from patx_core.data.universe import source_digest
from patx_core.ingest.landing import pending_files
from patx_core.settings.grid import GridCell
from patx_core.storage.artifacts import read_json

#: The digest of a cell with no input file yet (a landing dataset before its first batch).
NO_INPUT = "no-input"


@dataclass(frozen=True)
class InputChange:
    """The answer for one cell: the input's digest, whether it changed, and why."""

    digest: str
    changed: bool
    reason: str
    pending: int = 0  # files waiting in the landing folder
    stale: str = ""  # for an unchanged input: why its newest candle is too old ("" when it is not)


def last_evaluated_input(cell: GridCell) -> dict[str, Any]:
    """The ``dataset`` block of the cell's latest completed evaluation ({} when never evaluated)."""
    path = cell.paths.evaluation_json
    return (read_json(path).get("dataset") or {}) if path.exists() else {}


def staleness_note(cell: GridCell, last_timestamp: str | None, now: datetime) -> str:
    """Why an unchanged input may still be a problem: its newest candle is past max_staleness.

    A night that retrains nothing runs no ``raw_prices``, so its freshness check would not speak;
    the skip reason says it instead.
    """
    limit = cell.dataset.max_staleness_seconds
    if limit is None or not last_timestamp:
        return ""
    age = (now - datetime.fromisoformat(last_timestamp)).total_seconds()
    if age <= limit:
        return ""
    return (f"STALE: newest candle {last_timestamp[:10]} is {format_duration(age)} old, past "
            f"max_staleness={cell.dataset.max_staleness}")


def input_changed(cell: GridCell, now: datetime | None = None) -> InputChange:
    """Whether ``cell``'s input differs from the one its last evaluation saw, and why."""
    files = cell.input_files()
    digest = source_digest(files) if files else NO_INPUT
    pending = len(pending_files(cell.dataset))
    evaluated = last_evaluated_input(cell)
    recorded = evaluated.get("source_sha256")
    if pending:
        return InputChange(digest, True, f"{pending} file(s) waiting in the landing folder", pending)
    if recorded is None:
        return InputChange(digest, True, "never evaluated")
    if digest != recorded:
        return InputChange(digest, True, f"input sha256 {digest[:12]} differs from the evaluated {recorded[:12]}")
    stale = staleness_note(cell, evaluated.get("last_timestamp"), now or datetime.now(timezone.utc))
    return InputChange(digest, False, f"input unchanged since its last evaluation (sha256 {digest[:12]})",
                       stale=stale)
