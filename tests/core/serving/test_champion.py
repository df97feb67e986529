"""The suspension rule: a suspended champion holds from the candle that decided the alarm on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from patx_core.serving.champion import apply_suspension

ALARM = datetime(2026, 3, 2, tzinfo=timezone.utc)
SUSPENSION = {"reason": "10 of the last 11 bets lost", "from": ALARM.isoformat()}


def test_a_suspended_champion_holds_from_the_alarms_candle_on_and_not_before() -> None:
    held = ("hold", "champion suspended: 10 of the last 11 bets lost")
    assert apply_suspension("buy", None, ALARM - timedelta(hours=1), SUSPENSION) == ("buy", None)
    assert apply_suspension("buy", None, ALARM, SUSPENSION) == held
    assert apply_suspension("hold", "below threshold", ALARM + timedelta(days=3), SUSPENSION) == held
    # "from" as a datetime, as the ledger's scorer carries it, is the same rule
    assert apply_suspension("buy", None, ALARM - timedelta(hours=1), {**SUSPENSION, "from": ALARM}) == ("buy", None)
    # no "from": every candle holds; no suspension: nothing changes
    assert apply_suspension("buy", None, ALARM - timedelta(days=99), {**SUSPENSION, "from": None}) == held
    assert apply_suspension("buy", None, ALARM, None) == ("buy", None)
