"""Trade the gate split's buy signals as their triple-barrier outcomes, and ask "better than luck?".

Mechanics (one position at a time, all capital, compounding):

- A signal at sample candle ``t`` buys at that candle's close and exits where the label's
  triple barrier exited (``exit_index``, ``exit_price``): the trade the label describes.
- Non-overlapping: signals are taken in time order; a new trade may open only at or after the
  previous trade's exit candle (``entry_row >= previous exit_index``). Overlapping signals are
  skipped, not queued.
- Cost ``c = cost_bps / 1e4`` per side: buying spends ``(1 + c)`` per unit of price, selling
  receives ``(1 - c)``, so a trade's net growth is ``(1 + r) (1 - c) / (1 + c)`` with
  ``r = trade_return``. Buy-and-hold over the same period pays the same single round trip.
- The equity curve is marked to market at every close of the period (an open position at its
  liquidation value, i.e. net of the exit cost), so the entry cost shows on the entry candle
  and the curve ends exactly at the compounded trade growth. Its total and annualized return,
  Sharpe and max drawdown are :func:`patx_core.evaluation.risk.risk`'s, as for every curve.
- Annualizing uses ``BacktestConfig.periods_per_year`` when set, else the candles per year
  observed in the price table; a period shorter than a year is not annualized (see
  :mod:`patx_core.evaluation.risk`).
- The period runs from the split's first sample candle to the last exit of any of its sample
  rows, so every trade the strategy or the random baseline can take lies inside it.

The random-entry baseline answers whether the model's picks beat entering at random: each of
``n_random`` draws (``numpy.random.default_rng(config.seed)``) takes as many non-overlapping
trades as the strategy at random sample candles of the same split, with the same outcomes and
cost (see ``random_entry_baseline`` for how the entries are drawn).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Sequence

import numpy as np
import polars as pl

from patx_core.evaluation.risk import MIN_ANNUALIZED_DAYS, periods_per_year, risk
from patx_core.settings.config import BacktestConfig

log = logging.getLogger(__name__)

#: Columns ``backtest`` reads from the split's sample rows (the SplitDataset frame's columns).
SAMPLE_COLUMNS = ("timestamp", "exit_index", "trade_return", "holding")
#: Columns ``backtest`` reads from the whole feature table (row i = table row i).
PRICE_COLUMNS = ("timestamp", "entry_price")


@dataclass(frozen=True)
class RandomBaseline:
    """Total returns of random-entry draws that aim at the strategy's trade count.

    Only *full* draws (exactly ``n_trades`` trades) enter the statistics and the percentile:
    a draw that ran out of candles holds fewer trades, and comparing totals across different
    trade counts would flatter or punish the strategy for exposure, not for its picks.
    """

    returns: np.ndarray  # (draws,) total return of each draw
    trades: np.ndarray  # (draws,) trades each draw holds
    n_trades: int  # the strategy's trade count, which every draw aims at
    seed: int

    @property
    def full(self) -> np.ndarray:
        return self.returns[self.trades == self.n_trades]

    def summary(self) -> dict[str, Any]:
        full = self.full
        stats = {k: None for k in ("mean", "p5", "p50", "p95")}
        if full.size:
            stats = {"mean": float(full.mean()), **{f"p{q}": float(np.percentile(full, q)) for q in (5, 50, 95)}}
        return {"draws": int(self.returns.size), "full_draws": int(full.size), "seed": self.seed,
                "trades_mean": float(self.trades.mean()), **stats}

    def percentile_of(self, value: float) -> float | None:
        """Share of full draws (in %) below ``value``, ties counted half: 50 = no better than luck.

        ``None`` when no draw could place the strategy's trade count (a strategy in the market
        almost all the time has no random counterpart; compare it with buy-and-hold).
        """
        full = self.full
        if full.size == 0:
            return None
        below = np.count_nonzero(full < value - 1e-12)
        ties = np.count_nonzero(np.abs(full - value) <= 1e-12)
        return float(100.0 * (below + 0.5 * ties) / full.size)

    @classmethod
    def combine(cls, parts: Sequence["RandomBaseline"], how: Literal["equal_weight", "compound"]) -> "RandomBaseline":
        """Draw ``k`` of the whole is draw ``k`` of every part, mixed or compounded.

        ``equal_weight``: the parts are sleeves of one portfolio, 1/N of the capital each (the
        symbols of a universe); ``compound``: they run one after another on the same capital
        (the folds of a walk-forward). Each part aims at its own trade count, so the whole aims
        at their sum; draws beyond the shortest part's are dropped.
        """
        if not parts:
            raise ValueError("RandomBaseline.combine: no part")
        if how not in ("equal_weight", "compound"):
            raise ValueError(f"RandomBaseline.combine: how must be 'equal_weight' or 'compound', got {how!r}")
        draws = min(p.returns.size for p in parts)
        returns = np.stack([p.returns[:draws] for p in parts])
        merged = returns.mean(axis=0) if how == "equal_weight" else np.prod(1.0 + returns, axis=0) - 1.0
        return cls(returns=merged, trades=np.sum([p.trades[:draws] for p in parts], axis=0),
                   n_trades=int(sum(p.n_trades for p in parts)), seed=parts[0].seed)


@dataclass(frozen=True)
class BacktestResult:
    """Everything the evaluation and the report need; ``to_dict()`` is the JSON block."""

    n_signals: int  # buy signals among the split's samples, before removing overlaps
    trades: int
    hit_rate: float | None  # share of trades with a positive net return; None without trades
    total_return: float
    annualized_return: float | None  # None when the period is shorter than a year
    sharpe: float | None  # annualized; None when the curve never moves or the period is under a year
    max_drawdown: float
    exposure: float  # share of the period's candles spent in a trade
    buy_and_hold_return: float
    cost_bps: float
    periods_per_year: float
    period_days: float  # calendar days from the period's first candle to its last exit
    start: datetime
    end: datetime
    random: RandomBaseline
    strategy_percentile: float | None  # None without trades or without full random draws
    equity: pl.DataFrame  # timestamp, strategy, buy_and_hold (value of 1.0 invested at start)

    @property
    def annualized(self) -> bool:
        return self.period_days >= MIN_ANNUALIZED_DAYS

    def to_dict(self) -> dict[str, Any]:
        return {
            "trades": self.trades,
            "n_signals": self.n_signals,
            "hit_rate": self.hit_rate,
            "total_return": self.total_return,
            "annualized_return": self.annualized_return,
            "sharpe": self.sharpe,
            "max_drawdown": self.max_drawdown,
            "exposure": self.exposure,
            "buy_and_hold_return": self.buy_and_hold_return,
            "cost_bps": self.cost_bps,
            "periods_per_year": self.periods_per_year,
            "annualized": self.annualized,
            "period_days": self.period_days,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "random_baseline": self.random.summary(),
            "strategy_percentile": self.strategy_percentile,
        }


def round_trip_factor(cost_bps: float) -> float:
    """What one round trip keeps of a trade's gross growth: ``(1 - c) / (1 + c)``, ``c = cost_bps / 1e4``."""
    c = cost_bps / 1e4
    return (1.0 - c) / (1.0 + c)


