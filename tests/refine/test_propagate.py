"""Review propagation on hand-made scenes where the right answer is known: a confirmed track takes the person's
class, size and pose; a deleted track is dropped near its review; an unreviewed track keeps the auto-accept rule;
a moving track's correction fades away from its reviews; a person's added box is followed through the
LiDAR; an occluded propagated box is not emitted; and the shift registration and the spread selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labeler.geometry.boxes import BOX_COLUMNS
from labeler.refine.propagate import PROVENANCE, PropagateCfg, follow, propagate, register_shift, snap_to_points
from labeler.refine.signals import select_diverse

S = 1_000_000_000
T = [k * S // 2 for k in range(9)]        # keyframes at 2 Hz
EYE = {t: np.eye(4) for t in T}           # the LiDAR frame is the world frame
CFG = PropagateCfg(enabled=True)


def _rows(track, boxes, cat="car", score=0.8, times=T, source="detected"):
    return [{"timestamp_ns": t, "object_id": f"{track}-{k}", "track_id": track, **dict(zip(BOX_COLUMNS, b)),
             "category": cat, "score": score, "source": source} for k, (t, b) in enumerate(zip(times, boxes))]


def _human(t, box, cat="car"):
    return {"timestamp_ns": t, **dict(zip(BOX_COLUMNS, box)), "category": cat}


def _df(rows):
    return pd.DataFrame(rows)


def test_a_confirmed_static_track_takes_the_persons_class_size_and_pose_everywhere():
    rng = np.random.default_rng(0)
    noisy = [[10 + rng.normal(0, 0.2), 5 + rng.normal(0, 0.2), -0.9, 4.0, 1.7, 1.5, 0.1] for _ in T]
    lab = _df(_rows("t1", noisy, cat="car", score=0.2))           # too weak to be auto-accepted
    truth = [10.0, 5.0, -0.8, 5.5, 2.2, 2.4, 0.0]
    out = propagate(lab, _df([_human(T[4], truth, "truck")]), [T[4]], EYE, T, np.zeros(len(lab), bool), CFG)
    assert sorted(out.timestamp_ns) == [t for t in T if t != T[4]]   # the reviewed frame is the person's, not ours
    assert (out.provenance == PROVENANCE).all() and (out.category == "truck").all()
    np.testing.assert_allclose(out[list(BOX_COLUMNS)].to_numpy(), np.tile(truth, (len(out), 1)), atol=1e-9)


def test_a_deleted_track_is_dropped_and_an_unreviewed_track_keeps_the_accept_rule():
    still = [[20.0, -3.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * len(T)
    ghost = _rows("ghost", still, score=0.9)                                    # reviewed away at T[4]
    far = _rows("far", [[70.0, 0.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * len(T), score=0.9)  # beyond the review's range
    late = _rows("late", [[5.0, 8.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * 3, times=T[6:], score=0.9)
    weak = _rows("weak", [[5.0, -8.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * 3, times=T[6:], score=0.1)
    lab = _df(ghost + far + late + weak)
    accept = lab["score"].to_numpy() >= 0.5
    out = propagate(lab, _df([]), [T[4]], EYE, T, accept, CFG)
    assert "ghost" not in set(out.track_id)
    assert set(out.track_id) == {"far", "late"} and (out.provenance == "auto").all()
    assert len(out[out.track_id == "far"]) == len(T) - 1
    no_reject = propagate(lab, _df([]), [T[4]], EYE, T, accept, PropagateCfg(enabled=True, reject=False))
    assert "ghost" in set(no_reject.track_id)


def test_a_moving_tracks_correction_fades_away_from_its_reviews():
    """Truth: 6 m/s along x. The track is right except on its first frame, where its smoothing left it 1.5 m to the
    side (a local error), and its size and heading are off everywhere (4.2 m, 0.2 rad). Reviews at T[0] and T[8]:
    size and heading are corrected on every frame; the position correction decays with hold_s away from each
    review, so mid-gap the box stays on the (right) track, where a linear interpolation of the two corrections
    would carry half the first one (0.75 m) to T[4]."""
    truth = [[6 * t / S, 2.0, -0.9, 4.5, 1.9, 1.6, 0.0] for t in T]
    track = [[b[0], b[1] + (1.5 if k == 0 else 0.0), -0.9, 4.2, 1.7, 1.5, 0.2] for k, b in enumerate(truth)]
    lab = _df(_rows("m", track, score=0.9))
    rev = _df([_human(T[0], truth[0]), _human(T[8], truth[8])])
    out = propagate(lab, rev, [T[0], T[8]], EYE, T, np.ones(len(lab), bool), CFG).sort_values("timestamp_ns")
    got = out[list(BOX_COLUMNS)].to_numpy()
    np.testing.assert_allclose(got[:, 3:], np.array(truth[1:8])[:, 3:], atol=1e-9)     # size and heading
    lateral = np.abs(got[:, 1] - 2.0)
    np.testing.assert_allclose(got[:, 0], np.array(truth[1:8])[:, 0], atol=1e-9)
    linear = 1.5 * (1 - np.arange(1, 8) / 8)                  # what interpolating the corrections would leave
    assert (lateral < linear).all() and lateral[3] < 0.15 and lateral[2:].max() < 0.25


def _car_surface(box, n=400, rng=None):
    """LiDAR-like points on the two faces of a car seen from the origin (its rear and its left side)."""
    rng = rng or np.random.default_rng(0)
    x, y, z, l, w, h, yaw = box
    u = np.concatenate([np.full(n // 2, -l / 2), rng.uniform(-l / 2, l / 2, n // 2)])
    v = np.concatenate([rng.uniform(-w / 2, w / 2, n // 2), np.full(n // 2, w / 2)])
    zz = rng.uniform(z - h / 2, z + h / 2, n)
    c, s = np.cos(yaw), np.sin(yaw)
    return np.column_stack([x + u * c - v * s, y + u * s + v * c, zz])


def _ground(rng):
    g = rng.uniform(-40, 40, (3000, 2))
    return np.column_stack([g, np.full(len(g), -1.75)])


def test_a_persons_added_box_is_followed_through_the_lidar_until_its_object_leaves():
    rng = np.random.default_rng(1)
    # 6 m/s (3 m per keyframe; an added box is searched for up to search_first_m), no detection at all
    truth = {t: [8.0 + 6.0 * t / S, -4.0, -0.95, 4.5, 1.9, 1.6, 0.0] for t in T}
    gone = T[6]
    pts = {t: np.vstack([_ground(rng)] + ([_car_surface(truth[t], rng=rng)] if t < gone else [])) for t in T}
    lab = _df(_rows("other", [[-20.0, 20.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * len(T), score=0.9))
    out = propagate(lab, _df([_human(T[0], truth[T[0]])]), [T[0]], EYE, T, np.ones(len(lab), bool), CFG,
                    frame_points=lambda t: pts[t])
    mine = out[out.object_id.str.startswith("rv")].set_index("timestamp_ns")
    assert sorted(mine.index) == T[1:6], "followed on every frame the car is in the LiDAR, and not after it left"
    for t in mine.index:
        assert np.hypot(mine.loc[t, "x"] - truth[t][0], mine.loc[t, "y"] - truth[t][1]) < 0.3
    assert (mine.provenance == PROVENANCE).all() and (mine.category == "car").all()
    # without the LiDAR nothing is invented
    assert not propagate(lab, _df([_human(T[0], truth[T[0]])]), [T[0]], EYE, T, np.ones(len(lab), bool),
                         CFG).object_id.str.startswith("rv").any()


def test_an_occluded_propagated_box_is_not_emitted():
    box = [12.0, 3.0, -0.95, 4.5, 1.9, 1.6, 0.0]
    rng = np.random.default_rng(2)
    hidden = T[3]
    pts = {t: np.vstack([_ground(rng)] + ([] if t == hidden else [_car_surface(box, rng=rng)])) for t in T}
    lab = _df(_rows("s", [box] * len(T), score=0.2))
    out = propagate(lab, _df([_human(T[4], box)]), [T[4]], EYE, T, np.zeros(len(lab), bool), CFG,
                    frame_points=lambda t: pts[t])
    assert hidden not in set(out.timestamp_ns) and len(out) == len(T) - 2
    kept = propagate(lab, _df([_human(T[4], box)]), [T[4]], EYE, T, np.zeros(len(lab), bool),
                     PropagateCfg(enabled=True, drop_empty=False), frame_points=lambda t: pts[t])
    assert hidden in set(kept.timestamp_ns)


def test_register_shift_recovers_a_known_shift_and_follow_stops_past_follow_s():
    rng = np.random.default_rng(3)
    ref = _car_surface([0.0, 0.0, 0.0, 4.5, 1.9, 1.6, 0.4], rng=rng)[:, :2]
    shift, share = register_shift(ref, ref + [1.4, -0.6], radius=3.0)
    np.testing.assert_allclose(shift, [1.4, -0.6], atol=0.2 + 1e-9)
    assert share > 0.9
    _, none = register_shift(ref, ref + [20.0, 0.0], radius=3.0)
    assert none == 0.0
    box = np.array([10.0, 0.0, -0.95, 4.5, 1.9, 1.6, 0.0])
    pts = np.vstack([_ground(rng), _car_surface(box, rng=rng)])
    got = follow(box, np.zeros(2), T[0], T[1:], EYE, lambda t: pts, "car", PropagateCfg(enabled=True, follow_s=2.0))
    assert [t for t, _ in got] == T[1:5]


def test_spread_selection_shares_the_budget_between_logs_and_spreads_it_in_time():
    n = 20
    lids = ["a"] * n + ["b"] * n
    ts = np.array(list(range(n)) * 2, dtype=np.int64) * (S // 2)
    base = np.r_[np.full(n, 1.0), np.full(n, 0.5)]       # log a looks busier everywhere
    reasons = [[] for _ in range(2 * n)]
    plain = select_diverse(lids, ts, base, reasons, 0.1, min_gap_s=1.0)
    assert plain[:n].sum() == 4 and plain[n:].sum() == 0   # without spreading log b gets nothing
    m = select_diverse(lids, ts, base, reasons, 0.1, min_gap_s=1.0, spread_s=3.0)
    assert m.sum() == 4 and m[:n].sum() >= 1 and m[n:].sum() >= 1
    for lo in (0, n):
        t = np.sort(ts[lo:lo + n][m[lo:lo + n]]) / S
        assert np.all(np.diff(t) >= 3.0)


@pytest.mark.parametrize("bad", ["follow_s=x", "nope=1"])
def test_bench_propagate_option_errors_name_the_setting(bad):
    from labeler.errors import ConfigError
    from labeler.refine.cli import _propagate_cfg

    with pytest.raises(ConfigError, match="--propagate"):
        _propagate_cfg([bad])
    assert _propagate_cfg(["follow_s=2"]).follow_s == 2.0 and _propagate_cfg([]).enabled
    assert _propagate_cfg(None).enabled is False


def test_a_slow_confirmed_track_keeps_the_persons_heading_a_fast_one_its_motion():
    """A slow track's heading is the detector's (noisy: +-0.5 rad here); where it moves slower than
    ``slow_speed_mps`` the propagated boxes keep the person's heading. A fast track's heading is its motion's, so
    the person's heading correction is added to it."""
    slow_truth = [[1.0 * t / S, 2.0, -0.9, 4.5, 1.9, 1.6, 0.0] for t in T]                  # 1 m/s
    slow = [[b[0], b[1] + 0.3, -0.9, 4.2, 1.7, 1.5, 0.5 * (-1) ** k] for k, b in enumerate(slow_truth)]
    fast_truth = [[8.0 * t / S, -6.0, -0.9, 4.5, 1.9, 1.6, 0.0] for t in T]                 # 8 m/s
    fast = [[b[0], b[1], -0.9, 4.5, 1.9, 1.6, 0.1] for b in fast_truth]
    lab = _df(_rows("slow", slow, score=0.9) + _rows("fast", fast, score=0.9))
    rev = _df([_human(T[0], slow_truth[0]), _human(T[8], slow_truth[8]),
               _human(T[0], fast_truth[0]), _human(T[8], fast_truth[8])])
    out = propagate(lab, rev, [T[0], T[8]], EYE, T, np.ones(len(lab), bool), CFG)
    np.testing.assert_allclose(out[out.track_id == "slow"]["yaw"], 0.0, atol=1e-9)
    np.testing.assert_allclose(out[out.track_id == "fast"]["yaw"], 0.0, atol=1e-9)
    # the detector's heading plus the correction, as before, when every track counts as fast
    old = propagate(lab, rev, [T[0], T[8]], EYE, T, np.ones(len(lab), bool),
                    PropagateCfg(enabled=True, slow_speed_mps=0.0))
    assert np.abs(old[old.track_id == "slow"]["yaw"]).max() > 0.5


