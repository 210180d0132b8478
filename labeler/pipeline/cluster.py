"""Local Dask worker processes that start and stop fast: forked from one preloaded server, not spawned.

A spawned worker process imports everything itself (distributed, pyarrow, PIL, torch and open3d for the
detectors: ~2.5 CPU s) and tears it all down again when the cluster closes (1-3 s, on the run's critical path);
a LocalCluster of N workers pays both N times, so the second worker costs more than it brings on a short night.
With the ``forkserver`` start method, one server process imports :data:`WORKER_MODULES` once and every worker is
a fork of it: it starts in milliseconds with those modules loaded (pages shared, copy-on-write) and exits at
once. The detector itself is still loaded once per worker (``steps.get_model``; the weights are small).

Only the worker processes of a LocalCluster are affected; workers of an external scheduler start as their own
``dask worker`` processes. Platforms without ``forkserver`` (Windows) keep ``spawn``.
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
    "labeler.models.registry",   # torch + open3d: most of a worker's start-up
    "labeler.render",
    "labeler.studio.tasks",
)
"""Modules the fork server imports before forking workers (a module that cannot be imported is skipped)."""


@contextlib.contextmanager
def forked_workers(modules: tuple[str, ...] = WORKER_MODULES) -> Iterator[str]:
    """While open, LocalCluster worker processes (started or restarted) are forked from a server that imported
    ``modules``; yields the start method in use (``forkserver``, or ``spawn`` where there is none).

    The server is started by the first worker of the process's first cluster and reused by later clusters (its
    environment is the one Dask sets for workers: ``distributed.nanny.pre-spawn-environ``).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield "spawn"
        return
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        from distributed.utils import get_mp_context

        get_mp_context().set_forkserver_preload(list(modules))  # no effect once the server runs: same list
        yield "forkserver"
