"""Peak memory of the pipeline on N vs 10N frames (1 log vs 10 logs of the same length), side by side in one run.

    .venv/bin/python benchmarks/memory_scaling.py [--duration 5] [--logs 10] [--workers 2] [--chunk 50]

Scheduler: a Dask ``LocalCluster`` with processes (what ``labeler run`` starts without ``--scheduler``): the
driver (this process) runs ``run_pipeline(push=False)``, which starts ``--workers`` worker processes with one
thread each. A psutil thread samples every 50 ms the RSS of the driver and of every child process (the workers).
Reported per run: the driver's peak RSS and its growth over the RSS before the run, the heaviest worker's peak
RSS and the peak of all workers together (the resource tracker included, the worker fork server reported apart:
it is started by the first run and reused by the later ones; forked workers share its pages, which RSS counts
in each of them); then the 10N / N ratios (goal < 1.2x).

The driver keeps the per-frame rows (frames + frame_scores) of the whole night; the last block measures what
those rows cost as Python dicts (tracemalloc) and extrapolates to a large night.
Logs are simulated once into /tmp/labeler-bench (cached; delete the folder to regenerate).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
import tracemalloc

import psutil

from _logs import cached_logs, input_folder  # noqa: E402  (benchmarks/ is on sys.path)
MB = 1024 * 1024


class Sampler:
    def __init__(self, period_s: float = 0.05):
        self.period_s = period_s
        self.me = psutil.Process()
        self.driver_peak = 0
        self.worker_peak: dict[int, int] = {}
        self.workers_sum_peak = 0
        self.server_peak = 0                # the worker fork server (labeler/pipeline/cluster.py), not a worker
        self.kind: dict[int, str] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.driver_peak = max(self.driver_peak, self.me.memory_info().rss)
                total = 0
                for c in self.me.children(recursive=True):
                    try:
                        rss = c.memory_info().rss
                        if c.pid not in self.kind:  # a forked worker inherits the fork server's command line
                            direct = c.ppid() == self.me.pid
                            cmd = " ".join(c.cmdline())
                            self.kind[c.pid] = ("server" if direct and "forkserver" in cmd else
                                                "tracker" if direct and "resource_tracker" in cmd else "worker")
                    except psutil.Error:
                        continue
                    if self.kind[c.pid] == "server":
                        self.server_peak = max(self.server_peak, rss)
                        continue
                    total += rss
                    self.worker_peak[c.pid] = max(self.worker_peak.get(c.pid, 0), rss)
                self.workers_sum_peak = max(self.workers_sum_peak, total)
            except psutil.Error:
                pass
            self._stop.wait(self.period_s)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def run_once(logs_dir: str, workers: int, chunk: int, state: str):
    from labeler.pipeline.config import load_config
    from labeler.pipeline.run import run_pipeline

    cfg = load_config(None, {"night": "mem", "simulate.enabled": False, "input.logs": logs_dir, "input.format": "native",
                             "input.chunk_frames": chunk, "dask.n_workers": workers}).resolved(state)
    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    with Sampler() as s:
        summary = run_pipeline(cfg, progress=False, push=False)
    return summary, s, base, time.perf_counter() - t0, cfg.output_dir


def row_cost(run_dir: str) -> tuple[float, int]:
    """Bytes per frame of the driver-held rows (frames + frame_scores as Python dicts), and the frame count."""
    from labeler.io.tables import read_table

    frames = read_table(run_dir, "frames")
    scores = read_table(run_dir, "frame_scores")
    tracemalloc.start()
    a = frames.to_pylist()
    b = scores.to_pylist()
    cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del a, b
    return cur / max(1, frames.num_rows), frames.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per simulated log (10 Hz)")
    ap.add_argument("--logs", type=int, default=10, help="the 10N run uses this many logs, the N run one")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=25,
                    help="input.chunk_frames (default 25: the 1-log run has 2 chunks, so both workers work in both runs)")
    args = ap.parse_args()

    import dask.distributed  # noqa: F401  (imported before either run so neither pays for the imports)

    import labeler.pipeline.run  # noqa: F401

    paths = cached_logs(args.logs, args.duration)
    small, big = input_folder(paths[:1], "mem-1"), input_folder(paths, f"mem-{args.logs}")
    print(f"machine: {platform.node()} nproc={os.cpu_count()} loadavg={' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"scheduler: LocalCluster, {args.workers} worker processes x 1 thread; chunk_frames={args.chunk}; push=False")
    res = {}
    with tempfile.TemporaryDirectory(prefix="mem-scaling-") as tmp:
        for name, d in (("N", small), ("10N", big), ("N'", small)):  # N again: the first run pays one-off costs
            summary, s, base, wall, run_dir = run_once(d, args.workers, args.chunk, f"{tmp}/{name}")
            heaviest = max(s.worker_peak.values(), default=0)
            res[name] = (summary.frames_in, s.driver_peak, s.driver_peak - base, heaviest, s.workers_sum_peak)
            print(f"{name:>3}: {summary.logs:2d} logs {summary.frames_in:5d} frames {wall:6.1f} s | driver peak {s.driver_peak / MB:7.1f} MiB "
                  f"(+{(s.driver_peak - base) / MB:6.1f} over start) | heaviest worker {heaviest / MB:7.1f} MiB | "
                  f"all workers {s.workers_sum_peak / MB:7.1f} MiB ({len(s.worker_peak)} child processes) | "
                  f"fork server {s.server_peak / MB:6.1f} MiB")
            if name == "10N":
                per_frame, nrows = row_cost(run_dir)
    fb, db, gb, wb, sb = res["10N"]
    print(f"frames ratio 10N/N: {fb / res['N'][0]:.1f}x   (goal for every RSS ratio below: < 1.2x)")
    for n in ("N", "N'"):
        fn, dn, gn, wn, sn = res[n]
        print(f"peak RSS ratio 10N/{n}: heaviest worker {wb / wn:.2f}x | all workers {sb / sn:.2f}x | driver {db / dn:.2f}x "
              f"(driver growth {gb / MB:.1f} vs {gn / MB:.1f} MiB)")
    print(f"driver-held per-frame rows (frames + frame_scores as dicts): {per_frame / 1024:.2f} KiB/frame over {nrows} frames "
          f"-> {per_frame * 1e5 / MB:.0f} MiB per 100k frames, {per_frame * 1e6 / MB / 1024:.2f} GiB per 1M frames")


if __name__ == "__main__":
    main()
