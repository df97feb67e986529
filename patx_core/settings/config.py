"""Every tunable of patx, each default written once.

Frozen dataclasses validate themselves at construction (``ValueError`` naming the
field and the allowed range), so a bad variant file fails before any work starts.
``VariantConfig.from_dict`` builds a whole variant from plain dicts (the variants
TOML file, a checkpoint's saved config) and rejects unknown fields by name.

One module on purpose, past 450 lines: every section of a variant and the validators they share,
so that each default and each rule (names, costs, ranges) is written exactly once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
import tomllib
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar, get_args

from patx_core.settings.search import SearchConfig, check_space

FeatureSet = Literal["seed", "relative"]
FEATURE_SETS: tuple[str, ...] = get_args(FeatureSet)

# The guide's window: 64 candles ending at the labelled candle.
DEFAULT_WINDOW = 64
# Length of the 14-column feature vector (patx_core.data.features.FEATURE_COLUMNS).
N_FEATURES = 14
# TA-Lib's EMA200 lookback: the first row at which all 14 guide features exist.
WARMUP_ROWS = 199


def _require(ok: bool, cls: str, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{cls}.{name} must be {rule}, got {value!r}")


def _positive_int(cls: str, name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, cls, name,
             "a positive integer", value)


def _in_range(value: Any, lo: float, hi: float, *, lo_open: bool = False) -> bool:
    """A finite number (never a bool: TOML's ``true`` is not 1) within [lo, hi] or (lo, hi]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return ok and (value > lo if lo_open else value >= lo) and value <= hi


def _finite(cls: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> None:
    rule = f"in {'(' if lo_open else '['}{lo}, {hi}]"
    _require(_in_range(value, lo, hi, lo_open=lo_open), cls, name, rule, value)


#: What a dataset or variant may be called: each names a folder under PATX_DATA_DIR.
NAME_RULE = "letters, digits, '_' or '-'"


def is_valid_name(name: Any) -> bool:
    """The one name rule of datasets and variants (:data:`NAME_RULE`)."""
    return isinstance(name, str) and bool(name) and name.replace("_", "").replace("-", "").isalnum()


#: A trading cost per side, in basis points: a variant's ``backtest.cost_bps`` or a dataset's own.
COST_BPS_RANGE = (0.0, 10_000.0)


def is_valid_cost_bps(value: Any) -> bool:
    """The one cost rule of variants and datasets (:data:`COST_BPS_RANGE`)."""
    return _in_range(value, *COST_BPS_RANGE)


@dataclass(frozen=True)
class DataConfig:
    """Which features are computed and how many candles one sample sees."""

    feature_set: FeatureSet = "seed"  # "seed" = the guide's 14 raw columns; "relative" = scale-free
    window_size: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        _require(self.feature_set in FEATURE_SETS, "DataConfig", "feature_set",
                 f"one of {FEATURE_SETS}", self.feature_set)
        _positive_int("DataConfig", "window_size", self.window_size)
        _require(self.window_size >= 2, "DataConfig", "window_size", ">= 2", self.window_size)


@dataclass(frozen=True)
class LabelConfig:
    """Volatility-scaled triple barrier: take profit / stop loss in ATR units, horizon in candles."""

    horizon: int = 10
    take_profit: float = 2.0
    stop_loss: float = 1.0

    def __post_init__(self) -> None:
        _positive_int("LabelConfig", "horizon", self.horizon)
        _finite("LabelConfig", "take_profit", self.take_profit, 0.0, 100.0, lo_open=True)
        _finite("LabelConfig", "stop_loss", self.stop_loss, 0.0, 100.0, lo_open=True)


@dataclass(frozen=True)
class SplitConfig:
    """Chronological fractions of the labelled rows; ``test == 0`` means no test split."""

    train: float = 0.70
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        _finite("SplitConfig", "train", self.train, 0.0, 1.0, lo_open=True)
        _finite("SplitConfig", "val", self.val, 0.0, 1.0, lo_open=True)
        _finite("SplitConfig", "test", self.test, 0.0, 1.0)
        total = self.train + self.val + self.test
        _require(abs(total - 1.0) < 1e-9, "SplitConfig", "train + val + test", "1.0", total)

    @classmethod
    def seed(cls) -> "SplitConfig":
        """The guide's 80/20 split with no test set."""
        return cls(train=0.80, val=0.20, test=0.0)

    @property
    def names(self) -> tuple[str, ...]:
        return ("train", "val", "test") if self.test > 0 else ("train", "val")


@dataclass(frozen=True)
class ModelConfig:
    """PriceActionTransformer shape. Defaults give the guide's 406,785 parameters."""

    input_dim: int = N_FEATURES
    window_size: int = DEFAULT_WINDOW
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 512
    dropout: float = 0.1
    head_hidden: int = 64

    def __post_init__(self) -> None:
        for name in ("input_dim", "window_size", "d_model", "n_heads", "n_layers", "d_ff", "head_hidden"):
            _positive_int("ModelConfig", name, getattr(self, name))
        _finite("ModelConfig", "dropout", self.dropout, 0.0, 1.0)
        _require(self.dropout < 1.0, "ModelConfig", "dropout", "< 1", self.dropout)
        _require(self.d_model % self.n_heads == 0, "ModelConfig", "d_model",
                 f"divisible by n_heads={self.n_heads}", self.d_model)
        # Sinusoidal encoding interleaves sin/cos over pairs of channels.
        _require(self.d_model % 2 == 0, "ModelConfig", "d_model", "even", self.d_model)


@dataclass(frozen=True)
class TrainConfig:
    """The guide's recipe (AdamW 1e-3, wd 0.01, batch 32, <=100 epochs, patience 5)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    # Linear learning-rate warm-up over the first N optimizer steps (step k trains at
    # lr * k / N); 0 = none, the guide's recipe. For large batches at a scaled-up lr: without it,
    # batch 512 at 4e-3 or 2e-3 collapsed to the base-rate predictor in 4 of 8 H200 runs
    # (benchmarks/RESULTS.md); whether warm-up cures that is not yet measured.
    warmup_steps: int = 0
    max_epochs: int = 100
    patience: int = 5
    # None: plain BCE; "auto": negatives/positives of the train labels; a number: that weight.
    pos_weight: float | str | None = None
    shuffle: bool = True  # the seed variant keeps the guide's shuffle=False
    seed: int = 42
    # A seed study: the cell's model trained under each of these seeds, fused in one step; the
    # evaluation reports every seed's gate. Empty = just ``seed``. When set, its first entry is
    # the champion candidate's seed and ``seed`` follows it (a different explicit ``seed`` is
    # refused), so promotion and checkpoints never change meaning.
    seeds: tuple[int, ...] = ()
    # With ``seeds``: the candidate is the mean probability of the models of every seed (trained
    # fused, saved together, judged and served as one model) instead of the first seed's model.
    ensemble: bool = False
    device: str = "auto"  # "auto" = cuda when available, else cpu
    amp: bool = True  # bf16 autocast on CUDA; never used on CPU
    # Kept so that stored configs still load; only the defaults are accepted. The torch.compile
    # path is gone: on the H200 it was 2.6x slower than the captured CUDA graph the loop records.
    compile: bool = False
    compile_mode: str | None = None
    # val/test forward passes only; does not change results. Measured on 2 CPU cores: 256 beats
    # 1024 by ~10 % per epoch (attention over 1024 windows falls out of cache).
    eval_batch_size: int = 256

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds a cell trains under: ``seeds``, or ``(seed,)``; the first is the champion's."""
        return self.seeds or (self.seed,)

    def __post_init__(self) -> None:
        _finite("TrainConfig", "lr", self.lr, 0.0, 10.0, lo_open=True)
        _finite("TrainConfig", "weight_decay", self.weight_decay, 0.0, 10.0)
        _require(isinstance(self.warmup_steps, int) and not isinstance(self.warmup_steps, bool)
                 and self.warmup_steps >= 0, "TrainConfig", "warmup_steps", "a non-negative integer",
                 self.warmup_steps)
        for name in ("batch_size", "max_epochs", "patience", "eval_batch_size"):
            _positive_int("TrainConfig", name, getattr(self, name))
        pw = self.pos_weight
        _require(pw is None or pw == "auto" or (isinstance(pw, (int, float)) and not isinstance(pw, bool)
                                                and math.isfinite(pw) and pw > 0),
                 "TrainConfig", "pos_weight", 'None, "auto" or a positive number', pw)
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
                 "TrainConfig", "seed", "a non-negative integer", self.seed)
        _require(isinstance(self.seeds, (tuple, list)) and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in self.seeds)
            and len(set(self.seeds)) == len(self.seeds), "TrainConfig", "seeds",
            "a list of distinct non-negative integers", self.seeds)
        object.__setattr__(self, "seeds", tuple(self.seeds))  # TOML and JSON give lists, even empty ones
        if self.seeds:
            default_seed = next(f.default for f in dataclasses.fields(self) if f.name == "seed")
            _require(self.seed in (default_seed, self.seeds[0]), "TrainConfig", "seed",
                     f"unset or seeds[0]={self.seeds[0]} when seeds is set", self.seed)
            object.__setattr__(self, "seed", self.seeds[0])
        _require(isinstance(self.device, str), "TrainConfig", "device", "a string", self.device)
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")
                 or self.device == "mps", "TrainConfig", "device", '"auto", "cpu", "cuda[:N]" or "mps"',
                 self.device)
        _require(isinstance(self.ensemble, bool) and (not self.ensemble or len(self.seeds) >= 2), "TrainConfig",
                 "ensemble", "true only with at least 2 seeds (train.seeds = [s1, s2, ...])", self.ensemble)
        for name in ("shuffle", "amp", "compile"):
            _require(isinstance(getattr(self, name), bool), "TrainConfig", name, "true or false",
                     getattr(self, name))
        _require(self.compile is False, "TrainConfig", "compile",
                 "false (torch.compile is not supported: the captured CUDA graph is faster)", self.compile)
        _require(self.compile_mode is None, "TrainConfig", "compile_mode", "unset (torch.compile is not supported)",
                 self.compile_mode)


