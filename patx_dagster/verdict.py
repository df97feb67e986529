"""``patx verdict``: what ``make materialize`` prints last, the cell's verdict or the failing step's error.

    patx verdict nasdaq baseline --run-exit-code $? --since <unix time>

A subcommand of ``patx`` (:mod:`patx_core.cli`) that lives here because it reads the Dagster
instance, and ``patx_core`` never imports Dagster: pyproject.toml registers :func:`add_parser`
in the ``patx.commands`` entry-point group.

A refused model is an ordinary outcome: the run succeeded, so this prints the gate's verdict and
the diagnosis and exits 0. A run that broke (bad input, crash, NaN loss) exits non-zero and ends
with the failing step's error message, read from the run's event log in the Dagster instance
(``$DAGSTER_HOME``), so the rule, column and rows are the last lines on the screen rather than
somewhere above 100 lines of traceback. Every WARN check that failed in the run (a stale input, a
skewed label rate, a low F1) comes first, one line each: the run log scrolls them away otherwise.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from patx_core.evaluation.formatting import num
from patx_core.evaluation.selection import selection_summary
from patx_core.storage.artifacts import read_json
from patx_core.settings.grid import cell_key
from patx_dagster.resources import GridResource


def verdict_lines(evaluation: dict[str, Any]) -> list[str]:
    """The gate's verdict (with the selection gate: looks and confidence), the diagnosis and the
    backtest in three lines; a seed study (or seed ensemble) adds a line after the verdict: how many
    seeds pass and what the candidate is."""
    gate = evaluation["checks"]["precision_gate"]
    name = f"{evaluation['dataset'].get('name')}|{evaluation['variant']}"
    per = evaluation.get("per_symbol") or {}
    tested, untested = len(per.get("symbols") or {}), len(per.get("untested") or {})
    coverage = f" (tested on {tested} of {tested + untested} symbols)" if untested else ""
    selection = evaluation["checks"].get("precision_gate_selection")  # absent from older evaluation.json
    priced = f"; {selection_summary(selection)}" if selection is not None else ""
    lines = [f"{name}: precision gate {'PASSED' if gate['passed'] else 'FAILED'} on {gate['split']}{coverage} — "
             f"{gate['reason']}{priced}"]
    seeds = evaluation.get("seeds") or {}
    if seeds.get("n_seeds", 1) > 1:  # a seed study: whether the verdict is one initialization's luck
        candidate = (f"the {seeds['n_seeds']}-seed ensemble" if seeds.get("ensemble")
                     else f"seed {seeds['champion_seed']}'s model")
        lines.append(f"seeds: {seeds['passed']} of {seeds['n_seeds']} pass; the candidate is {candidate}")
    codes = [d["code"] for d in evaluation.get("diagnosis", [])]
    lines.append(f"diagnosis: {', '.join(codes) if codes else 'none'}")
    bt = evaluation.get("backtest") or {}
    if bt.get("no_trades_reason"):
        lines.append(f"backtest: {bt['no_trades_reason']}")
    elif bt:
        pct = bt.get("strategy_percentile")
        lines.append(f"backtest: {bt.get('trades')} trades, strategy {bt.get('total_return', 0):+.2%} vs "
                     f"buy-and-hold {bt.get('buy_and_hold_return', 0):+.2%}"
                     + (f", random-entry percentile {pct:.0f}" if pct is not None else ""))
    return lines


def track_record_line(record: dict[str, Any]) -> str:
    """``make score``'s verdict: the monitor's decision and each role's live figures, in one line.

    Per role: how many candles were scored in all and how many of them count (the out-of-sample
    ones; the rest fall in the model's own training data), then the counted buys, the bets they
    make and the precision over resolved bets, the figure the monitor reads."""
    parts = []
    for role, f in record["roles"].items():
        precision = num(f["precision"])
        # a record written before n_in_sample / n_bets existed has no such keys: nothing to say about them
        in_sample = f.get("n_in_sample") or 0
        bets = f" in {f['n_bets']} bets" if "n_bets" in f else ""
        resolved = f.get("n_bets_resolved", f["n_resolved"])
        parts.append(f"{role} {f['n_scored'] + in_sample} scored, {f['n_scored']} counted"
                     + (f" ({in_sample} in sample)" if in_sample else "")
                     + f", {f['n_signals']} signals{bets}, {resolved} resolved, precision {precision}")
    mon = record.get("monitor")
    state = ("no champion" if not record["champion_present"] else
             f"monitor {mon['decision']} ({mon['statistic']:.1f}/{mon['threshold']:.1f})")
    return f"{record['cell']}: {state}; " + "; ".join(parts)


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step, message) of every failed step of a run; the message is the user code's own error
    (the innermost cause), without Dagster's wrapper and traceback."""
    out = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        while error is not None and error.cause is not None:
            error = error.cause
        message = error.message.strip() if error is not None else "failed (no error recorded)"
        out.append((event.step_key if event else "?", message))
    return out


def failed_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """One line per WARN-severity asset check that failed in the run, in the order they ran."""
    out = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        event = record.dagster_event
        evaluation = event.event_specific_data if event else None
        if evaluation is None or evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.WARN:
            continue
        what = " ".join((evaluation.description or "no description recorded").split())
        out.append(f"warning: check {evaluation.check_name} failed: {what}")
    return out


def latest_run(instance: dg.DagsterInstance, key: str, since: float) -> dg.DagsterRun | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": key},
                                                   created_after=datetime.fromtimestamp(since, timezone.utc)),
                             limit=1)
    return runs[0] if runs else None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("verdict", help="the verdict of a cell's latest run, or its failing step's error",
                                   description="The verdict of a (dataset, variant)'s latest run: the precision gate, "
                                               "the diagnosis and the backtest, or the failing step's own error.")
    parser.add_argument("dataset")
    parser.add_argument("variant")
    parser.add_argument("--run-exit-code", type=int, default=0, help="exit code of `dagster asset materialize`")
    parser.add_argument("--since", type=float, default=0.0, help="unix time the run started")
    parser.add_argument("--score", action="store_true", help="a `make score` run: print the track record's line")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    key = cell_key(args.dataset, args.variant)
    instance = dg.DagsterInstance.get()
    latest = latest_run(instance, key, args.since)
    broken = bool(args.run_exit_code) or latest is None or latest.status != dg.DagsterRunStatus.SUCCESS
    # On the stream of what follows, so a terminal shows them in order above it.
    for line in failed_warnings(instance, latest.run_id) if latest is not None else []:
        print(line, file=sys.stderr if broken else sys.stdout)
    if broken:
        failures = step_failures(instance, latest.run_id) if latest is not None else []
        print(f"{key}: the run failed" + (f" (run {latest.run_id})" if latest else "") + "; README: 'When a run fails'",
              file=sys.stderr)
        for step, message in failures:
            print(f"error in step {step}: {message}", file=sys.stderr)
        if not failures:
            print("no step failure was recorded: the error is the last message above", file=sys.stderr)
        return args.run_exit_code or 1
    paths = GridResource().cell(key).paths
    if args.score:
        print(track_record_line(read_json(paths.track_record_json)))
        print(f"track record: {paths.track_record_md}")
        return 0
    for line in verdict_lines(read_json(paths.evaluation_json)):
        print(line)
    print(f"report: {paths.report_md}")
    return 0
