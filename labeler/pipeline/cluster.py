"""The pipeline's LocalCluster settings: workers forked from one preloaded server, one task per worker at a time.

:func:`local_cluster_settings` applies both while the cluster lives (``run.dask_client``).

**Forked workers** (:func:`forked_workers`).
A spawned worker process imports everything itself (distributed, pyarrow, PIL, torch and open3d for the
detectors: ~2.5 CPU s) and tears it all down again when the cluster closes (1-3 s, on the run's critical path);
a LocalCluster of N workers pays both N times, so the second worker costs more than it brings on a short night.
With the ``forkserver`` start method, one server process imports :data:`WORKER_MODULES` once and every worker is
a fork of it: it starts in milliseconds with those modules loaded (pages shared, copy-on-write) and exits at
once. The detector itself is still loaded once per worker (``steps.get_model``; the weights are small).

Only the worker processes of a LocalCluster are affected; workers of an external scheduler start as their own
``dask worker`` processes. Platforms without ``forkserver`` (Windows) keep ``spawn``.

**One task per worker thread** (:data:`WORKER_SATURATION`). Dask's default (1.1) sends a 1-thread worker
``ceil(1.1) = 2`` ready chunk tasks: one runs, one waits in that worker's own queue. When the other worker runs
out of work, a chunk waiting behind a long task (a log's refinement) is not its to take, and at the end of the
night one worker idles while the other still has two tasks to do (measured: 2.9 s idle of a 20 s run). At 1.0
the chunks wait at the scheduler and go to whichever worker is free next (one scheduler round trip per chunk,
milliseconds, against chunks of 0.3-2 s).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator

import dask

WORKER_MODULES = (
    "distributed",
    "labeler.pipeline.steps",
    "labeler.pipeline.logstep",
    "labeler.models.registry",   # imports open3d (the geometric detector)
    "labeler.render",
    "labeler.studio.tasks",
)
"""Modules the fork server imports before forking workers (a module that cannot be imported is skipped)."""

WORKER_SATURATION = 1.0
"""``distributed.scheduler.worker-saturation`` of the pipeline's LocalCluster (see the module docstring)."""

MODEL_MODULES: dict[str, tuple[str, ...]] = {
    "bev": ("labeler.models.bev",),   # torch: ~1.5 CPU s of a worker's start
}
"""Per detector name (``model.name``): the modules its workers import on top of :data:`WORKER_MODULES`."""


def worker_modules(model: str | None = None) -> tuple[str, ...]:
    """The modules to preload for workers that run detector ``model`` (a model spec such as ``bev`` or
    ``mmdet3d:<config>``; None: the common modules only)."""
    name = (model or "").partition(":")[0]
    return WORKER_MODULES + MODEL_MODULES.get(name, ())


@contextlib.contextmanager
def forked_workers(model: str | None = None) -> Iterator[str]:
    """While open, LocalCluster worker processes (started or restarted) are forked from a server that imported
    :func:`worker_modules` (``model``); yields the start method in use (``forkserver``, or ``spawn`` where there
    is none).

    The server is started by the first worker of the process's first cluster and reused by later clusters (its
    environment is the one Dask sets for workers: ``distributed.nanny.pre-spawn-environ``).
    """
    from distributed.utils import get_mp_context  # before dask.config.set: see local_cluster_settings

    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield "spawn"
        return
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context().set_forkserver_preload(list(worker_modules(model)))  # no effect once the server runs
        yield "forkserver"


@contextlib.contextmanager
def local_cluster_settings(model: str | None = None) -> Iterator[str]:
    """Dask settings for a LocalCluster created inside: :func:`forked_workers` (``model``) and
    :data:`WORKER_SATURATION`. Yields the worker start method."""
    # distributed's config defaults must be loaded before dask.config.set: leaving a set() that created the
    # "distributed" section deletes the whole section (every later Client would fail with KeyError)
    import distributed  # noqa: F401

    with dask.config.set({"distributed.scheduler.worker-saturation": WORKER_SATURATION}), \
            forked_workers(model) as method:
        yield method


def submission_order(chunks: list, workers: int, work: dict | None = None) -> list:
    """The chunks (``steps.Chunk``, grouped by log in log order) in the order to submit them: the logs by
    estimated ``work`` (log id -> e.g. ``steps.detector_frames``), largest first (ties and unknown logs keep
    their order), then in groups of ``workers`` logs (the first group takes the remainder), and within a group
    chunk 0 of every log, then chunk 1, and so on.

    A log's refinement needs all of its chunks. Submitted log by log, the workers share the last log's chunks
    and then one of them refines it alone while the others idle (measured under load: 1.6 s of a 21 s night on
    2 workers); submitted in groups, the last logs end at about the same time and their refinements can run
    side by side. How close depends on how much the logs differ: a log whose frames are mostly dropped before
    the detector (a parked car) costs a tenth of a busy one, and its refinement even less. Largest first (the
    LPT rule) leaves the cheapest logs, and the shortest refinements, for the end of the night.
    """
    by_log: dict[str, list] = {}
    for c in chunks:
        by_log.setdefault(c.log_id, []).append(c)
    w = work or {}
    logs = sorted(by_log.values(), key=lambda cs: -w.get(cs[0].log_id, 0))
    n = max(1, workers)
    first = len(logs) % n or n  # the short group (if any) first: the last group is a full one
    groups = [logs[:first]] + [logs[g:g + n] for g in range(first, len(logs), n)]
    out = []
    for group in groups:
        for k in range(max((len(cs) for cs in group), default=0)):
            out += [cs[k] for cs in group if k < len(cs)]
    return out
