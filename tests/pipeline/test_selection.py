import numpy as np

from labeler.pipeline.config import SelectionCfg
from labeler.pipeline.selection import select_for_review


def test_budget_priority_and_temporal_diversity():
    # one log, 20 frames 0.5 s apart; a burst of high priority at frames 4-7
    ts = np.arange(20) * 500_000_000
    pr = np.full(20, 0.1)
    pr[4:8] = [0.9, 1.0, 0.95, 0.8]
    pr[15] = 0.7
    sel = select_for_review(["a"] * 20, ts, pr, SelectionCfg(budget_fraction=0.2, min_gap_s=1.0, min_priority=0.05))
    assert sel.sum() == 4
    chosen = list(np.nonzero(sel)[0])
    assert 5 in chosen and 15 in chosen
    # no two selected frames within 1 s of each other
    t = ts[sel]
    assert np.all(np.diff(np.sort(t)) >= 1_000_000_000)


def test_zero_budget_and_min_priority():
    ts = np.arange(10) * 10**9
    assert select_for_review(["a"] * 10, ts, np.ones(10), SelectionCfg(budget_fraction=0.0)).sum() == 0
    sel = select_for_review(["a"] * 10, ts, np.full(10, 0.01), SelectionCfg(budget_fraction=1.0, min_priority=0.05))
    assert sel.sum() == 0


def test_gap_applies_per_log_only():
    ts = np.zeros(4, dtype=np.int64)
    sel = select_for_review(["a", "b", "c", "a"], ts, np.ones(4), SelectionCfg(budget_fraction=1.0, min_gap_s=1.0))
    assert list(sel) == [True, True, True, False]


def test_select_frames_diverse_budget_cap_min_priority_and_one_frame_per_event():
    from labeler.pipeline.selection import select_frames

    # two logs of 10 frames 0.5 s apart; log a: one rare-class event along track t1 over frames 2-6 and a sensor
    # dropout at frame 9; log b: nothing worth a look except one uncertain frame; frames of b below min_priority
    ts = list(np.arange(10) * 500_000_000) * 2
    logs = ["a"] * 10 + ["b"] * 10
    reasons = [[] for _ in range(20)]
    for i in range(2, 7):
        reasons[i] = ["rare_class:t1"]
    reasons[9] = ["lidar_sector_dropout"]
    reasons[15] = ["uncertain_score"]
    pr = np.array([1.5 if r and r[0].startswith(("rare", "lidar")) else (0.1 if r else 0.0) for r in reasons])
    base = np.zeros(20)
    sel = select_frames(logs, ts, pr, base, reasons, SelectionCfg(budget_fraction=0.15, min_gap_s=1.0, min_priority=0.05))
    assert sel.sum() == 3                                  # ceil(0.15 * 20) = 3 frames ...
    picked = set(np.nonzero(sel)[0])
    assert 9 in picked and 15 in picked                   # ... one per event: the dropout, the uncertain frame
    assert len(picked & set(range(2, 7))) == 1            # and one frame of the rare-class track, not three
    # a budget larger than the eligible frames never sends a frame under min_priority
    everything = select_frames(logs, ts, pr, base, reasons, SelectionCfg(budget_fraction=1.0, min_priority=0.05))
    assert set(np.nonzero(everything)[0]) == set(range(2, 7)) | {9, 15}
    capped = select_frames(logs, ts, pr, base, reasons, SelectionCfg(budget_fraction=1.0, max_frames=2, min_priority=0.05))
    assert capped.sum() == 2 and not capped[[i for i in range(20) if pr[i] < 0.05]].any()