@dataclass(frozen=True)
class EvalConfig:
    """The precision gate: threshold picked on val, applied unchanged to test."""

    target_precision: float = 0.7
    min_signals: int = 30
    confidence: float = 0.95  # Wilson interval level
    # The selection gate's bar (patx_core.evaluation.selection): 1 − min(1, looks × P(X >= hits))
    # at the target precision must reach it. 0.5 with one look is the literal "precision above
    # the target" (the binomial median, up to one hit); each model judged on the same test window
    # raises what it takes. 0.95 is the cautious user's choice.
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        _finite("EvalConfig", "target_precision", self.target_precision, 0.0, 1.0, lo_open=True)
        _positive_int("EvalConfig", "min_signals", self.min_signals)
        _finite("EvalConfig", "confidence", self.confidence, 0.0, 1.0, lo_open=True)
        _require(self.confidence < 1.0, "EvalConfig", "confidence", "< 1", self.confidence)
        _finite("EvalConfig", "min_confidence", self.min_confidence, 0.0, 1.0, lo_open=True)
        _require(self.min_confidence < 1.0, "EvalConfig", "min_confidence", "< 1", self.min_confidence)


@dataclass(frozen=True)
class BacktestConfig:
    """Signals traded as their triple-barrier outcomes, with a per-side cost."""

    cost_bps: float = 5.0
    n_random: int = 1000
    seed: int = 7
    periods_per_year: float | None = None  # None: candles per year observed in the data (count / years spanned)

    def __post_init__(self) -> None:
        _require(is_valid_cost_bps(self.cost_bps), "BacktestConfig", "cost_bps",
                 f"in [{COST_BPS_RANGE[0]}, {COST_BPS_RANGE[1]}]", self.cost_bps)
        _positive_int("BacktestConfig", "n_random", self.n_random)
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
                 "BacktestConfig", "seed", "a non-negative integer", self.seed)
        if self.periods_per_year is not None:
            _finite("BacktestConfig", "periods_per_year", self.periods_per_year, 0.0, 1e7, lo_open=True)


