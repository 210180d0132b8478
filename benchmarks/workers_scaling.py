"""Speed-up of the pipeline on a LocalCluster with 1 vs 2 workers, same logs, side by side in one run.

    .venv/bin/python benchmarks/workers_scaling.py [--logs 10] [--duration 5] [--chunk 25] [--repeats 2]
                                                   [--start-method forkserver|spawn|both] [--config pipelines/nightly.yaml|defaults]

``--config``: the pipeline settings to run: a pipeline YAML, by default the nightly job's (``pipelines/nightly.yaml``:
TTA, 10 Hz tracking context, 50-frame chunks); its input, simulation, scheduler and worker count are replaced by the
benchmark's. ``defaults``: the built-in defaults of labeler/pipeline/config.py (no TTA, no tracking context, 25-frame
chunks), a lighter pipeline per frame, where the fixed ~3 s of worker start-up weighs more.

Each run is a full ``run_pipeline(push=False)`` (cluster start, inspect, ingest/filter/pre-label/score, selection,
review-asset rendering, tables, cluster close) in a **fresh driver process** (as ``labeler run`` is: nothing is
warm from an earlier run, e.g. the worker fork server), on a fresh ``LocalCluster`` of N worker processes x 1
thread; runs alternate 1, 2, 1, 2 ... so a change in machine load hits both. In that process a psutil thread
samples every 50 ms the CPU time of the driver and of its child processes (workers, fork server) and the
machine-wide busy CPU time, so the report also says how much CPU the pipeline got and how much other processes
took while it ran:

* wall speed-up = median wall(1 worker) / median wall(2 workers)  (goal >= 1.7x on 2 free cores). "run" is the
  wall time of ``run_pipeline``; "process" adds the driver's Python start and imports (what a user waits for).
* parallelism = pipeline CPU seconds / run wall seconds (what the cores actually gave us)
* CPU-time speed-up estimate = CPU(1) / (CPU(2) / 2): on an otherwise idle machine one worker needs about CPU(1)
  seconds and two perfectly balanced workers CPU(2) / 2. Ignores I/O waits and the serial parts (cluster start,
  selection), so it is an upper bound of what 2 idle cores would give.
* phases of each run from the Dask task stream: cluster start, the span from the first task's start to the last
  task's end, each worker's busy and idle time in that span (imbalance and the waits at the selection barrier),
  the ingest tail (last chunk end minus the first worker to run out of chunks), cluster close.

``--start-method``: how LocalCluster worker processes start: ``forkserver`` (what the pipeline does, see
``labeler/pipeline/cluster.py``), ``spawn`` (Dask's default, what it did before 2026-11-29) or ``both`` side by
side. Logs are simulated once into /tmp/labeler-bench (cached).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from _logs import cached_logs, input_folder  # noqa: E402  (benchmarks/ is on sys.path)


class CpuSampler:
    """CPU seconds of this process + its children (last value seen per pid) and of the whole machine."""

    def __init__(self, period_s: float = 0.05):
        self.me = psutil.Process()
        self.period_s = period_s
        self.child_cpu: dict[int, float] = {}
        self.child_kind: dict[int, str] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)

    def _sample(self):
        for c in self.me.children(recursive=True):
            try:
                ct = c.cpu_times()
                self.child_cpu[c.pid] = ct.user + ct.system
                if c.pid not in self.child_kind:
                    cmd = " ".join(c.cmdline())  # a forked worker inherits the fork server's command line
                    direct = c.ppid() == self.me.pid
                    self.child_kind[c.pid] = ("fork server" if direct and "forkserver" in cmd else
                                              "resource tracker" if direct and "resource_tracker" in cmd else "worker")
            except psutil.Error:
                continue

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def __enter__(self):
        ct = self.me.cpu_times()
        self.self0 = ct.user + ct.system
        self.busy0 = self._busy()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self._sample()
        ct = self.me.cpu_times()
        self.driver_cpu = ct.user + ct.system - self.self0
        self.machine_busy = self._busy() - self.busy0
        self.workers_cpu = sum(self.child_cpu.values())
        self.server_cpu = sum(v for p, v in self.child_cpu.items() if self.child_kind.get(p) == "fork server")


def _use_start_method(method: str, saturation: float | None) -> None:
    """``spawn``: run the pipeline with Dask's default worker start (the fork server switched off);
    ``saturation``: another ``worker-saturation`` than the pipeline's."""
    from labeler.pipeline import cluster

    if saturation is not None:
        cluster.WORKER_SATURATION = saturation
    if method == "spawn":

        @contextlib.contextmanager
        def spawned(*_a, **_k):
            yield "spawn"

        cluster.forked_workers = spawned