def test_a_detected_box_is_kept_though_its_few_points_fall_just_outside_it():
    """A far car's few points lie on its near face: a confirmed box 0.3 m off holds none of them. Where the track's
    own detection had points the box is kept; a filled-in box of the same track with none is still dropped."""
    box = [44.5, -3.7, -1.0, 4.0, 1.9, 1.6, 0.0]
    rng = np.random.default_rng(4)
    face = np.column_stack([np.full(9, 42.45), np.linspace(-4.3, -3.1, 9), np.full(9, -1.0)])   # one ring, rear face
    pts = {t: np.vstack([_ground(rng), face]) for t in T}
    off = [b + 0.35 if k == 0 else b for k, b in enumerate(box)]                                 # 0.35 m too far
    rows = _rows("far", [off] * len(T), score=0.8)
    for r in rows:
        r["num_points"] = 9
        if r["timestamp_ns"] == T[2]:
            r["source"], r["num_points"] = "interpolated", 0
    lab = _df(rows)
    rev = _df([_human(T[4], off)])
    out = propagate(lab, rev, [T[4]], EYE, T, np.ones(len(lab), bool), CFG, frame_points=lambda t: pts[t])
    assert sorted(out.timestamp_ns) == [t for t in T if t not in (T[2], T[4])]
    strict = propagate(lab, rev, [T[4]], EYE, T, np.ones(len(lab), bool),
                       PropagateCfg(enabled=True, keep_detected=False), frame_points=lambda t: pts[t])
    assert len(strict) == 0