@dataclass(frozen=True)
class MonitorConfig:
    """After promotion: the forward ledger and the sequential test that suspends a champion.

    The champion's resolved out-of-sample bets (its buys de-clustered: a buy issued while an
    earlier one of the same symbol is still open joins it) feed a Bernoulli CUSUM
    (:mod:`patx_core.serving.monitor`) of ``p0 = eval.target_precision`` against ``p1``; it
    suspends the champion when its statistic reaches ``threshold``. The defaults, at p0 = 0.7:
    the average run to a false suspension is ~1,940 resolved bets (>= 1,000 required), and at
    a true precision of 0.35 ~97 % of streams are suspended within 40 bets (>= 90 % required);
    both are computed exactly from the CUSUM's Markov chain and checked by simulation in the
    tests. A higher target keeps both at this threshold (p0 = 0.8: ARL0 ~4,700 bets, > 99 %
    within 40); a lower one should re-derive ``threshold`` the same way.
    """

    p1: float = 0.5  # the precision the test is tuned to detect (below p0)
    threshold: float = 5.6  # CUSUM decision limit, in failure units (see patx_core.serving.monitor)
    # At most this many of a symbol's newest candles are scored per run and model; older ones are
    # skipped (logged), so a model first scored on a long history does not score all of it.
    max_backfill: int = 500

    def __post_init__(self) -> None:
        _finite("MonitorConfig", "p1", self.p1, 0.0, 1.0, lo_open=True)
        _require(self.p1 < 1.0, "MonitorConfig", "p1", "< 1", self.p1)
        _finite("MonitorConfig", "threshold", self.threshold, 0.0, 1e6, lo_open=True)
        _positive_int("MonitorConfig", "max_backfill", self.max_backfill)