def one_run(logs_dir: str, workers: int, chunk: int | None, state: str, method: str, saturation: float | None = None,
            config: str | None = None) -> dict:
    """One pipeline run in this (fresh) process; returns its measurements."""
    from distributed import get_task_stream

    from labeler.pipeline import run as prun
    from labeler.pipeline.config import load_config

    _use_start_method(method, saturation)
    marks: dict[str, float] = {}
    stream: list = []
    inner = prun.dask_client

    @contextlib.contextmanager
    def observed(cfg):
        marks["cluster_start"] = time.time()
        with inner(cfg) as client:
            marks["cluster_up"] = time.time()
            with get_task_stream(client) as ts:
                yield client
            stream.extend(ts.data)
            marks["tasks_done"] = time.time()
        marks["cluster_down"] = time.time()

    prun.dask_client = observed
    cfg = load_config(config, {"night": "workers", "simulate.enabled": False, "input.logs": logs_dir,
                               "input.format": "native", "dask.scheduler": None, "dask.n_workers": workers,
                               **({"input.chunk_frames": chunk} if chunk else {})}).resolved(state)
    t0 = time.time()
    with CpuSampler() as s:
        summary = prun.run_pipeline(cfg, progress=False, push=False)
    t1 = time.time()
    busy: dict[str, float] = {}
    by_kind: dict[str, float] = {}
    chunk_end: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    for t in stream:
        for ss in t["startstops"]:
            if ss["action"] != "compute":
                continue
            w = t["worker"]
            busy[w] = busy.get(w, 0.0) + ss["stop"] - ss["start"]
            kind = str(t["key"]).strip("('\"").split("-")[0]
            by_kind[kind] = by_kind.get(kind, 0.0) + ss["stop"] - ss["start"]
            spans.append((ss["start"], ss["stop"]))
            if "process_chunk" in str(t["key"]):
                chunk_end[w] = max(chunk_end.get(w, 0.0), ss["stop"])
    ends = sorted(chunk_end.values())
    t_first = min(a for a, _ in spans) if spans else t0
    t_last = max(b for _, b in spans) if spans else t0
    for w in range(workers - len(busy)):  # a worker that never got a task
        busy[f"idle-{w}"] = 0.0
    return {"workers": workers, "method": method, "frames": summary.frames_in, "chunk": cfg.input.chunk_frames, "wall": t1 - t0,
            "process_wall": t1 - psutil.Process().create_time(),
            "workers_cpu": s.workers_cpu, "server_cpu": s.server_cpu, "driver_cpu": s.driver_cpu,
            "machine_busy": s.machine_busy, "loadavg": os.getloadavg()[0],
            "cluster_start": marks["cluster_up"] - marks["cluster_start"],
            "first_task": t_first - t0, "tasks_span": t_last - t_first,
            "idle": sorted(t_last - t_first - b for b in busy.values()),
            "by_kind": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "cluster_close": marks["cluster_down"] - marks["tasks_done"],
            "busy": sorted(busy.values()), "ingest_tail": ends[-1] - ends[0] if len(ends) > 1 else 0.0}


