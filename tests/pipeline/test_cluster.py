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


def test_submission_order_puts_the_largest_logs_first():
    # L1 is the most work, L0 and L3 tie (their order is kept), L2 is unknown (0): the cheapest logs end the night
    order = [(c.log_id, c.index) for c in submission_order(_chunks([2, 2, 1, 2]), 2, {"L0": 40, "L1": 90, "L3": 40})]
    assert order == [("L1", 0), ("L0", 0), ("L1", 1), ("L0", 1), ("L3", 0), ("L2", 0), ("L3", 1)]


def test_detector_frames_counts_keyframes_and_context_from_the_poses():
    import numpy as np
    from types import SimpleNamespace

    from labeler.pipeline.config import FilterCfg
    from labeler.pipeline.steps import detector_frames

    # 10 s at 10 Hz: 5 s parked, then 5 s at 10 m/s along x
    ts = np.arange(100, dtype=np.int64) * 100_000_000
    x = np.where(np.arange(100) < 50, 0.0, (np.arange(100) - 50) * 1.0)
    poses = np.repeat(np.eye(4)[None], 100, axis=0)
    poses[:, 0, 3] = x
    idx = SimpleNamespace(timestamps_ns=ts, world_from_ego=poses, has_poses=True, sequential=True)
    cfg = FilterCfg(keyframe_hz=2.0, stationary_speed_mps=0.5, stationary_keep_every_s=5.0)
    # parked: one frame per 5 s (1); driving: 2 Hz over 5 s (10)
    assert detector_frames(idx, cfg) == 1 + 10
    # with 10 Hz context every driving frame goes to the detector, the parked ones still do not
    assert detector_frames(idx, cfg, context_hz=10.0) == 1 + 50
    assert detector_frames(SimpleNamespace(**{**vars(idx), "sequential": False}), cfg) == 100