WalkForwardMode = Literal["expanding", "rolling"]
WALK_FORWARD_MODES: tuple[str, ...] = get_args(WalkForwardMode)


@dataclass(frozen=True)
class WalkForwardConfig:
    """Retrain at past calendar cutoffs and trade the following stretch, fold by fold.

    The last ``1 - min_history`` of the shared calendar holds the folds' test periods, back to
    back, each ``test_candles`` long; fold ``k`` trains on what came before its test period
    (``expanding``: all of it; ``rolling``: its last ``train_candles`` candles). With
    ``test_candles = None`` the length follows from the data (see
    ``patx_core.evaluation.walk_forward.plan_folds``): long enough that a model flagging half the positives
    would still reach the gate's ``min_signals``; ``folds`` is then an upper bound, fewer folds
    are planned when fewer such test periods fit.
    """

    folds: int = 6  # at most this many folds
    test_candles: int | None = None  # None: derived from base rate, symbols and eval.min_signals
    mode: WalkForwardMode = "expanding"
    train_candles: int | None = None  # rolling only; None: the first fold's history length
    min_history: float = 0.5  # share of the calendar before the first test period
    min_pass_rate: float = 0.75  # walk_forward_gate_stable passes at this share of folds passing

    def __post_init__(self) -> None:
        _positive_int("WalkForwardConfig", "folds", self.folds)
        if self.test_candles is not None:
            _positive_int("WalkForwardConfig", "test_candles", self.test_candles)
        _require(self.mode in WALK_FORWARD_MODES, "WalkForwardConfig", "mode",
                 f"one of {WALK_FORWARD_MODES}", self.mode)
        if self.train_candles is not None:
            _positive_int("WalkForwardConfig", "train_candles", self.train_candles)
            _require(self.mode == "rolling", "WalkForwardConfig", "train_candles",
                     'unset unless mode = "rolling"', self.train_candles)
        _finite("WalkForwardConfig", "min_history", self.min_history, 0.0, 1.0, lo_open=True)
        _require(self.min_history < 1.0, "WalkForwardConfig", "min_history", "< 1", self.min_history)
        _finite("WalkForwardConfig", "min_pass_rate", self.min_pass_rate, 0.0, 1.0)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "labels": LabelConfig,
    "split": SplitConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "backtest": BacktestConfig,
    "walk_forward": WalkForwardConfig,
    "monitor": MonitorConfig,
}

T = TypeVar("T")


