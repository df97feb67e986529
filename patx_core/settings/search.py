"""A variant's hyper-parameter search: ``[NAME.search]`` and ``[NAME.search.space]`` of a variants file.

::

    [baseline.search]
    trials = 40            # finished trials the study ends with
    sampler = "tpe"        # or "random"
    seed = 0               # the sampler's seed
    objective = "val_roc_auc"   # or "val_loss", "val_precision_lb"
    parallel = 4           # trials of one architecture trained at once (default: 1 on CPU, 8 on CUDA)
    pruner = "median"      # or "none"
    [baseline.search.space]
    "train.lr" = {low = 1e-4, high = 3e-3, log = true}
    "model.d_model" = {choices = [64, 128]}

Every searched field is ``"section.field"`` of the variant, and every bound and choice is
checked at load time by building the variant with it (:func:`check_space`), so a field the
variant does not have, a bound its section refuses, ``low > high`` or an empty ``choices`` fails
with the field named before any training. The split, the gate, the backtest, the walk-forward
and the monitor are not searchable: they define how a model is judged, and a search that moved
them would be choosing its own exam. Seeds are not searchable either: picking the luckiest
initialization on val is the selection a seed study exists to expose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, get_args

if TYPE_CHECKING:
    from patx_core.settings.config import VariantConfig

SamplerName = Literal["tpe", "random"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
ObjectiveName = Literal["val_roc_auc", "val_loss", "val_precision_lb"]
OBJECTIVES: tuple[str, ...] = get_args(ObjectiveName)
PrunerName = Literal["median", "none"]
PRUNERS: tuple[str, ...] = get_args(PrunerName)

#: The variant sections a search may change: what is learned, never how it is judged.
SEARCHABLE_SECTIONS = ("data", "labels", "model", "train")
#: Fields of those sections a search may not change, with the reason the error gives.
UNSEARCHABLE_FIELDS = {
    "train.seed": "choosing the luckiest seed on val is selection, not tuning (use train.seeds)",
    "train.seeds": "choosing the luckiest seed on val is selection, not tuning",
    "train.ensemble": "an ensemble is a decision about the candidate, not a hyper-parameter",
    "train.device": "the device changes where a model trains, not what it learns",
    "model.input_dim": "it follows the feature set",
    "model.window_size": "it follows data.window_size",
}
#: Optuna's name for maximizing or minimizing each objective.
DIRECTIONS = {"val_roc_auc": "maximize", "val_loss": "minimize", "val_precision_lb": "maximize"}


def _fail(where: str, rule: str, value: Any) -> None:
    raise ValueError(f"{where} must be {rule}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SearchParam:
    """One searched field: a range (``low``/``high``, ``log``) or a list of ``choices``."""

    name: str  # "section.field" of the variant
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        where = f"[search.space] {self.name!r}"
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                _fail(where, "either {low, high[, log]} or {choices}, not both", self.to_dict())
            if not isinstance(self.choices, (list, tuple)) or not self.choices:
                _fail(f"{where} choices", "a non-empty list", self.choices)
            object.__setattr__(self, "choices", tuple(self.choices))  # TOML gives lists
            ok = all(isinstance(c, (bool, int, float, str)) for c in self.choices)
            if not ok or len(set(self.choices)) != len(self.choices):
                _fail(f"{where} choices", "distinct numbers, strings or booleans", list(self.choices))
            return
        if self.low is None or self.high is None:
            _fail(where, "{low, high} (with log = true for a log scale) or {choices = [...]}", self.to_dict())
        for bound in ("low", "high"):
            if not _is_number(getattr(self, bound)):
                _fail(f"{where} {bound}", "a finite number", getattr(self, bound))
        if self.low > self.high:  # type: ignore[operator]
            _fail(f"{where} low", f"<= high={self.high}", self.low)
        if not isinstance(self.log, bool):
            _fail(f"{where} log", "true or false", self.log)
        if self.log and self.low <= 0:  # type: ignore[operator]
            _fail(f"{where} low", "> 0 on a log scale", self.low)

    @property
    def section(self) -> str:
        return self.name.partition(".")[0]

    @property
    def field_name(self) -> str:
        return self.name.partition(".")[2]

    def candidates(self) -> tuple[Any, ...]:
        """The values load-time validation builds the variant with: each choice, or both bounds."""
        return self.choices if self.choices is not None else (self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, **({"log": True} if self.log else {})}


@dataclass(frozen=True)
class SearchConfig:
    """How ``patx search`` explores a variant; each trial sees train and val only."""

    trials: int = 20  # finished (complete or pruned) trials the study ends with
    sampler: SamplerName = "tpe"
    seed: int = 0  # the sampler's seed: the same study asks the same points
    objective: ObjectiveName = "val_roc_auc"
    # Trials of one architecture trained at once by train_many; None: 1 on CPU (fusing brings
    # nothing there but memory) and 8 on CUDA (one small model is launch-bound on a GPU).
    parallel: int | None = None
    pruner: PrunerName = "median"
    space: tuple[SearchParam, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        def positive(name: str, value: Any) -> None:
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                _fail(f"[search] {name}", "a positive integer", value)

        positive("trials", self.trials)
        if self.parallel is not None:
            positive("parallel", self.parallel)
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            _fail("[search] seed", "a non-negative integer", self.seed)
        for name, allowed in (("sampler", SAMPLERS), ("objective", OBJECTIVES), ("pruner", PRUNERS)):
            if getattr(self, name) not in allowed:
                _fail(f"[search] {name}", f"one of {allowed}", getattr(self, name))
        object.__setattr__(self, "space", tuple(self.space))
        if not self.space:
            _fail("[search.space]", "at least one searched field", {})

    @property
    def direction(self) -> str:
        return DIRECTIONS[self.objective]

    def resolved_parallel(self, device_type: str) -> int:
        """``parallel``, or its default for the device the trials train on."""
        return self.parallel if self.parallel is not None else (8 if device_type == "cuda" else 1)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str) -> "SearchConfig":
        """``[NAME.search]`` with its ``space`` table; unknown fields are refused by name."""
        from patx_core.settings.config import refuse_unknown_fields

        values = dict(values)
        refuse_unknown_fields(f"{where} [search]", values, {f for f in cls.__dataclass_fields__})
        space = values.pop("space", None) or {}
        if not isinstance(space, Mapping):
            _fail(f"{where} [search.space]", "a table of \"section.field\" = {...}", space)
        params = []
        for name, spec in space.items():
            if not isinstance(spec, Mapping):
                _fail(f"{where} [search.space] {name!r}", "an inline table {low, high} or {choices}", spec)
            refuse_unknown_fields(f"{where} [search.space] {name!r}", spec, {"low", "high", "log", "choices"})
            try:
                params.append(SearchParam(name=name, **spec))
            except ValueError as exc:
                raise ValueError(f"{where} {exc}") from None
        try:
            return cls(**values, space=tuple(params))
        except ValueError as exc:
            raise ValueError(f"{where} {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The table as a variants file writes it (``from_dict`` inverts it)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ("trials", "sampler", "seed", "objective", "pruner")}
        if self.parallel is not None:
            out["parallel"] = self.parallel
        out["space"] = {p.name: p.to_dict() for p in self.space}
        return out


def apply_params(variant: "VariantConfig", params: Mapping[str, Any], *, name: str | None = None) -> "VariantConfig":
    """``variant`` with each ``"section.field"`` of ``params`` set (and named ``name``), without a search.

    Built through ``VariantConfig.from_dict``, so each value meets its section's rules;
    ``model.window_size`` follows a searched ``data.window_size``.
    """
    values = variant.to_dict()
    values.pop("search", None)
    for key, value in params.items():
        section, _, fname = key.partition(".")
        values[section] = {**values[section], fname: value}
        if key == "data.window_size":
            values["model"] = {**values["model"], "window_size": value}
    return type(variant).from_dict(name or variant.name, values)


def check_space(variant: "VariantConfig", search: SearchConfig, where: str) -> SearchConfig:
    """Refuse a searched field the variant lacks or may not search, and any bound or choice its
    section refuses; returns ``search`` with range bounds typed as the field is (int or float)."""
    from patx_core.settings.config import refuse_unknown_fields, section_fields

    current = variant.to_dict()
    names = [p.name for p in search.space]
    for p in search.space:
        at = f"{where} [search.space] {p.name!r}"
        if p.section not in SEARCHABLE_SECTIONS or not p.field_name:
            raise ValueError(f"{at}: a searched field is \"section.field\" with section one of "
                             f"{SEARCHABLE_SECTIONS} (the others define how a model is judged)")
        refuse_unknown_fields(f"{where} [search.space] section {p.section!r}", [p.field_name],
                              section_fields(p.section))
        if p.name in UNSEARCHABLE_FIELDS:
            raise ValueError(f"{at}: not searchable: {UNSEARCHABLE_FIELDS[p.name]}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where} [search.space]: a field is listed twice: {names}")
    typed = []
    for p in search.space:
        at = f"{where} [search.space] {p.name!r}"
        now = current[p.section][p.field_name]
        if p.choices is None:
            if not _is_number(now):
                raise ValueError(f"{at}: {p.name} is {now!r}, not a number: give it {{choices = [...]}}")
            if isinstance(now, int):
                if not all(float(b).is_integer() for b in (p.low, p.high)):
                    raise ValueError(f"{at}: {p.name} is an integer: low and high must be integers, "
                                     f"got {p.low!r}, {p.high!r}")
                p = SearchParam(p.name, low=int(p.low), high=int(p.high), log=p.log)  # type: ignore[arg-type]
            else:
                p = SearchParam(p.name, low=float(p.low), high=float(p.high), log=p.log)  # type: ignore[arg-type]
        for value in p.candidates():
            try:
                apply_params(variant, {p.name: value})
            except (TypeError, ValueError) as exc:
                bound = ("choice" if p.choices is not None else ("low" if value == p.low else "high"))
                raise ValueError(f"{at}: {bound} {value!r} is refused by the variant: {exc}") from None
        typed.append(p)
    return SearchConfig(**{**{k: getattr(search, k) for k in search.__dataclass_fields__}, "space": tuple(typed)})
