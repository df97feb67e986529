"""Print a variant's verdict from its ``evaluation.json`` after a run (used by ``make baseline``).

A run whose only failure is the blocking precision gate is a *successful* evaluation that
refused promotion: say so and exit 0. Any other failed run (bad input, crash) exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from patx_core.artifacts import read_json
from patx_core.paths import VariantPaths


def verdict_lines(evaluation: dict) -> list[str]:
    gate = evaluation["checks"]["precision_gate"]
    lines = [f"variant {evaluation['variant']}: precision gate {'PASSED' if gate['passed'] else 'FAILED'} "
             f"on {gate['split']} — {gate['reason']}"]
    bt = evaluation.get("backtest") or {}
    if bt:
        pct = bt.get("strategy_percentile")
        lines.append(f"backtest: {bt.get('trades')} trades, strategy {bt.get('total_return', 0):+.2%} vs "
                     f"buy-and-hold {bt.get('buy_and_hold_return', 0):+.2%}"
                     + (f", random-entry percentile {pct:.0f}" if pct is not None else ""))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patx_core.summary")
    parser.add_argument("variant")
    parser.add_argument("--run-exit-code", type=int, default=0, help="exit code of the materialize run")
    parser.add_argument("--since", type=float, default=0.0,
                        help="unix time the run started: older reports do not count")
    args = parser.parse_args(argv)
    paths = VariantPaths.for_variant(args.variant)
    report = paths.evaluation_json
    fresh = report.exists() and report.stat().st_mtime >= args.since
    if not fresh:
        print(f"the run for {args.variant!r} failed before writing {report}; see the error above "
              "(README: 'When a run fails')", file=sys.stderr)
        return args.run_exit_code or 1
    evaluation = read_json(report)
    for line in verdict_lines(evaluation):
        print(line)
    print(f"report: {paths.report_md}")
    if args.run_exit_code and evaluation["checks"]["precision_gate"]["passed"]:
        print("the gate passed but the run failed afterwards (promotion or signal); see the error above",
              file=sys.stderr)
        return args.run_exit_code
    if args.run_exit_code:
        print("the run stopped at the blocking precision gate, as designed: no champion was promoted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
