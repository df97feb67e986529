"""What every step returns: its value, UI metadata and the outcomes that become asset checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


from patx_core.storage.jsonsafe import rounded


@dataclass(frozen=True)
class CheckOutcome:
    """One verified property of a step's output."""

    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        # a person reads it in the UI (0.9191, not 0.9190751445086706)
        object.__setattr__(self, "metadata", rounded(self.metadata))


@dataclass
class StepResult:
    """What a step returns: ``value`` for the next step; ``metadata`` (floats rounded for the UI, the
    artifacts keep every digit), ``checks`` and ``markdown`` for the asset."""

    value: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    markdown: str = ""

    def __post_init__(self) -> None:
        self.metadata = rounded(self.metadata)
