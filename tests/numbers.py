"""Comparing computed numbers with a stated tolerance, so a test passes on any CPU.

Counts, bounds, flags and strings are exact everywhere; a float can move in its last bits when
another CPU (SIMD width), thread count or memory layout changes a reduction's order. Each caller
states how close "the same numbers" are for what it compares.
"""

from __future__ import annotations

import math
from typing import Any

#: float32 model outputs (probabilities, thresholds, metrics derived from them): float32 carries
#: ~7 significant digits, and a reordered reduction moves the last one or two.
FLOAT32_RTOL = 1e-6
#: float64 statistics over a few thousand rows: a reordered sum moves them by ~n * 1e-16.
FLOAT64_RTOL = 1e-12


def assert_same_numbers(actual: Any, expected: Any, *, rtol: float, atol: float = 0.0, where: str = "") -> None:
    """``actual`` and ``expected`` (nested dicts/lists/tuples of JSON-like values) are the same:
    same keys and lengths; ints, bools, strings and None equal; any pair involving a float
    within ``rtol``/``atol`` (NaN equals NaN)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), \
            f"{where or 'value'}: keys {sorted(actual) if isinstance(actual, dict) else actual!r} != {sorted(expected)}"
        for k in expected:
            assert_same_numbers(actual[k], expected[k], rtol=rtol, atol=atol, where=f"{where}.{k}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_numbers(a, e, rtol=rtol, atol=atol, where=f"{where}[{i}]")
    elif isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, (int, float)) and isinstance(expected, (int, float)) \
            and not isinstance(actual, bool) and not isinstance(expected, bool), f"{where}: {actual!r} != {expected!r}"
        same = (math.isnan(actual) and math.isnan(expected)) or math.isclose(actual, expected, rel_tol=rtol,
                                                                              abs_tol=atol)
        assert same, f"{where}: {actual!r} != {expected!r} (rtol={rtol:g}, atol={atol:g})"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
