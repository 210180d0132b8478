import numpy as np
import pandas as pd

from labeler.geometry.transforms import pose_from_xyz_yaw
from labeler.refine.signals import (above_ground_clusters, ego_stopped, event_ids, frame_signals, likely_false_positive,
                                    rarity, score_band, select_by_priority, select_diverse, track_flicker,
                                    tta_disagreement, unexplained_clusters)


def test_score_band_tta_and_sparse_boxes():
    assert list(score_band([0.1, 0.3, 0.59, 0.6, 0.9], 0.3, 0.6)) == [False, True, True, False, False]
    assert tta_disagreement(None).shape == (0,)
    assert list(tta_disagreement([0.1, 0.5, np.nan], 0.3)) == [False, True, False]
    assert list(likely_false_positive([0, 4, 5, 100, -1], 5)) == [True, True, False, False, False]


def test_rarity_by_bank_counts_and_size():
    boxes = np.array([[0, 0, 0, 4.5, 1.85, 1.6, 0], [0, 0, 0, 12.0, 1.85, 1.6, 0], [0, 0, 0, 1.2, 0.5, 0.9, 0]])
    rare, odd = rarity(["car", "car", "animal"], boxes, {"car": 990, "pedestrian": 500, "animal": 3})
    assert list(rare) == [False, False, True]
    assert list(odd) == [False, True, False]
    rare2, _ = rarity(["car", "mystery"], boxes[:2])  # no bank: only unknown classes are rare
    assert list(rare2) == [False, True]


def test_track_flicker_short_tracks_class_switches_and_flips():
    raw = pd.DataFrame({"timestamp_ns": [1, 2, 3, 4, 2, 3], "track_id": ["a", "a", "a", "a", "b", None],
                        "category": ["car", "car", "truck", "car", "car", "car"], "score": [0.9, 0.9, 0.4, 0.9, 0.5, 0.3],
                        "yaw_flipped": [False, True, False, False, False, False]})
    f = track_flicker(raw, min_hits=3)
    assert list(f["short_track"]) == [False, False, False, False, True, True]
    assert list(f["class_switch"]) == [False, False, True, False, False, False]
    assert list(f["yaw_flip"]) == [False, True, False, False, False, False]


def test_above_ground_cluster_found_and_unexplained_unless_boxed():
    rng = np.random.default_rng(0)
    g = rng.uniform(-30, 30, (20000, 2))
    ground = np.c_[g, np.full(len(g), -1.8) + rng.normal(0, 0.01, len(g))]
    car = np.c_[rng.uniform(9, 13.5, 600), rng.uniform(4, 5.8, 600), rng.uniform(-1.3, -0.3, 600)]
    clusters = above_ground_clusters(np.r_[ground, car])
    assert len(clusters) == 1
    assert abs(clusters[0, 0] - 11.25) < 0.5 and abs(clusters[0, 1] - 4.9) < 0.5 and clusters[0, 3] >= 500
    assert list(unexplained_clusters(clusters, np.zeros((0, 7)))) == [True]
    box = np.array([[11.2, 4.9, -0.8, 4.5, 1.9, 1.6, 0.0]])
    assert list(unexplained_clusters(clusters, box)) == [False]
    far_box = np.array([[-11.2, 4.9, -0.8, 4.5, 1.9, 1.6, 0.0]])
    assert list(unexplained_clusters(clusters, far_box)) == [True]
    assert list(unexplained_clusters(clusters, far_box, min_points=10_000)) == [False]  # too small to count


def test_ego_stopped():
    ts = np.arange(6) * 100_000_000
    poses = np.stack([pose_from_xyz_yaw(x, 0, 0, 0) for x in [0, 1, 2, 2, 2, 2]])
    s = ego_stopped(ts, poses, 0.3)
    assert not s[0] and not s[1] and s[4] and s[5]


def test_frame_signals_reasons_and_priority():
    boxes = np.array([[10, 0, -1, 4.5, 1.85, 1.6, 0]])
    clean = frame_signals([0.9], [200], ["car"], boxes)
    assert clean.reasons == [] and clean.priority == 0.0
    weak = frame_signals([0.4], [2], ["car"], boxes, track_ids=["t0001"])
    assert "uncertain_score" in weak.reasons and "likely_fp:t0001" in weak.reasons
    broken = frame_signals([0.9], [200], ["car"], boxes, health_flags=["lidar_sector_dropout"])
    assert broken.priority > weak.priority > clean.priority
    miss = frame_signals([0.9], [200], ["car"], boxes, clusters=np.array([[-20.0, 3, -1, 300, 4, 2]]))
    assert "missed_cluster" in miss.reasons and miss.uncertain_boxes == 1
    tta = frame_signals([0.9, 0.9], [200, 200], ["car", "car"], np.r_[boxes, boxes], uncertainty=[0.05, 0.8])
    assert tta.reasons == ["tta_disagreement"]


