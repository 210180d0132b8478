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
