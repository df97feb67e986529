"""Triple-barrier labels: barrier order, fills, unlabelled rows, and a row-by-row reference."""

from __future__ import annotations

import numpy as np
import pytest

from patx_core.settings.config import LabelConfig
from patx_core.data.labels import EXIT_HORIZON, EXIT_STOP, EXIT_TAKE_PROFIT, triple_barrier

CFG = LabelConfig(horizon=3, take_profit=2.0, stop_loss=1.0)


def _bars(rows: list[tuple[float, float, float, float]], atr: float = 1.0) -> dict[str, np.ndarray]:
    """(open, high, low, close) rows; a constant ATR so the barriers are easy to read."""
    o, h, l, c = (np.array(col, dtype=float) for col in zip(*rows))
    return {"open": o, "high": h, "low": l, "close": c, "atr": np.full(len(rows), atr)}


def _label(bars: dict[str, np.ndarray], config: LabelConfig = CFG):
    return triple_barrier(bars["open"], bars["high"], bars["low"], bars["close"], bars["atr"], config)


# Entry at row 0's close = 100, ATR 1: take-profit at 102, stop at 99, horizon 3.
QUIET = (100.0, 100.5, 99.5, 100.0)


def test_take_profit_first() -> None:
    r = _label(_bars([QUIET, QUIET, (100.0, 102.5, 99.5, 102.0), QUIET, QUIET]))
    assert r.label[0] == 1.0 and r.exit_reason[0] == EXIT_TAKE_PROFIT
    assert r.exit_index[0] == 2 and r.holding[0] == 2
    assert r.exit_price[0] == 102.0 and r.trade_return[0] == pytest.approx(0.02)


def test_stop_first() -> None:
    r = _label(_bars([QUIET, (100.0, 100.5, 98.5, 99.0), (100.0, 103.0, 99.5, 102.0), QUIET, QUIET]))
    assert r.label[0] == 0.0 and r.exit_reason[0] == EXIT_STOP
    assert r.exit_index[0] == 1 and r.exit_price[0] == 99.0


def test_candle_touching_both_barriers_is_a_stop() -> None:
    r = _label(_bars([QUIET, (100.0, 103.0, 98.0, 100.0), QUIET, QUIET, QUIET]))
    assert r.label[0] == 0.0 and r.exit_reason[0] == EXIT_STOP and r.exit_price[0] == 99.0


def test_gap_through_the_stop_fills_at_the_open() -> None:
    r = _label(_bars([QUIET, (97.0, 97.5, 96.0, 97.0), QUIET, QUIET, QUIET]))
    assert r.exit_reason[0] == EXIT_STOP and r.exit_price[0] == 97.0
    assert r.trade_return[0] == pytest.approx(-0.03)


def test_gap_through_the_take_profit_fills_at_the_open() -> None:
    r = _label(_bars([QUIET, (104.0, 105.0, 103.5, 104.5), QUIET, QUIET, QUIET]))
    assert r.label[0] == 1.0 and r.exit_price[0] == 104.0


def test_horizon_exit_at_the_close_of_t_plus_h() -> None:
    r = _label(_bars([QUIET, QUIET, QUIET, (100.0, 101.0, 99.8, 100.7), QUIET]))
    assert r.label[0] == 0.0 and r.exit_reason[0] == EXIT_HORIZON
    assert r.exit_index[0] == 3 and r.holding[0] == 3 and r.exit_price[0] == 100.7


def test_horizon_past_the_end_and_missing_atr_are_unlabelled() -> None:
    bars = _bars([QUIET] * 8)
    bars["atr"][1] = np.nan
    r = _label(bars)
    unlabelled = [1, 5, 6, 7]  # ATR unknown; the last `horizon` rows
    assert np.isnan(r.label[unlabelled]).all() and not np.isnan(np.delete(r.label, unlabelled)).any()
    assert (r.exit_index[unlabelled] == -1).all() and np.isnan(r.exit_price[unlabelled]).all()
    assert np.isnan(r.trade_return[unlabelled]).all() and (r.holding[unlabelled] == 0).all()
    assert r.labelled.tolist() == [True, False, True, True, True, False, False, False]


def test_flat_prices_are_never_positive() -> None:
    # ATR 0: both barriers sit at the entry close; the next flat candle touches the stop at no loss.
    r = _label(_bars([(100.0, 100.0, 100.0, 100.0)] * 10, atr=0.0))
    done = r.labelled
    assert done.sum() == 7 and (r.label[done] == 0).all()
    assert (r.trade_return[done] == 0).all() and (r.holding[done] == 1).all()


def test_shapes_must_agree() -> None:
    bars = _bars([QUIET] * 5)
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        triple_barrier(bars["open"], bars["high"], bars["low"], bars["close"][:4], bars["atr"], CFG)


def _reference(o, h, l, c, atr, cfg):  # noqa: ANN001, E741 - a row-by-row transcription of the rule
    n = len(c)
    out = []
    for t in range(n):
        if t + cfg.horizon >= n or np.isnan(atr[t]):
            out.append((np.nan, -1, np.nan))
            continue
        up, lo = c[t] + cfg.take_profit * atr[t], c[t] - cfg.stop_loss * atr[t]
        for k in range(t + 1, t + cfg.horizon + 1):
            if l[k] <= lo:
                out.append((0.0, k, min(lo, o[k])))
                break
            if h[k] >= up:
                out.append((1.0, k, max(up, o[k])))
                break
        else:
            out.append((0.0, t + cfg.horizon, c[t + cfg.horizon]))
    return [np.array(x) for x in zip(*out)]


@pytest.mark.parametrize("cfg", [LabelConfig(), LabelConfig(horizon=5, take_profit=1.0, stop_loss=1.5)])
def test_matches_a_row_by_row_reference(cfg: LabelConfig) -> None:
    rng = np.random.default_rng(3)
    n = 600
    c = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    o = np.concatenate([[100.0], c[:-1]]) * np.exp(0.004 * rng.standard_normal(n))  # gaps
    h = np.maximum(o, c) * (1 + np.abs(0.006 * rng.standard_normal(n)))
    l = np.minimum(o, c) * (1 - np.abs(0.006 * rng.standard_normal(n)))  # noqa: E741
    atr = np.abs(0.01 * c * (1 + 0.3 * rng.standard_normal(n)))
    atr[:14] = np.nan
    r = triple_barrier(o, h, l, c, atr, cfg)
    label, exit_index, exit_price = _reference(o, h, l, c, atr, cfg)
    np.testing.assert_array_equal(r.label, label)
    np.testing.assert_array_equal(r.exit_index, exit_index)
    np.testing.assert_array_equal(r.exit_price, exit_price)
    assert 0.1 < np.nanmean(r.label) < 0.9  # the data exercises both outcomes
