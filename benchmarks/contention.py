"""``python -m benchmarks contention``: the baseline training step beside another job.

One worker process per configuration, each training one epoch of ``--steps`` batches of 32 of
the baseline-shaped model (``ModelConfig()``, the project's ``Trainer``) whenever the parent asks:

- ``today``: every allowed core, OpenMP's default wait policy (waiting threads spin for a while)
  — the loop as it ran before the thread choice existed;
- ``default``: :func:`patx_core.model.threads.use_threads` before each epoch (as a training step
  calls it) with the passive wait policy ``import patx_core`` sets;
- ``1``, ``2``…: that many threads, fixed, passive wait policy.

The parent runs every configuration in turn, once with the machine as it is (``idle``) and once
beside a competitor (a pure-Python busy loop pinned to one allowed core), ``--repeats`` rounds,
interleaved so that a change of background load hits every configuration alike; each round
rotates the order. Reported per condition and configuration: the epochs' seconds (median and
best), the threads used, and CPU seconds per wall second (a spinning waiter burns CPU while
waiting: the check that the wait policy took effect) and ``OMP_WAIT_POLICY`` as OpenMP read it.
The ratios the targets read:
``default / best fixed`` beside the competitor and ``default / today`` idle, on medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

log = logging.getLogger("benchmarks.contention")

#: A CPU-bound competitor: one core's worth of pure Python, no threads, no I/O.
COMPETITOR = "while True:\n    pass"
#: Seconds the competitor runs before a measurement, so the scheduler has placed it.
SETTLE_S = 1.0


def _worker(config: str, steps: int) -> int:
    """Child: build the data once, then train one epoch per ``run`` line on stdin, reply one JSON line."""
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "unset")  # what OpenMP reads when torch loads below
    if config == "today":
        import torch  # noqa: F401  (before patx_core: OpenMP loads with its default, spinning wait policy)
    import patx_core  # noqa: F401  (before torch: sets the passive wait policy unless the parent removed it)
    from patx_core.model.threads import use_threads

    import torch

    from benchmarks.bench import GUIDE_BATCH, make_windows
    from patx_core.model.trainer import Trainer
    from patx_core.settings.config import ModelConfig, TrainConfig

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    model = ModelConfig()
    data = make_windows(int(steps * GUIDE_BATCH / 0.8) + model.window_size, window=model.window_size)
    train = TrainConfig(device="cpu", max_epochs=1, batch_size=GUIDE_BATCH)
    if config == "today":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    elif config != "default":
        torch.set_num_threads(int(config))
    Trainer(model, train, data).train()  # untimed: first-call allocations
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        if config == "default":
            use_threads()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        seconds = Trainer(model, train, data).train()["epoch_seconds"][0]
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(), "cpu_per_wall": cpu / wall,
                          "wait_policy": wait_policy}), flush=True)
    return 0


class _Worker:
    """A worker process and its line protocol."""

    def __init__(self, config: str, steps: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PATX_THREADS", "OMP_WAIT_POLICY")}
        if config != "today":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        self.config = config
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.contention", "--worker", config,
                                      "--steps", str(steps)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"contention worker {self.config!r} exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self) -> dict[str, Any]:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _competitor() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    os.sched_setaffinity(proc.pid, {min(os.sched_getaffinity(0))})
    time.sleep(SETTLE_S)
    return proc


def bench_contention(*, fixed: Sequence[int], steps: int, repeats: int) -> dict[str, Any]:
    """Every configuration idle and beside the competitor, ``repeats`` interleaved rounds (see the module docstring)."""
    configs = ["today", "default", *[str(n) for n in fixed]]
    load_before = list(os.getloadavg())
    workers = [_Worker(c, steps) for c in configs]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {cond: {c: [] for c in configs}
                                                        for cond in ("idle", "competitor")}
    try:
        for r in range(repeats):
            order = workers[r % len(workers):] + workers[:r % len(workers)]
            for cond in ("idle", "competitor"):
                competitor = _competitor() if cond == "competitor" else None
                try:
                    for w in order:
                        runs[cond][w.config].append(w.run())
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
                log.info("round %d/%d done, load average %s", r + 1, repeats, os.getloadavg())
    finally:
        for w in workers:
            w.close()
    summary: dict[str, Any] = {}
    for cond, by_config in runs.items():
        rows = {}
        for config, rs in by_config.items():
            secs = [x["seconds"] for x in rs]
            rows[config] = {"median_s": statistics.median(secs), "best_s": min(secs), "runs_s": secs,
                            "threads": [x["threads"] for x in rs],
                            "cpu_per_wall": statistics.median(x["cpu_per_wall"] for x in rs),
                            "wait_policy": rs[0]["wait_policy"]}
        best_fixed = min(rows[str(n)]["median_s"] for n in fixed)
        rows["default_vs_best_fixed"] = rows["default"]["median_s"] / best_fixed
        rows["default_vs_today"] = rows["default"]["median_s"] / rows["today"]["median_s"]
        summary[cond] = rows
    return {"command": "contention", "cores": len(os.sched_getaffinity(0)), "steps_per_epoch": steps,
            "repeats": repeats, "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
            **summary}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``contention`` subcommand of ``python -m benchmarks``."""
    p = sub.add_parser("contention", help="the training step idle and beside a CPU-bound competitor, "
                                          "default thread choice vs fixed counts")
    p.add_argument("--fixed", default="1,2", help="comma-separated fixed thread counts to compare")
    p.add_argument("--steps", type=int, default=20, help="train batches of 32 per timed epoch")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return bench_contention(fixed=[int(n) for n in args.fixed.split(",")], steps=args.steps, repeats=args.repeats)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a contention benchmark worker (started by the benchmark)")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()
    raise SystemExit(_worker(args.worker, args.steps))