def test_a_track_whose_box_holds_no_point_at_the_review_is_not_rejected_there():
    """A parked car hidden behind a truck at the reviewed frame: its track still has a detected box there, but with
    no LiDAR point the person cannot see it and does not label it. That absence is no deletion, so the track keeps
    its accepted boxes. A track whose box had points there and was not labelled is rejected."""
    parked = [[15.0, 6.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * len(T)
    ghost = [[15.0, -6.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * len(T)
    rows = _rows("parked", parked, score=0.9) + _rows("ghost", ghost, score=0.9)
    for r in rows:
        r["num_points"] = 0 if (r["track_id"] == "parked" and r["timestamp_ns"] == T[4]) else 30
    lab = _df(rows)
    out = propagate(lab, _df([]), [T[4]], EYE, T, np.ones(len(lab), bool), CFG)
    assert set(out.track_id) == {"parked"} and len(out) == len(T) - 1
    judged = propagate(lab, _df([]), [T[4]], EYE, T, np.ones(len(lab), bool),
                       PropagateCfg(enabled=True, judge_empty=True))
    assert len(judged) == 0


def test_a_followed_traffic_cone_is_added_beside_a_kept_cone_1_5_m_away():
    """Two cones 1.5 m apart, both static. The detector tracks only the first; the person labels both. The second is
    followed by the LiDAR (within 0.2 m) and added on every frame: a kept box 1.5 m away stands for another cone, not for it
    (a car's followed box within 2 m of a kept car box is still taken as carried)."""
    rng = np.random.default_rng(5)
    a = [10.0, 2.0, -1.45, 0.4, 0.4, 0.7, 0.0]
    b = [10.0, 3.5, -1.45, 0.4, 0.4, 0.7, 0.0]

    def cone(box):
        ang = rng.uniform(0, 2 * np.pi, 40)
        return np.column_stack([box[0] + 0.15 * np.cos(ang), box[1] + 0.15 * np.sin(ang),
                                rng.uniform(-1.7, -1.1, 40)])
    pts = {t: np.vstack([_ground(rng), cone(a), cone(b)]) for t in T}
    lab = _df(_rows("a", [a] * len(T), cat="traffic_cone", score=0.9))
    rev = _df([_human(T[4], a, "traffic_cone"), _human(T[4], b, "traffic_cone")])
    out = propagate(lab, rev, [T[4]], EYE, T, np.ones(len(lab), bool), CFG, frame_points=lambda t: pts[t])
    added = out[out.object_id.str.startswith("rv")]
    assert sorted(added.timestamp_ns) == [t for t in T if t != T[4]]
    np.testing.assert_allclose(added[["x", "y"]].to_numpy(), np.tile(b[:2], (len(added), 1)), atol=0.2)  # registered
    coarse = propagate(lab, rev, [T[4]], EYE, T, np.ones(len(lab), bool),
                       PropagateCfg(enabled=True, carried_margin_m=2.0), frame_points=lambda t: pts[t])
    assert not coarse.object_id.str.startswith("rv").any()


def test_a_second_unjudged_track_of_a_reviewed_object_is_dropped_where_the_confirmed_one_stands():
    """The tracker split one parked car into two tracks: "a" exists at the reviewed frame and is confirmed, "b" only
    later (no review judged it) and lies 0.8 m off. Where "a" is propagated, "b" is a duplicate and dropped; where "a"
    is not there, "b" is kept. A car 3 m away is another object and is kept."""
    car = [15.0, 6.0, -0.9, 4.5, 1.8, 1.5, 0.0]
    lab = _df(_rows("a", [car] * 6, times=T[:6], score=0.9)
              + _rows("b", [[15.8, 6.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * 6, times=T[3:], score=0.9)
              + _rows("c", [[15.0, 9.0, -0.9, 4.5, 1.8, 1.5, 0.0]] * 6, times=T[3:], score=0.9))
    out = propagate(lab, _df([_human(T[0], car)]), [T[0]], EYE, T, np.ones(len(lab), bool), CFG)
    assert sorted(out[out.track_id == "b"].timestamp_ns) == T[6:]
    assert sorted(out[out.track_id == "c"].timestamp_ns) == T[3:]
    assert sorted(out[out.track_id == "a"].timestamp_ns) == T[1:6]
    both = propagate(lab, _df([_human(T[0], car)]), [T[0]], EYE, T, np.ones(len(lab), bool),
                     PropagateCfg(enabled=True, dedupe=False))
    assert sorted(both[both.track_id == "b"].timestamp_ns) == T[3:]


def _inside_surface(box, n=400, rng=None, depth=0.05):
    """Like :func:`_car_surface`, the points a hair inside the faces (as a labelled box encloses its points)."""
    x, y, z, l, w, h, yaw = box
    return _car_surface([x, y, z, l - 2 * depth, w - 2 * depth, h - 2 * depth, yaw], n=n, rng=rng)


def test_snap_to_points_lays_a_box_of_known_size_onto_its_objects_outline():
    rng = np.random.default_rng(5)
    truth = np.array([15.0, 6.0, -0.95, 4.5, 1.9, 1.6, 0.3])
    pts = np.vstack([_ground(rng), _inside_surface(truth, rng=rng)])
    off = truth.copy()
    off[:2] += [0.45, -0.35]
    snapped = snap_to_points(off, pts, radius=0.6)
    assert np.hypot(*(snapped[:2] - truth[:2])) < 0.12, "moved onto the two faces the LiDAR sees"
    assert np.allclose(snapped[2:], truth[2:]), "only the BEV position moves"
    # fewer points than min_points: left where it was
    few = np.vstack([_ground(rng), _inside_surface(truth, n=6, rng=rng)])
    assert np.allclose(snap_to_points(off, few, radius=0.6, min_points=8), off)


def test_a_confirmed_moving_car_is_snapped_onto_its_points_between_reviews():
    rng = np.random.default_rng(6)
    truth = {t: [8.0 + 8.0 * t / S, -4.0, -0.95, 4.5, 1.9, 1.6, 0.0] for t in T}
    pts = {t: np.vstack([_ground(rng), _inside_surface(truth[t], rng=rng)]) for t in T}
    # the detector places the car 0.5 m ahead of itself all along; the review at T[0] corrects it there only
    lab = _df(_rows("c", [[b[0] + 0.5, *b[1:]] for b in (truth[t] for t in T)]))
    args = (lab, _df([_human(T[0], truth[T[0]])]), [T[0]], EYE, T, np.ones(len(lab), bool))
    snapped = propagate(*args, CFG, frame_points=lambda t: pts[t]).set_index("timestamp_ns")
    plain = propagate(*args, PropagateCfg(enabled=True, snap_m=0.0), frame_points=lambda t: pts[t]).set_index("timestamp_ns")
    for t in T[3:]:   # 1.5 s and more after the review the decayed correction leaves most of the 0.5 m
        assert abs(plain.loc[t, "x"] - truth[t][0]) > 0.35
        assert abs(snapped.loc[t, "x"] - truth[t][0]) < 0.12
    assert (snapped.l == 4.5).all() and (snapped.yaw == 0.0).all()


def test_a_confirmed_track_that_switches_to_another_object_is_left_where_the_lidar_follows_its_own():
    rng = np.random.default_rng(7)
    a = {t: [8.0 + 6.0 * t / S, -4.0, -0.95, 4.5, 1.9, 1.6, 0.0] for t in T}   # the reviewed car, driving
    b = [24.0, 2.0, -0.95, 4.4, 1.8, 1.5, 0.0]                                  # a parked car beside its path
    pts = {t: np.vstack([_ground(rng), _inside_surface(a[t], rng=rng), _inside_surface(b, rng=rng)]) for t in T}
    # the track follows the reviewed car for 1.5 s, then jumps onto the parked car (an identity switch)
    lab = _df(_rows("c", [a[t] if k < 4 else b for k, t in enumerate(T)]))
    args = (lab, _df([_human(T[0], a[T[0]])]), [T[0]], EYE, T, np.ones(len(lab), bool))
    out = propagate(*args, CFG, frame_points=lambda t: pts[t])
    old = propagate(*args, PropagateCfg(enabled=True, leave_m=0.0), frame_points=lambda t: pts[t])
    for t in T[4:]:
        o, f = out[out.timestamp_ns == t], old[old.timestamp_ns == t]
        assert np.hypot(f.x - b[0], f.y - b[1]).min() < 0.5, "without the check the person's car is put on the parked one"
        assert np.hypot(o.x - b[0], o.y - b[1]).min() > 1.0, "the track has left the reviewed car: not kept there"
        assert np.hypot(o.x - a[t][0], o.y - a[t][1]).min() < 0.3, "the followed box stands for the reviewed car"


def test_an_empty_box_a_confirmed_track_carries_does_not_keep_the_lidar_followed_box_out():
    """A walking pedestrian (1.2 m/s along y) seen by a few points on its near side. Its track is confirmed at
    T[0] but from T[3] on runs 0.5 m behind it: too close to the person's object for a followed box to be
    added beside it, and holding no point, so it is dropped as empty. The followed box must stand there instead
    (when the empty check came after the followed boxes were added, neither stood: a miss)."""
    rng = np.random.default_rng(11)
    truth = {t: [15.0, -4.0 + 1.2 * t / S, -0.85, 0.6, 0.6, 1.7, np.pi / 2] for t in T}

    def face(b, n=30):   # points on the half of a 0.3 m radius cylinder that faces the LiDAR
        a = rng.uniform(-np.pi / 2, np.pi / 2, n)
        return np.column_stack([b[0] - 0.3 * np.cos(a), b[1] + 0.3 * np.sin(a), rng.uniform(b[2] - 0.8, b[2] + 0.8, n)])

    pts = {t: np.vstack([_ground(rng), face(truth[t])]) for t in T}
    track = [list(truth[t]) for t in T]
    for k in range(3, len(T)):
        track[k][0] += 0.5
    lab = _df(_rows("p", track, cat="pedestrian", score=0.9))
    out = propagate(lab, _df([_human(T[0], truth[T[0]], "pedestrian")]), [T[0]], EYE, T, np.ones(len(lab), bool),
                    CFG, frame_points=lambda t: pts[t])
    for t in T[3:]:
        o = out[out.timestamp_ns == t]
        assert len(o) == 1, f"one box for the pedestrian at {t}"
        assert np.hypot(o.x.iloc[0] - truth[t][0], o.y.iloc[0] - truth[t][1]) < 0.2, "the followed box stands"
        assert o.object_id.iloc[0].startswith("rv") and o.provenance.iloc[0] == PROVENANCE
    # the track's own boxes stand where they hold the pedestrian's points
    assert set(out[out.track_id == "p"].timestamp_ns) == set(T[1:3])
