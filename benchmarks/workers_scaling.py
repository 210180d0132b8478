"""Speed-up of the pipeline on a LocalCluster with 1 vs 2 workers, same logs, side by side in one run.

    .venv/bin/python benchmarks/workers_scaling.py [--logs 10] [--duration 5] [--chunk 25] [--repeats 2]

Each run is a full ``run_pipeline(push=False)`` (cluster start, inspect, ingest/filter/pre-label/score, selection,
review-asset rendering, tables) on a fresh ``LocalCluster`` of N worker processes x 1 thread; runs alternate
1, 2, 1, 2 ... so a change in machine load hits both. A psutil thread samples every 50 ms the CPU time of this
process and of its child processes (the workers) and the machine-wide busy CPU time, so the report also says how
much CPU the pipeline got and how much other processes took while it ran:

* wall speed-up = median wall(1 worker) / median wall(2 workers)  (goal >= 1.7x on 2 free cores)
* parallelism = pipeline CPU seconds / wall seconds (what the cores actually gave us)
* CPU-time speed-up estimate = CPU(1) / (CPU(2) / 2): on an otherwise idle machine one worker needs about CPU(1)
  seconds and two perfectly balanced workers CPU(2) / 2 (CPU(2) > CPU(1): the second worker process starts, imports
  and loads the model too). Ignores I/O waits and the serial parts (cluster start, selection), so it is an upper
  bound of what 2 idle cores would give.
Logs are simulated once into /tmp/labeler-bench (cached).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time

import psutil

from _logs import cached_logs, input_folder  # noqa: E402  (benchmarks/ is on sys.path)


class CpuSampler:
    """CPU seconds of this process + its children (last value seen per pid) and of the whole machine."""

    def __init__(self, period_s: float = 0.05):
        self.me = psutil.Process()
        self.period_s = period_s
        self.child_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)

    def _run(self):
        while not self._stop.is_set():
            for c in self.me.children(recursive=True):
                try:
                    ct = c.cpu_times()
                    self.child_cpu[c.pid] = ct.user + ct.system
                except psutil.Error:
                    continue
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
        ct = self.me.cpu_times()
        self.driver_cpu = ct.user + ct.system - self.self0
        self.machine_busy = self._busy() - self.busy0
        self.workers_cpu = sum(self.child_cpu.values())


def run_once(logs_dir: str, workers: int, chunk: int, state: str):
    from labeler.pipeline.config import load_config
    from labeler.pipeline.run import run_pipeline

    cfg = load_config(None, {"night": "workers", "simulate.enabled": False, "input.logs": logs_dir,
                             "input.format": "native", "input.chunk_frames": chunk,
                             "dask.n_workers": workers}).resolved(state)
    t0 = time.perf_counter()
    with CpuSampler() as s:
        summary = run_pipeline(cfg, progress=False, push=False)
    return summary, time.perf_counter() - t0, s


def worker_fixed_cpu() -> tuple[float, float]:
    """(CPU s, wall s) of starting a 1-worker LocalCluster and loading the model on it, with no frames to process."""
    from dask.distributed import Client, LocalCluster

    from labeler.pipeline import steps
    from labeler.pipeline.config import ModelCfg

    t0 = time.perf_counter()
    with CpuSampler() as s:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                          host="127.0.0.1") as cluster, Client(cluster) as client:
            client.run(lambda: steps.get_model(ModelCfg()) and None)
    return s.workers_cpu, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=int, default=10)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import dask.distributed  # noqa: F401

    import labeler.pipeline.run  # noqa: F401

    logs_dir = input_folder(cached_logs(args.logs, args.duration), f"workers-{args.logs}")
    ncpu = os.cpu_count() or 1
    print(f"machine: {platform.node()} nproc={ncpu} loadavg={' '.join(f'{x:.2f}' for x in os.getloadavg())} (before)")
    print(f"scheduler: LocalCluster, 1 vs 2 worker processes x 1 thread; {args.logs} logs x {args.duration:g} s; "
          f"chunk_frames={args.chunk}; push=False; order 1,2 x {args.repeats}")
    walls: dict[int, list[float]] = {1: [], 2: []}
    cpus: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="workers-scaling-") as tmp:
        for r in range(args.repeats):
            for w in (1, 2):
                summary, wall, s = run_once(logs_dir, w, args.chunk, f"{tmp}/{r}-{w}")
                ours = s.workers_cpu + s.driver_cpu
                others = max(0.0, s.machine_busy - ours)
                walls[w].append(wall)
                cpus[w].append(ours)
                print(f"  {w} worker(s): {summary.frames_in} frames {wall:6.1f} s wall  {summary.frames_in / wall:5.2f} frames/s | "
                      f"CPU s: workers {s.workers_cpu:6.1f} driver {s.driver_cpu:5.1f} -> parallelism {ours / wall:.2f} | "
                      f"other processes {others:6.1f} CPU s ({others / wall:.2f} cores)  loadavg {os.getloadavg()[0]:.2f}")
        fixed_cpu, fixed_wall = worker_fixed_cpu()
    w1, w2 = statistics.median(walls[1]), statistics.median(walls[2])
    c1, c2 = statistics.median(cpus[1]), statistics.median(cpus[2])
    print(f"wall speed-up 2 vs 1 worker: {w1 / w2:.2f}x  (median wall {w1:.1f} s vs {w2:.1f} s; per pair "
          f"{', '.join(f'{a / b:.2f}' for a, b in zip(walls[1], walls[2]))})   goal >= 1.7x")
    print(f"pipeline CPU seconds: 1 worker {c1:.1f}, 2 workers {c2:.1f} (ratio {c2 / c1:.2f}: extra work of the 2nd process)")
    print(f"CPU-time speed-up estimate (2 idle cores): {c1 / (c2 / min(2, ncpu)):.2f}x = CPU(1) / (CPU(2) / 2)")
    work = max(0.0, c1 - fixed_cpu)
    print(f"fixed cost per worker (spawn + imports + model load, no frames): {fixed_cpu:.1f} CPU s ({fixed_wall:.1f} s wall); "
          f"frame work {work:.1f} CPU s = {1000 * work / max(1, summary.frames_in):.0f} ms/frame -> estimate at 10x the frames: "
          f"{(10 * work + fixed_cpu) / ((10 * work + 2 * fixed_cpu) / 2):.2f}x")


if __name__ == "__main__":
    main()