def test_events_and_diverse_selection_one_frame_per_event():
    logs = ["L"] * 6
    ts = np.arange(6) * 500_000_000
    reasons = [["ego_stopped"], ["ego_stopped"], ["ego_stopped"], [], ["camera_black:front"], []]
    ev = event_ids(logs, ts, reasons)
    assert ev[0] == ev[1] == ev[2] and ev[4][0] != ev[0][0]
    m = select_diverse(logs, ts, np.zeros(6), reasons, budget_fraction=2 / 6)
    assert m.sum() == 2 and m[4] and m[:3].sum() == 1   # the stop once, then the black camera
    full = select_diverse(logs, ts, np.zeros(6), reasons, budget_fraction=1.0, min_gap_s=1.0)
    assert full.all()                                   # the gap is a preference: a 100 % budget reviews everything
    pm = select_by_priority(logs, ts, [0.1, 0.9, 0.8, 0.0, 0.5, 0.2], budget_fraction=0.5, min_gap_s=0.6)
    assert list(np.nonzero(pm)[0]) == [1, 4, 2] or pm.sum() == 3
    assert pm[1] and pm[4]


def _select_diverse_reference(log_ids, ts, base, reasons, k, min_gap_s, corner_first=True):
    """The plain greedy select_diverse implements lazily: recompute every frame's value at every step."""
    from labeler.refine.signals import CORNER_CASE_KINDS, CORNER_TIER, DEFAULT_REASON_WEIGHT, REASON_WEIGHTS, event_ids

    n = len(base)
    ev = event_ids(log_ids, ts, reasons, 1.5)
    covered, chosen, blocked = set(), np.zeros(n, bool), np.zeros(n, bool)

    def value(i):
        best = {}
        for e, r in zip(ev[i], reasons[i]):
            if e not in covered:
                kd = r.split(":")[0]
                best[kd] = max(best.get(kd, 0.0), REASON_WEIGHTS.get(kd, DEFAULT_REASON_WEIGHT))
        corner = sum(w for kd, w in best.items() if kd in CORNER_CASE_KINDS) if corner_first else 0.0
        return CORNER_TIER * corner + base[i] + sum(best.values())

    for _ in range(k):
        val = np.array([value(i) for i in range(n)])
        if (chosen | blocked).all():
            blocked[:] = False
        val[chosen | blocked] = -np.inf
        top = np.flatnonzero(val == val.max())
        i = int(top[np.argmin(ts[top])])
        chosen[i] = True
        covered.update(ev[i])
        blocked |= (np.asarray(log_ids) == log_ids[i]) & (np.abs(ts - ts[i]) < min_gap_s * 1e9)
    return chosen


def test_select_diverse_lazy_greedy_picks_what_the_plain_greedy_picks():
    from labeler.refine.signals import select_diverse

    rng = np.random.default_rng(3)
    kinds = ["uncertain_score", "likely_fp:t{}", "short_track:t{}", "missed_cluster", "rare_class:t{}", "camera_black:front"]
    for trial in range(5):
        n = 300
        logs = np.array([f"L{i // 60}" for i in range(n)])
        ts = np.array([(i % 60) * 500_000_000 for i in range(n)], dtype=np.int64)
        reasons = [[k.format(rng.integers(0, 8)) for k in rng.choice(kinds, rng.integers(0, 4), replace=False)] for _ in range(n)]
        base = np.round(rng.random(n) * 0.2, 2)  # rounded: ties happen and must break the same way (earlier first)
        for budget, cf in ((0.05, True), (0.3, True), (0.9, True), (0.05, False), (0.3, False)):
            k = int(np.ceil(budget * n))
            got = select_diverse(list(logs), ts, base, reasons, budget, min_gap_s=1.0, corner_first=cf)
            assert (got == _select_diverse_reference(logs, ts, base, reasons, k, 1.0, cf)).all(), (trial, budget, cf)