def read_named_tables(path: Path, kind: str, env_var: str,
                      build: Callable[[str, dict[str, Any]], T]) -> dict[str, T]:
    """A TOML file of named tables (``[name]``) → ``{name: build(name, table)}``.

    Shared by the variants and datasets files: every error names the file, and a ``build`` error
    (a bad or unknown field) also names the table, so a typo fails before any work starts.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{kind}s file {path} does not exist (set {env_var})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{kind}s file {path} is not valid TOML: {exc}") from None
    if not raw:
        raise ValueError(f"{kind}s file {path} defines no {kind}")
    built: dict[str, T] = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise ValueError(f"{kind}s file {path}: top-level key {name!r} must be a [table]")
        try:
            built[name] = build(name, values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{kind}s file {path}: {exc}") from None
    return built


def refuse_unknown_fields(where: str, given: Any, known: Any) -> None:
    """``ValueError`` naming every unknown field of ``given``, the nearest known one, and the rest.

    A typo is the usual cause, so the near match comes first (``did you mean 'max_epochs'?``)
    and the full list of allowed fields last.
    """
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    near = {u: m[0] for u in unknown if (m := difflib.get_close_matches(u, known, n=1, cutoff=0.6))}
    hint = "; did you mean " + ", ".join(f"{m!r}" for m in near.values()) + "?" if near else ""
    raise ValueError(f"{where}: unknown field(s) {unknown}{hint} (allowed: {known})")


def section_fields(section: str) -> set[str]:
    """The field names of one variant section (``"train"`` → ``{"lr", "weight_decay", ...}``)."""
    return {f.name for f in dataclasses.fields(_SECTIONS[section])}


def section_from_dict(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build one config section, naming any unknown field and the fields that exist."""
    values = dict(values or {})
    refuse_unknown_fields(where, values, {f.name for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
    return cls(**values)


@dataclass(frozen=True)
class VariantConfig:
    """One named configuration: a partition of the Dagster graph, one line of the leaderboard."""

    name: str
    description: str = ""
    nightly: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    walk_forward: WalkForwardConfig = field(default_factory=WalkForwardConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    # ``[NAME.search]``: how ``patx search`` tunes this variant; None: it is not searched.
    search: SearchConfig | None = None

    def __post_init__(self) -> None:
        _require(is_valid_name(self.name), "VariantConfig", "name", NAME_RULE, self.name)
        _require(isinstance(self.nightly, bool), "VariantConfig", "nightly", "true or false", self.nightly)
        _require(self.model.window_size == self.data.window_size, "VariantConfig",
                 "model.window_size", f"equal to data.window_size={self.data.window_size}",
                 self.model.window_size)
        _require(self.model.input_dim == N_FEATURES, "VariantConfig", "model.input_dim",
                 f"{N_FEATURES} (the feature count)", self.model.input_dim)
        # The monitor tests "precision fell from the target to p1": p1 must lie below the target.
        _require(self.monitor.p1 < self.eval.target_precision, "VariantConfig", "monitor.p1",
                 f"below eval.target_precision={self.eval.target_precision}", self.monitor.p1)

    @property
    def gate_split(self) -> str:
        """The split the precision gate is judged on: test when there is one, else val."""
        return "test" if self.split.test > 0 else "val"

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> "VariantConfig":
        """Build from ``{description?, nightly?, data: {...}, labels: {...}, ...}``.

        ``model.window_size`` follows ``data.window_size`` unless given explicitly, so a
        variant file writes the window once.
        """
        values = dict(values)
        refuse_unknown_fields(f"variant {name!r}", values, {"description", "nightly", "search", *_SECTIONS})
        sections = {key: section_from_dict(cls_, values.get(key), f"variant {name!r} [{key}]")
                    for key, cls_ in _SECTIONS.items() if key != "model"}
        model_values = dict(values.get("model") or {})
        model_values.setdefault("window_size", sections["data"].window_size)
        sections["model"] = section_from_dict(ModelConfig, model_values, f"variant {name!r} [model]")
        kwargs: dict[str, Any] = {k: values[k] for k in ("description", "nightly") if k in values}
        variant = cls(name=name, **kwargs, **sections)
        if values.get("search") is None:
            return variant
        where = f"variant {name!r}"
        if not isinstance(values["search"], Mapping):
            raise ValueError(f"{where} [search] must be a table, got {values['search']!r}")
        search = check_space(variant, SearchConfig.from_dict(values["search"], where), where)
        return dataclasses.replace(variant, search=search)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/TOML/torch-safe); ``from_dict(name, d)`` inverts it."""
        out = dataclasses.asdict(self)
        out.pop("name")
        # A variant without a search writes no ``search`` key, so configs saved before searches
        # existed compare equal to today's.
        out["search"] = self.search.to_dict() if self.search is not None else None
        if out["search"] is None:
            out.pop("search")
        return out
