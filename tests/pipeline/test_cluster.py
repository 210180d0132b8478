"""LocalCluster settings (forked workers, one task per worker) and the chunk submission order."""

import dask

from labeler.pipeline.cluster import WORKER_MODULES, local_cluster_settings, submission_order, worker_modules
from labeler.pipeline.steps import Chunk


def _chunks(sizes):
    return [Chunk("p", "native", f"L{i}", k, 0, 1) for i, n in enumerate(sizes) for k in range(n)]


def test_submission_order_finishes_logs_in_groups_of_workers():
    order = [(c.log_id, c.index) for c in submission_order(_chunks([3, 1, 3, 2, 2]), 2)]
    # 5 logs on 2 workers: L0 alone first, then (L1, L2) and (L3, L4) interleaved: the last two logs end together
    assert order == [("L0", 0), ("L0", 1), ("L0", 2), ("L1", 0), ("L2", 0), ("L2", 1), ("L2", 2),
                     ("L3", 0), ("L4", 0), ("L3", 1), ("L4", 1)]
    cs = _chunks([2, 2, 2])
    assert submission_order(cs, 1) == cs and submission_order([], 2) == []
    assert sorted(submission_order(cs, 4), key=lambda c: (c.log_id, c.index)) == cs  # a permutation


def test_local_cluster_settings():
    with local_cluster_settings("bev:models/x.pt") as method:
        assert method in ("forkserver", "spawn")
        assert dask.config.get("distributed.scheduler.worker-saturation") == 1.0
        if method == "forkserver":
            assert dask.config.get("distributed.worker.multiprocessing-method") == "forkserver"
    # distributed's own config section survives (a Client needs it)
    assert dask.config.get("distributed.client.direct-to-workers", default="missing") != "missing"
    assert worker_modules("bev") == WORKER_MODULES + ("labeler.models.bev",)
    assert worker_modules("geometric") == worker_modules(None) == WORKER_MODULES