def test_corner_case_events_come_before_uncertain_boxes():
    """One log, 2 Hz: frames 0-9 each hold 40 uncertain boxes (base 2.0) and a few uncertainty reasons; frame 4
    (2.0 s) has a LiDAR sector dropout instead, frame 7 an unusually sized track, frame 12 a stop. With a budget
    of 3 frames corner_first reviews the three corner cases; without it the busy frames win. With room for one
    frame the sensor fault (1.5) goes before the odd size and the stop (1.2); the min-gap still holds."""
    from labeler.refine.signals import select_diverse

    n = 20
    ts = np.arange(n, dtype=np.int64) * 500_000_000
    base = np.where(np.arange(n) < 10, 2.0, 0.2)
    reasons = [[f"likely_fp:t{i:04d}", f"short_track:t{i + 100:04d}", "uncertain_score"] if i < 10 else [] for i in range(n)]
    reasons[4] = ["lidar_sector_dropout", "uncertain_score"]
    reasons[7] = ["unusual_size:t0300"]
    reasons[12] = ["ego_stopped"]
    base[4] = base[7] = 0.3
    logs = ["L"] * n
    picks = np.flatnonzero(select_diverse(logs, ts, base, reasons, 3 / n, min_gap_s=1.0))
    assert picks.tolist() == [4, 7, 12]
    old = np.flatnonzero(select_diverse(logs, ts, base, reasons, 3 / n, min_gap_s=1.0, corner_first=False))
    assert 4 not in old and 7 not in old
    assert np.flatnonzero(select_diverse(logs, ts, base, reasons, 1 / n, min_gap_s=1.0)).tolist() == [4]
    # a second odd-size track half a second after the dropout waits for the min-gap like any other frame
    reasons[5] = ["unusual_size:t0301"]
    base[5] = 0.3
    picks = np.flatnonzero(select_diverse(logs, ts, base, reasons, 4 / n, min_gap_s=1.0))
    assert 4 in picks and 5 not in picks


def test_frame_with_pre_labels_but_nothing_accepted_goes_up():
    """Three confident-looking boxes of which none passes the accept scores: auto-accepting the frame would label
    nothing, so it gets no_accepted_labels; the same frame with its boxes accepted does not."""
    boxes = np.array([[10, 0, -1, 4.5, 1.85, 1.6, 0], [20, 5, -1, 4.5, 1.85, 1.6, 0], [30, -5, -1, 4.5, 1.85, 1.6, 0]])
    args = ([0.9, 0.9, 0.9], [200, 200, 200], ["car"] * 3, boxes)
    empty = frame_signals(*args, explain_boxes=np.zeros((0, 7)))
    kept = frame_signals(*args, explain_boxes=boxes)
    assert empty.reasons == ["no_accepted_labels"] and kept.reasons == []
    assert empty.priority > kept.priority
    # two boxes are too few to call it, and boxes under the score band are clutter, not missing labels
    assert frame_signals([0.9, 0.9], [200, 200], ["car"] * 2, boxes[:2], explain_boxes=np.zeros((0, 7))).reasons == []
    assert frame_signals([0.2] * 3, [200] * 3, ["car"] * 3, boxes, explain_boxes=np.zeros((0, 7))).reasons == []


def test_a_stops_creeping_ends_are_not_counted_as_standing():
    """10 Hz: the ego brakes, creeps to a halt (below 0.3 m/s for 1 s, as the simulator's stops do), stands 4 s,
    pulls away. With the default stopped_hold_s (1 s) only frames where it is slow for 1 s either side count, so the
    stop event's frames lie inside the standstill; with no hold the creeping frames count too."""
    from labeler.refine.signals import SignalCfg, stopped_frames

    hold = SignalCfg().stopped_hold_s
    assert hold == 1.0
    ts = np.arange(100) * 100_000_000
    speed = np.full(100, 5.0)
    speed[20:25] = np.linspace(1.5, 0.4, 5)          # braking
    speed[25:35] = np.linspace(0.28, 0.02, 10)       # creeping
    speed[35:75] = 0.0                               # standing, 3.5 s .. 7.4 s
    speed[75:80] = np.linspace(0.1, 2.0, 5)          # pulling away
    creep = speed < 0.3
    assert creep[25:35].all() and creep[75]          # the plain threshold also takes the creeping
    s = stopped_frames(ts, speed, 0.3, hold)
    standing = np.zeros(100, bool)
    standing[35:75] = True
    assert s.any() and not (s & ~standing).any(), "every stopped frame is one where the ego stands"
    assert s[35:66].all() and s.sum() == 31          # the slow run [25, 75] less 1 s at each end
    np.testing.assert_array_equal(stopped_frames(ts, speed, 0.3, 0.0), creep)
    # frames in any order give the same answer per frame
    o = np.random.default_rng(0).permutation(100)
    np.testing.assert_array_equal(stopped_frames(ts[o], speed[o], 0.3, hold), s[o])
    # the pose-based signal agrees
    x = np.concatenate([[0.0], np.cumsum(speed[1:] * 0.1)])
    poses = np.stack([pose_from_xyz_yaw(v, 0, 0, 0) for v in x])
    got = ego_stopped(ts, poses, 0.3, hold)
    assert got.any() and not (got & ~standing).any()