def _require_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"backtest: {what} lacks column(s) {missing}; has {frame.columns}")


def annualization_note(annualized: bool, period_days: float, periods_per_year: float, split: str) -> str:
    """The words a report shows beside the annualized figures of a ``split``'s backtest."""
    if not annualized:
        return f"not annualized ({split} period {period_days:.0f} days)"
    return f"annualized at {periods_per_year:.6g} candles per year ({split} period {period_days:.0f} days)"


def _take_non_overlapping(entry: np.ndarray, exit_: np.ndarray) -> np.ndarray:
    """Indices of the trades kept when signals are taken greedily in time order."""
    kept: list[int] = []
    free_from = -1
    for i in range(entry.size):  # O(signals); the strategy has at most a few thousand
        if entry[i] >= free_from:
            kept.append(i)
            free_from = int(exit_[i])
    return np.asarray(kept, dtype=np.int64)


def random_entry_baseline(entry: np.ndarray, exit_: np.ndarray, growth: np.ndarray, *,
                          n_trades: int, n_draws: int, seed: int) -> RandomBaseline:
    """``n_draws`` random-entry traders, each taking ``n_trades`` non-overlapping trades.

    ``entry``/``exit_`` are the table rows of every candidate trade (the split's sample rows,
    sorted), ``growth`` their net growth factors. Each trader starts flat at the first sample
    candle; before each trade it waits a uniform random number of candles, then buys the next
    sample candle and holds it to that candle's triple-barrier exit. The waits are drawn from
    ``[0, 2 * slack / (remaining trades + 1)]``, where slack is the time left beyond what the
    remaining trades need on average, so the idle time spreads evenly over the split and a
    trader normally ends with exactly ``n_trades``. One that runs past the last sample keeps
    fewer and is left out of the statistics (``RandomBaseline.full``); that happens when the
    strategy is in the market nearly all the time. (Picking candidates in a random order
    instead jams well before a busy strategy's trade count.) All draws step together, so the
    work is O(n_trades) vectorized steps.
    """
    rng = np.random.default_rng(seed)
    trades = np.zeros(n_draws, dtype=np.int64)
    log_growth = np.zeros(n_draws)
    if n_trades == 0:
        return RandomBaseline(returns=np.zeros(n_draws), trades=trades, n_trades=0, seed=seed)
    mean_hold = float(np.mean(exit_ - entry))
    log_g = np.log(growth)
    last = int(entry[-1])
    free_from = np.full(n_draws, int(entry[0]), dtype=np.int64)
    for j in range(n_trades):
        remaining = n_trades - j
        slack = np.maximum(last - free_from - mean_hold * (remaining - 1), 0.0)
        wait = np.floor(rng.random(n_draws) * 2.0 * slack / (remaining + 1)).astype(np.int64)
        pick = np.searchsorted(entry, free_from + wait)
        alive = pick < entry.size
        pick = np.minimum(pick, entry.size - 1)
        trades += alive
        log_growth += np.where(alive, log_g[pick], 0.0)
        free_from = np.where(alive, exit_[pick], np.iinfo(np.int64).max // 2)
    short = int(np.count_nonzero(trades < n_trades))
    if short:
        log.info("random baseline: %d of %d draws ran out of candles before %d trades; "
                 "left out of the statistics", short, n_draws, n_trades)
    return RandomBaseline(returns=np.expm1(log_growth), trades=trades, n_trades=n_trades, seed=seed)


def backtest(samples: pl.DataFrame, signal: np.ndarray, prices: pl.DataFrame,
             config: BacktestConfig) -> BacktestResult:
    """Backtest ``signal`` over one split's sample rows (see the module docstring for the rules).

    ``samples``: that split's sample rows in time order, one per element of ``signal``, with
    ``SAMPLE_COLUMNS`` (the SplitDataset frame has them). The entry row in the feature table is
    ``exit_index - holding`` and is checked against ``prices``' timestamps.
    ``signal``: boolean buy decisions (``prob >= threshold``), aligned with ``samples``.
    ``prices``: the whole feature table's ``timestamp`` and ``entry_price`` (the close), row i =
    table row i, so ``exit_index`` addresses it directly.
    """
    _require_columns(samples, SAMPLE_COLUMNS, "samples")
    _require_columns(prices, PRICE_COLUMNS, "prices")
    signal = np.asarray(signal, dtype=bool).ravel()
    if signal.size != samples.height:
        raise ValueError(f"backtest: {signal.size} signals for {samples.height} sample rows")
    if samples.height == 0:
        raise ValueError("backtest: the split has no sample rows")
    exit_ = samples["exit_index"].to_numpy().astype(np.int64)
    holding = samples["holding"].to_numpy().astype(np.int64)
    gross = samples["trade_return"].to_numpy().astype(np.float64)
    entry = exit_ - holding
    close = prices["entry_price"].to_numpy().astype(np.float64)
    ts = prices["timestamp"]
    if np.any(holding < 1) or not np.all(np.isfinite(gross)):
        raise ValueError("backtest: every sample needs holding >= 1 and a finite trade_return")
    if np.any(np.diff(entry) <= 0):
        raise ValueError("backtest: sample rows must be in strictly increasing time order")
    if entry[0] < 0 or exit_.max() >= close.size:
        raise ValueError(f"backtest: trades reach rows [{entry[0]}, {exit_.max()}] outside the "
                         f"{close.size}-row price table")
    if not ts.gather(entry).equals(samples["timestamp"], check_names=False):
        raise ValueError("backtest: sample timestamps differ from the price table at exit_index - "
                         "holding; pass the whole feature table as prices")

    cost = round_trip_factor(config.cost_bps)
    growth = (1.0 + gross) * cost
    kept = _take_non_overlapping(entry[signal], exit_[signal])
    t_entry, t_exit = entry[signal][kept], exit_[signal][kept]
    t_growth, t_gross = growth[signal][kept], gross[signal][kept]

    start, end = int(entry[0]), int(exit_.max())
    period = close[start:end + 1]
    n_steps = period.size - 1
    market = np.r_[1.0, period[1:] / period[:-1]]  # per-candle price ratio, 1 at the start
    # Per-candle growth factors of the strategy: price moves strictly inside a trade, the entry
    # cost on the entry candle, and on the exit candle the move from the last close to the fill.
    mid = np.zeros(period.size + 1, dtype=np.int64)
    np.add.at(mid, t_entry - start + 1, 1)
    np.add.at(mid, t_exit - start, -1)
    factor = np.where(np.cumsum(mid)[:-1] > 0, market, 1.0)
    factor[t_entry - start] *= cost
    factor[t_exit - start] *= (1.0 + t_gross) * close[t_entry] / close[t_exit - 1]
    equity = np.cumprod(factor)
    bh = cost * period / period[0]

    ppy = periods_per_year(ts, config.periods_per_year)
    period_ts = ts[start:end + 1]
    figures = risk(equity, period_ts, ppy)
    total = figures.total_return
    baseline = random_entry_baseline(entry, exit_, growth, n_trades=kept.size,
                                     n_draws=config.n_random, seed=config.seed)
    result = BacktestResult(
        n_signals=int(signal.sum()),
        trades=int(kept.size),
        hit_rate=float(np.mean(t_growth > 1.0)) if kept.size else None,
        total_return=total,
        annualized_return=figures.annualized_return,
        sharpe=figures.sharpe,
        max_drawdown=figures.max_drawdown,
        exposure=float((t_exit - t_entry).sum() / n_steps),
        buy_and_hold_return=risk(bh, period_ts, ppy).total_return,
        cost_bps=float(config.cost_bps),
        periods_per_year=float(ppy),
        period_days=figures.period_days,
        start=ts[start],
        end=ts[end],
        random=baseline,
        strategy_percentile=baseline.percentile_of(total) if kept.size else None,
        equity=pl.DataFrame({"timestamp": period_ts, "strategy": equity, "buy_and_hold": bh}),
    )
    log.info("backtest: %d signals -> %d trades, total %.4f vs buy-and-hold %.4f, random pct %s",
             result.n_signals, result.trades, total, result.buy_and_hold_return, result.strategy_percentile)
    return result


def portfolio(results: dict[str, BacktestResult]) -> BacktestResult:
    """The equal-weight portfolio of per-symbol backtests (one symbol: that backtest unchanged).

    Each symbol's sleeve gets 1/N of the capital at the start and is never rebalanced, so the
    portfolio's equity curve is the mean of their curves, each held flat (cash) outside its own
    period, and its total return (the curve's end) the mean of the sleeves'. Buy-and-hold is the same equal-weight
    mix of each symbol's buy-and-hold. Random entries: draw ``k`` of the portfolio is the
    equal-weight mix of every symbol's draw ``k`` (each drawn with that symbol's trade count),
    so the percentile still asks "better than random entries in the same symbols?".
    """
    if not results:
        raise ValueError("portfolio: no per-symbol backtest")
    if len(results) == 1:
        return next(iter(results.values()))
    parts = list(results.values())
    n = len(parts)
    curves = [r.equity.select("timestamp", pl.col("strategy").alias(f"s{i}"), pl.col("buy_and_hold").alias(f"b{i}"))
              for i, r in enumerate(parts)]
    joined = pl.concat([c.select("timestamp") for c in curves]).unique().sort("timestamp")
    for c in curves:
        joined = joined.join(c, on="timestamp", how="left")
    # Before a sleeve's period it is cash at 1.0; after it, it holds its final value.
    joined = joined.with_columns(pl.exclude("timestamp").forward_fill().fill_null(1.0))
    strategy = joined.select(pl.mean_horizontal([f"s{i}" for i in range(n)])).to_series().to_numpy()
    bh = joined.select(pl.mean_horizontal([f"b{i}" for i in range(n)])).to_series().to_numpy()
    ppy = float(np.median([r.periods_per_year for r in parts]))
    figures = risk(strategy, joined["timestamp"], ppy)
    total = figures.total_return
    trades = sum(r.trades for r in parts)
    random = RandomBaseline.combine([r.random for r in parts], "equal_weight")
    hits = [r.hit_rate * r.trades for r in parts if r.hit_rate is not None]
    start, end = min(r.start for r in parts), max(r.end for r in parts)
    return BacktestResult(
        n_signals=sum(r.n_signals for r in parts),
        trades=trades,
        hit_rate=float(sum(hits) / trades) if trades else None,
        total_return=total,
        annualized_return=figures.annualized_return,
        sharpe=figures.sharpe,
        max_drawdown=figures.max_drawdown,
        exposure=float(np.mean([r.exposure for r in parts])),
        buy_and_hold_return=risk(bh, joined["timestamp"], ppy).total_return,
        cost_bps=parts[0].cost_bps,
        periods_per_year=ppy,
        period_days=figures.period_days,
        start=start,
        end=end,
        random=random,
        strategy_percentile=random.percentile_of(total) if trades else None,
        equity=pl.DataFrame({"timestamp": joined["timestamp"], "strategy": strategy, "buy_and_hold": bh}),
    )
