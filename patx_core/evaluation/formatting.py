"""How a figure is written in the words a trader reads (gate reasons, report.md, walk_forward.md):
undefined is "n/a", never "None" or "nan"."""

from __future__ import annotations


def num(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, or "n/a"."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def pct(x: float | None, digits: int = 1, *, signed: bool = False) -> str:
    """A fraction as a percentage (0.123 → "12.3 %", signed "+12.3 %"), or "n/a"."""
    if x is None:
        return "n/a"
    return f"{100 * x:+.{digits}f} %" if signed else f"{100 * x:.{digits}f} %"


def ordinal(x: float) -> str:
    """1 → "1st", 22 → "22nd", 13 → "13th" (``x`` rounded to an integer)."""
    n = int(round(x))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def interval(lo: float, hi: float, digits: int = 3) -> str:
    """A confidence interval as the reports write it: ``[0.612, 0.803]``."""
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def estimate(x: float | None, ci: tuple[float, float] | list[float], digits: int = 3, *,
             ci_digits: int | None = None) -> str:
    """A figure with its interval: ``0.712 [0.612, 0.803]`` ("n/a [0.000, 1.000]" without signals)."""
    return f"{num(x, digits)} {interval(ci[0], ci[1], digits if ci_digits is None else ci_digits)}"