def run_fresh(args, logs_dir: str, workers: int, state: str, method: str) -> dict:
    """:func:`one_run` in a new Python process (the wall time includes its start and imports)."""
    t0 = time.time()
    out = subprocess.run([sys.executable, __file__, "--one", str(workers), "--logs-dir", logs_dir, "--state", state,
                          "--start-method", method] + (["--chunk", str(args.chunk)] if args.chunk else [])
                         + (["--config", args.config] if args.config else [])
                         + (["--worker-saturation", str(args.worker_saturation)] if args.worker_saturation else []),
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"run failed ({workers} workers, {method}):\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["outer_wall"] = time.time() - t0
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=int, default=10, help="simulated logs in the night (default 10: 500 frames at 5 s)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per simulated log, 10 Hz (default 5)")
    ap.add_argument("--chunk", type=int, help="frames per chunk (default: the config's input.chunk_frames; 25 with "
                    "--config defaults)")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "pipelines" / "nightly.yaml"),
                    help="pipeline YAML whose settings to run (default: the nightly job's, pipelines/nightly.yaml), or "
                    "'defaults' for the built-in defaults")
    ap.add_argument("--repeats", type=int, default=2, help="pairs of runs (1 worker, then 2), medians reported (default 2)")
    ap.add_argument("--start-method", choices=("forkserver", "spawn", "both"), default="forkserver",
                    help="how LocalCluster workers start: forkserver (the pipeline's), spawn (Dask's default) or both")
    ap.add_argument("--worker-saturation", type=float, help="Dask worker-saturation instead of the pipeline's (1.0); "
                    "Dask's default is 1.1")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)   # child mode: one run, JSON on stdout
    ap.add_argument("--logs-dir", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.logs_dir, args.one, args.chunk, args.state, args.start_method, args.worker_saturation,
                                 args.config)))
        return
    if args.config == "defaults":
        args.config = None
        args.chunk = args.chunk or 25

    logs_dir = input_folder(cached_logs(args.logs, args.duration), f"workers-{args.logs}")
    ncpu = os.cpu_count() or 1
    methods = ("forkserver", "spawn") if args.start_method == "both" else (args.start_method,)
    print(f"machine: {platform.node()} nproc={ncpu} loadavg={' '.join(f'{x:.2f}' for x in os.getloadavg())} (before)")
    print(f"scheduler: LocalCluster, 1 vs 2 worker processes x 1 thread, worker start {' vs '.join(methods)}; "
          f"{args.logs} logs x {args.duration:g} s; config {os.path.relpath(args.config) if args.config else 'built-in defaults'}; "
          f"chunk_frames={args.chunk or 'from the config'}; push=False; order 1,2 x {args.repeats}; "
          f"every run in a fresh driver process")
    res: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="workers-scaling-") as tmp:
        for r in range(args.repeats):
            for m in methods:
                for w in (1, 2):
                    x = run_fresh(args, logs_dir, w, f"{tmp}/{r}-{m}-{w}", m)
                    res.setdefault((m, w), []).append(x)
                    ours = x["workers_cpu"] + x["driver_cpu"]
                    others = max(0.0, x["machine_busy"] - ours)
                    print(f"  {m:10s} {w} worker(s): {x['frames']} frames {x['wall']:6.1f} s run wall ({x['process_wall']:5.1f} s process) "
                          f"{x['frames'] / x['wall']:5.2f} frames/s | CPU s: workers {x['workers_cpu']:5.1f} (fork server {x['server_cpu']:.1f}) "
                          f"driver {x['driver_cpu']:4.1f} -> parallelism {ours / x['wall']:.2f} | other processes {others:5.1f} CPU s "
                          f"({others / x['wall']:.2f} cores) loadavg {x['loadavg']:.2f}")
                    print(f"      phases: cluster start {x['cluster_start']:.2f} s, first task at {x['first_task']:.2f} s, tasks for "
                          f"{x['tasks_span']:.1f} s: worker busy {' + '.join(f'{b:.1f}' for b in x['busy'])} s, idle "
                          f"{' + '.join(f'{b:.1f}' for b in x['idle'])} s (ingest tail {x['ingest_tail']:.2f} s), "
                          f"cluster close {x['cluster_close']:.2f} s")
                    print(f"      task seconds by kind: {', '.join(f'{k} {v:.1f}' for k, v in x['by_kind'].items())}")
    for m in methods:
        w1 = statistics.median(x["wall"] for x in res[(m, 1)])
        w2 = statistics.median(x["wall"] for x in res[(m, 2)])
        p1 = statistics.median(x["process_wall"] for x in res[(m, 1)])
        p2 = statistics.median(x["process_wall"] for x in res[(m, 2)])
        c1 = statistics.median(x["workers_cpu"] + x["driver_cpu"] for x in res[(m, 1)])
        c2 = statistics.median(x["workers_cpu"] + x["driver_cpu"] for x in res[(m, 2)])
        pairs = ", ".join(f"{a['wall'] / b['wall']:.2f}" for a, b in zip(res[(m, 1)], res[(m, 2)]))
        print(f"[{m}] wall speed-up 2 vs 1 worker: {w1 / w2:.2f}x  (median run wall {w1:.1f} s vs {w2:.1f} s; per pair {pairs}; "
              f"process wall {p1:.1f} s vs {p2:.1f} s = {p1 / p2:.2f}x)   goal >= 1.7x")
        print(f"[{m}] pipeline CPU seconds: 1 worker {c1:.1f}, 2 workers {c2:.1f} (ratio {c2 / c1:.2f}: extra work of the 2nd process); "
              f"CPU-time speed-up estimate (2 idle cores): {c1 / (c2 / min(2, ncpu)):.2f}x = CPU(1) / (CPU(2) / 2)")


if __name__ == "__main__":
    main()
