"""Review propagation: what a person fixed on a reviewed keyframe, carried along the refined tracks to the log's
auto-accepted keyframes.

A reviewed frame's final labels (exactly right) are matched to that frame's refined boxes (every track, whatever
its score) by BEV centre distance, in the world frame. Then each track is

* **confirmed** where its nearest reviewed frame (in time) holds a person's box matched to it: its boxes are
  accepted whatever their score, take the person's class and size, and are moved by the person's correction
  (static tracks: the person's world pose; moving tracks: the world offset of the correction, its heading part
  interpolated between two confirmations and held past the last one, its position part decaying with ``hold_s``
  away from each confirmation);
* **rejected** where its nearest reviewed frame had its box deleted (no person's box within ``match_dist_m``):
  those boxes are dropped (only boxes a person could judge there count: within ``review_range_m``, detected, with
  LiDAR points);
* left alone where no reviewed frame saw it: the ordinary auto-accept rule applies.

With the LiDAR points (``frame_points``), every person's box that no kept track carries to a keyframe (a detector
miss, a track that ends) is followed there by registering its points frame to frame (:func:`follow`), up to the
neighbouring reviewed frames; a propagated box with no point is not emitted (an occluded object is not labelled).

Pure functions on DataFrames (LiDAR-frame boxes ``x, y, z, l, w, h, yaw``; poses ``timestamp_ns -> 4x4
world_from_lidar``). The pipeline applies it in ``labeler pull`` (provenance ``propagated``); the efficiency
benchmark applies it per budget (``labeler bench efficiency --propagate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from labeler.geometry.boxes import BOX_COLUMNS, transform_boxes, wrap_angle
from labeler.geometry.transforms import invert

PROVENANCE = "propagated"
STATIC_SPEED_MPS = 0.3  # a confirmed track slower than this is static: its reviewed box is held, not registered
ALONG_HEADING = frozenset({"car", "truck", "bus", "cyclist"})  # classes that move along their heading
MAX_SPEED_MPS = {"car": 20.0, "truck": 15.0, "bus": 15.0, "pedestrian": 3.0, "cyclist": 8.0, "traffic_cone": 0.5,
                 "animal": 5.0}


@dataclass(frozen=True)
class PropagateCfg:
    """Review propagation settings (chosen on held-out logs 000-001, docs/refinement.md)."""

    enabled: bool = False
    match_dist_m: float = 2.0          # a person's box and a refined box further apart (BEV centres) never match
    static_max_disp_m: float = 0.5     # a track whose world centres stay within this of their median is static:
                                       # it takes the person's world pose everywhere
    hold_s: float = 1.0                # moving tracks: each confirmation's position correction decays as
                                       # exp(-dt / hold_s) away from it (the heading correction is interpolated
                                       # between two confirmations, held past the last one) ...
    slow_speed_mps: float = 5.0        # ... and where the track moves slower than this (its heading is then the
                                       # detector's, not its motion's) it keeps the person's heading
    reject: bool = True                # drop a track's boxes nearest a reviewed frame where the person deleted it
    review_range_m: float = 50.0       # a reviewed frame judges only boxes within this of the LiDAR (further ones
                                       # are not labelled, so their absence says nothing) ...
    judge_empty: bool = False          # ... and (False) only boxes whose detection held LiDAR points: an object
                                       # the LiDAR does not see there is not labelled either
    max_speed_mps: dict = field(default_factory=lambda: dict(MAX_SPEED_MPS))  # an added box is searched for at
                                       # most this far per second (class -> m/s)
    max_range_m: float = 50.0          # boxes followed to a frame only within this of the LiDAR ...
    min_points: int = 1                # ... and holding at least this many LiDAR points (bottom 0.3 m not counted)
    follow_s: float = 6.0              # a person's box no kept track carries is followed by the LiDAR at most this
                                       # long before / after its review ...
    search_m: float = 1.0              # ... searching this far around the constant-velocity prediction
    search_first_m: float = 8.0        # ... and, with no velocity known (an added box), this far (and at most the
                                       # class's top speed x the frame gap)
    min_register: float = 0.5          # ... stopping where fewer than this share of its points find a match
    search_step_m: float = 0.2         # shift grid of the registration (then a pass at half of it)
    carried_margin_m: float = 0.5      # a followed box is not added where a kept label stands for it (nor an auto box
                                       # kept where a propagated one stands, `dedupe`): a centre within
                                       # half the box's longer side plus this (at most match_dist_m; two traffic
                                       # cones 1.5 m apart are two objects)
    dedupe: bool = True                # an auto box where a propagated box stands (within the carried distance) is
                                       # a second track of a reviewed object: dropped
    drop_empty: bool = True            # a propagated box with no LiDAR point inside is not emitted (occluded) ...
    keep_detected: bool = True         # ... unless its own detection had points (a sparse far object's few points
                                       # lie on its near face, a box 0.3 m off misses them)
    leave_m: float = 1.5               # a confirmed track's box further than this from where the LiDAR follows its
                                       # reviewed object has left it (an identity switch): not kept there, the
                                       # followed box stands instead (0: off)
    snap_m: float = 0.6                # a confirmed moving vehicle track's box (the person's size) is moved at most
                                       # this far onto its LiDAR points (:func:`snap_to_points`; 0: off) ...
    snap_min_points: int = 8           # ... when at least this many points lie near it
    snap_step_m: float = 0.1           # ... on this grid of shifts


def to_world_boxes(boxes: np.ndarray, T: np.ndarray) -> np.ndarray:
    return transform_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 7), T)


def _match(a_xy: np.ndarray, b_xy: np.ndarray, dist: float) -> tuple[np.ndarray, np.ndarray]:
    from labeler.refine.efficiency import match_centres

    return match_centres(a_xy, b_xy, dist)


def _is_static(world_xy: np.ndarray, max_disp: float) -> bool:
    if len(world_xy) < 2:
        return True
    med = np.median(world_xy, axis=0)
    return bool(np.all(np.hypot(*(world_xy - med).T) <= max_disp))


def _track_velocity(world_xy: np.ndarray, times_ns: np.ndarray) -> np.ndarray:
    """Per row of one track (any order), its world velocity (m/s, (N, 2)): the central difference over its
    neighbouring rows in time (one row: 0)."""
    o = np.argsort(times_ns, kind="stable")
    xy, t = world_xy[o], times_ns[o].astype(np.float64) / 1e9
    v = np.zeros((len(o), 2))
    if len(o) >= 2:
        a = np.r_[0, np.arange(len(o) - 1)]
        b = np.r_[np.arange(1, len(o)), len(o) - 1]
        v = (xy[b] - xy[a]) / (t[b] - t[a])[:, None]
    out = np.empty((len(o), 2))
    out[o] = v
    return out


def propagate(labels: pd.DataFrame, reviewed: pd.DataFrame, reviewed_frames, poses: dict, frame_times_ns,
              accept: np.ndarray, cfg: PropagateCfg = PropagateCfg(), frame_points=None) -> pd.DataFrame:
    """Final labels of one log's unreviewed keyframes (see the module docstring).

    Args:
        labels: the log's refined boxes at its keyframes, every score: ``timestamp_ns, object_id, track_id,
            x..yaw, category, score`` (``track_id`` null: untracked, never confirmed or rejected).
        reviewed: the reviewed frames' final labels (exactly right): ``timestamp_ns, x..yaw, category``.
        reviewed_frames: timestamps of the reviewed frames (a reviewed frame may hold no labels: every box of it
            was deleted).
        poses: ``timestamp_ns -> 4x4 world_from_lidar`` of every keyframe.
        frame_times_ns: the log's keyframes; rows are returned for those not reviewed.
        accept: boolean mask over ``labels``: the ordinary auto-accept rule (score >= accept score).
        cfg: :class:`PropagateCfg`.
        frame_points: ``timestamp_ns -> (N, 3+) LiDAR points`` (LiDAR frame) of a keyframe; with it, reviewed objects
            no kept track carries to a frame are followed there by the LiDAR (:func:`follow`); None: no such boxes.

    Returns: the unreviewed keyframes' labels: ``timestamp_ns, object_id, track_id, x..yaw, category, score,
    provenance`` (``auto``: accepted as it was; ``propagated``: confirmed, corrected or filled in by a review).
    """
    cols = ["timestamp_ns", "object_id", "track_id", *BOX_COLUMNS, "category", "score", "provenance"]
    rts = sorted({int(t) for t in reviewed_frames})
    todo = sorted({int(t) for t in frame_times_ns} - set(rts))
    lab = labels.reset_index(drop=True).copy()
    lab["_accept"] = np.asarray(accept, dtype=bool)
    lab["timestamp_ns"] = lab["timestamp_ns"].astype(np.int64)
    if not rts or not todo:
        out = lab[lab["timestamp_ns"].isin(set(todo)) & lab["_accept"]].copy()
        out["provenance"] = "auto"
        return out[cols].reset_index(drop=True)
    # world-frame boxes of every refined row and every reviewed label
    W = np.zeros((len(lab), 7))
    for t, idx in lab.groupby("timestamp_ns").indices.items():
        W[idx] = to_world_boxes(lab[list(BOX_COLUMNS)].to_numpy(np.float64)[idx], poses[int(t)])
    rev = reviewed.reset_index(drop=True)
    if len(rev) == 0:  # every reviewed frame ended empty
        rev = pd.DataFrame({c: pd.Series(dtype="int64" if c == "timestamp_ns" else "object" if c == "category" else "float64")
                            for c in ("timestamp_ns", *BOX_COLUMNS, "category")})
    RW = np.zeros((len(rev), 7))
    for t, idx in rev.groupby("timestamp_ns").indices.items():
        RW[idx] = to_world_boxes(rev[list(BOX_COLUMNS)].to_numpy(np.float64)[idx], poses[int(t)])
    tid = lab["track_id"].where(lab["track_id"].notna(), None).to_numpy(dtype=object)

    # verdicts: track -> list of (t_review, confirmed?, reviewed row or -1)
    events: dict[str, list[tuple[int, bool, int]]] = {}
    rev_ts = rev["timestamp_ns"].to_numpy(np.int64)
    lab_ts = lab["timestamp_ns"].to_numpy(np.int64)
    for r in rts:
        li = np.nonzero(lab_ts == r)[0]
        ri = np.nonzero(rev_ts == r)[0]
        a, b = _match(W[li, :2], RW[ri, :2], cfg.match_dist_m)
        matched_l = set(li[a].tolist())
        for i, j in zip(li[a], ri[b]):
            if tid[i] is not None:
                events.setdefault(tid[i], []).append((r, True, int(j)))
        judged = np.hypot(lab["x"].to_numpy()[li], lab["y"].to_numpy()[li]) <= cfg.review_range_m
        if "source" in lab.columns:  # a filled-in box may be an occluded object, which nobody labels
            judged &= lab["source"].to_numpy(dtype=object)[li] != "interpolated"
        if not cfg.judge_empty and "num_points" in lab.columns:
            judged &= lab["num_points"].to_numpy()[li] > 0
        for i in li[judged]:
            if i not in matched_l and tid[i] is not None:
                events.setdefault(tid[i], []).append((r, False, -1))

    rows_of = {k: np.asarray(v) for k, v in lab.groupby("track_id", sort=False).indices.items()}
    followed = ({} if frame_points is None else
                _follow_reviewed(rev, RW, rts, todo, poses, events, rows_of, W, lab_ts, cfg, frame_points))
    todo_mask = lab["timestamp_ns"].isin(set(todo)).to_numpy()
    keep = todo_mask & lab["_accept"].to_numpy()
    prov = np.array(["auto"] * len(lab), dtype=object)
    moving = np.zeros(len(lab), dtype=bool)   # confirmed rows of a moving track (their position is the track's)
    B = lab[list(BOX_COLUMNS)].to_numpy(np.float64).copy()
    cat = lab["category"].to_numpy(dtype=object).copy()
    for k, ev in events.items():
        allrows = rows_of[k]
        rows = allrows[todo_mask[allrows]]
        if len(rows) == 0:
            continue
        ev_t = np.array([e[0] for e in ev], dtype=np.int64)
        conf = [(e[0], e[2]) for e in ev if e[1]]
        static = _is_static(W[allrows, :2], cfg.static_max_disp_m)
        if conf:
            ct = np.array([c[0] for c in conf], dtype=np.int64)
            # the correction at each confirmation: person's world box minus the track's world box there
            off = []
            for t_r, j in conf:
                i = allrows[lab_ts[allrows] == t_r][0]
                d = RW[j] - W[i]
                d[6] = wrap_angle(d[6])
                off.append(d)
            off = np.array(off)
            if not static:   # slow stretches keep the person's heading
                speed = np.hypot(*_track_velocity(W[allrows, :2], lab_ts[allrows]).T)
                speed_of = dict(zip(allrows.tolist(), speed.tolist()))
        for i in rows:
            t = lab_ts[i]
            near = ev[int(np.argmin(np.abs(ev_t - t)))]
            if not near[1]:
                if cfg.reject:
                    keep[i] = False
                continue
            j_near = near[2]
            w = W[i].copy()
            if static:
                w[[0, 1, 2, 6]] = RW[j_near][[0, 1, 2, 6]]
            else:
                before, after = ct[ct <= t], ct[ct >= t]
                if len(before) and len(after):
                    t0, t1 = before.max(), after.min()
                    d0, d1 = off[list(ct).index(t0)], off[list(ct).index(t1)]
                    a = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                    d = (1 - a) * d0 + a * d1      # heading and size parts: interpolated
                    # position part: each confirmation's correction decays away from it (a track's error at a
                    # review is often local: a track's first, smoothed frames; a sparse object's detection)
                    d[:3] = ((1 - a) * d0[:3] * np.exp(-(t - t0) / 1e9 / cfg.hold_s)
                             + a * d1[:3] * np.exp(-(t1 - t) / 1e9 / cfg.hold_s))
                else:
                    tn = before.max() if len(before) else after.min()
                    d = off[list(ct).index(tn)].copy()
                    d[:3] *= np.exp(-abs(t - tn) / 1e9 / cfg.hold_s)   # the heading correction is held
                w[[0, 1, 2]] += d[[0, 1, 2]]
                w[6] = wrap_angle(w[6] + d[6]) if speed_of[i] >= cfg.slow_speed_mps else RW[j_near][6]
                moving[i] = True
            w[3:6] = RW[j_near][3:6]
            fw = followed.get(j_near, {}).get(int(t))
            if cfg.leave_m > 0 and fw is not None and np.hypot(*(w[:2] - fw[:2])) > cfg.leave_m:
                # the LiDAR follows the reviewed object elsewhere: the track has left it (an identity switch)
                keep[i] = False
                continue
            B[i] = to_world_boxes(w[None], invert(poses[int(t)]))[0]
            cat[i] = rev["category"].iloc[j_near]
            keep[i] = True
            prov[i] = PROVENANCE
    lab[list(BOX_COLUMNS)] = B
    lab["category"] = cat
    lab["provenance"] = prov
    # a box whose own detection saw LiDAR points holds its object, however sparse (checked below only without it)
    seen = np.zeros(len(lab), dtype=bool)
    if cfg.keep_detected and {"source", "num_points"} <= set(lab.columns):
        seen = (lab["source"].to_numpy(dtype=object) == "detected") & (lab["num_points"].to_numpy() > 0)
    out = lab[keep][cols].copy()
    out["_seen"] = seen[keep]
    if frame_points is not None and cfg.snap_m > 0:
        out = _snap_moving(out, moving[keep], frame_points, cfg)
    if frame_points is not None:
        if cfg.drop_empty:   # first: an empty box a track carries does not stand for its object (nor keep a followed one out)
            out = out[out["_seen"].to_numpy(dtype=bool) | ~_empty_propagated(out, frame_points)]
        # a person's box the tracks do not carry to a frame: followed there when the LiDAR agrees
        fill = _extend_reviewed(out, rev, followed, poses, cfg)
        if len(fill):
            fill = pd.DataFrame(fill, columns=cols).assign(_seen=False)
            if cfg.drop_empty:
                fill = fill[~_empty_propagated(fill, frame_points)]
            out = pd.concat([out, fill], ignore_index=True)
    if cfg.dedupe:
        out = out[~_shadowed_auto(out, cfg)]
    return out[cols].sort_values(["timestamp_ns", "object_id"]).reset_index(drop=True)


def _snap_moving(out: pd.DataFrame, moving: np.ndarray, frame_points, cfg: PropagateCfg) -> pd.DataFrame:
    """``out`` with each confirmed moving track's box snapped onto its LiDAR points (:func:`snap_to_points`)."""
    out = out.reset_index(drop=True)
    B = out[list(BOX_COLUMNS)].to_numpy(np.float64).copy()
    for t, idx in out.groupby("timestamp_ns").indices.items():
        idx = idx[moving[idx] & out["category"].iloc[idx].isin(SNAP_CLASSES).to_numpy()]
        if len(idx):
            pts = frame_points(int(t))
            for i in idx:
                B[i] = snap_to_points(B[i], pts, cfg.snap_m, cfg.snap_step_m, cfg.snap_min_points)
    out[list(BOX_COLUMNS)] = B
    return out


def snap_to_points(box: np.ndarray, points: np.ndarray, radius: float, step: float = 0.1, min_points: int = 8,
                   keep_share: float = 0.95) -> np.ndarray:
    """A box of known size and heading (LiDAR frame) moved, within ``radius`` in BEV, onto its object's points.

    The points near the box (its footprint grown by ``radius``, above its lowest :data:`GROUND_CLEARANCE_M`, below
    its top) are the object's surface as the LiDAR sees it. Among the shifts on a ``step`` grid that keep at least
    ``keep_share`` of the most points any shift holds inside the footprint, the one whose inside points lie nearest
    its faces (mean distance to the footprint's outline) wins: an object's points are on its surface, not in its
    middle. Fewer than ``min_points`` points: the box is returned as it was."""
    b = np.asarray(box, dtype=np.float64).copy()
    x, y, z, l, w, h, yaw = b
    near = _box_points_world(np.asarray(points), np.eye(4), b, radius)   # the box is in the points' frame
    c, s = np.cos(yaw), np.sin(yaw)
    dx, dy = near[:, 0] - x, near[:, 1] - y
    u, v = dx * c + dy * s, -dx * s + dy * c
    if len(u) < min_points:
        return b
    k = int(np.floor(radius / step + 1e-9))
    a = np.arange(-k, k + 1) * step
    du, dv = (g.ravel() for g in np.meshgrid(a, a, indexing="ij"))
    ru = l / 2 - np.abs(u[None, :] - du[:, None])          # (K, M): >= 0 inside along the length
    rv = w / 2 - np.abs(v[None, :] - dv[:, None])
    inside = (ru >= -1e-6) & (rv >= -1e-6)
    n = inside.sum(axis=1)
    if n.max() < min_points:
        return b
    edge = np.where(inside, np.minimum(ru, rv), 0.0).sum(axis=1) / np.maximum(n, 1)
    ok = n >= keep_share * n.max()
    cost = np.where(ok, edge, np.inf) + 1e-3 * np.hypot(du, dv)   # ties: the smallest shift
    j = int(np.argmin(cost))
    b[0] += du[j] * c - dv[j] * s
    b[1] += du[j] * s + dv[j] * c
    return b


def _carried_dist(lw: np.ndarray, cfg: PropagateCfg) -> np.ndarray:
    """How near (BEV centres) a label stands for a box of size ``lw`` (..., 2): half its longer side plus
    ``carried_margin_m``, at most ``match_dist_m``."""
    return np.minimum(cfg.match_dist_m, np.max(lw, axis=-1) / 2 + cfg.carried_margin_m)


def _shadowed_auto(out: pd.DataFrame, cfg: PropagateCfg) -> np.ndarray:
    """Mask of ``auto`` boxes standing where a propagated box stands (a second track of a reviewed object, which no
    review judged): the propagated box carries the person's verdict."""
    out = out.reset_index(drop=True)
    shadowed = np.zeros(len(out), dtype=bool)
    prov = out["provenance"].to_numpy(dtype=object) == PROVENANCE
    X = out[["x", "y", "l", "w"]].to_numpy(np.float64)
    for idx in out.groupby("timestamp_ns").indices.values():
        a, b = idx[~prov[idx]], idx[prov[idx]]
        if len(a) and len(b):
            d = np.hypot(X[a, None, 0] - X[None, b, 0], X[a, None, 1] - X[None, b, 1])
            shadowed[a] = (d < _carried_dist(X[b, 2:4], cfg)[None]).any(axis=1)
    return shadowed


def _empty_propagated(out: pd.DataFrame, frame_points) -> np.ndarray:
    """Mask of propagated boxes holding no LiDAR point at all (an occluded object, or a box a review carried past
    where its object went)."""
    from labeler.geometry.boxes import count_points_windowed

    empty = np.zeros(len(out), dtype=bool)
    prov = out["provenance"].to_numpy(dtype=object) == PROVENANCE
    for t, idx in out.reset_index(drop=True).groupby("timestamp_ns").indices.items():
        idx = idx[prov[idx]]
        if len(idx):
            b = out[list(BOX_COLUMNS)].to_numpy(np.float64)[idx].copy()
            b[:, 2] += EMPTY_CLEARANCE_M / 2      # ground returns at the box's bottom are not the object's
            b[:, 5] = np.maximum(0.1, b[:, 5] - EMPTY_CLEARANCE_M)
            n = count_points_windowed(frame_points(int(t)), b)
            empty[idx] = n == 0
    return empty


SNAP_CLASSES = ("car", "truck", "bus")  # snap_m: boxes big enough for their outline to be seen
EMPTY_CLEARANCE_M = 0.05  # drop_empty: a box's lowest 0.05 m is not counted (ground returns)
SURFACE_M = 0.1  # an object's points lie on its box's faces: its point set is taken from the box grown by this
PLATEAU_M = 1.0  # register_shift: best shifts spread wider than this are ambiguous (not averaged)
GROUND_CLEARANCE_M = 0.3  # a box's lowest 0.3 m is not counted when checking LiDAR support (ground returns)


def _grid(radius: float, step: float) -> np.ndarray:
    k = max(0, int(np.ceil(radius / step)))
    a = np.arange(-k, k + 1) * step
    g = np.stack(np.meshgrid(a, a, indexing="ij"), -1).reshape(-1, 2)
    return g[np.hypot(g[:, 0], g[:, 1]) <= radius + 1e-9]


def _box_points_world(points_lidar: np.ndarray, T: np.ndarray, world_box: np.ndarray, grow_m: float) -> np.ndarray:
    """World-frame xy of the LiDAR points (given in the LiDAR frame, pose ``T``) within ``grow_m`` of the world box's
    footprint, above its lowest :data:`GROUND_CLEARANCE_M` and below its top."""
    x, y, z, l, w, h, yaw = world_box
    p = points_lidar[:, :3] @ T[:3, :3].T + T[:3, 3]
    p = p[(p[:, 2] >= z - h / 2 + GROUND_CLEARANCE_M) & (p[:, 2] <= z + h / 2)]
    c, s = np.cos(yaw), np.sin(yaw)
    dx, dy = p[:, 0] - x, p[:, 1] - y
    u, v = dx * c + dy * s, -dx * s + dy * c
    return p[(np.abs(u) <= l / 2 + grow_m) & (np.abs(v) <= w / 2 + grow_m), :2]


def register_shift(ref_xy: np.ndarray, cur_xy: np.ndarray, radius: float, cell: float = 0.2,
                   max_ref: int = 300, offsets: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The BEV shift (within ``radius``, or one of ``offsets``) that lays the reference points ``ref_xy`` best onto
    ``cur_xy``: the share of reference points landing within one ``cell`` of a current point, on a ``cell`` grid of
    shifts; the centre of the shifts scoring the best when they lie within :data:`PLATEAU_M`, else the smallest of
    them. Returns (shift (2,), share)."""
    if len(ref_xy) == 0 or len(cur_xy) == 0:
        return np.zeros(2), 0.0
    ref = ref_xy[:: max(1, len(ref_xy) // max_ref)]
    lo = np.minimum(ref.min(0), cur_xy.min(0)) - radius - 2 * cell
    hi = np.maximum(ref.max(0), cur_xy.max(0)) + radius + 2 * cell
    shape = np.ceil((hi - lo) / cell).astype(int) + 1
    occ = np.zeros(shape, dtype=bool)
    ij = ((cur_xy - lo) / cell).astype(int)
    occ[ij[:, 0], ij[:, 1]] = True
    dil = occ.copy()                                                   # one cell of tolerance
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            dil |= np.roll(np.roll(occ, di, 0), dj, 1)
    offs = _grid(radius, cell) if offsets is None else np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
    q = ((ref[None, :, :] + offs[:, None, :] - lo) / cell).astype(int)   # (K, M, 2)
    score = dil[q[..., 0], q[..., 1]].sum(axis=1) / len(ref)
    good = np.nonzero(score >= score.max() - 1e-9)[0]
    span = np.ptp(offs[good], axis=0).max() if len(good) > 1 else 0.0
    if span <= PLATEAU_M:   # the cell tolerance makes a small plateau of best shifts: its centre is the shift
        return offs[good].mean(axis=0), float(score[good[0]])
    k = good[np.argmin(np.hypot(offs[good, 0], offs[good, 1]))]   # ambiguous (a long flat side): the smallest
    return offs[k], float(score[k])


def follow(world_box: np.ndarray, velocity, t0: int, times, poses: dict, frame_points, category: str,
           cfg: PropagateCfg) -> list[tuple[int, np.ndarray]]:
    """Follow a person's box (world frame, at keyframe ``t0``) through ``times`` (keyframes in walking order, all
    after or all before ``t0``) by registering its LiDAR points frame to frame (:func:`register_shift`): the box is
    predicted with the velocity (world m/s; None: unknown, searched within the class's top speed), then shifted to
    where its points lie best. Stops where fewer than ``min_register`` of its points find a match, where it holds
    fewer than ``min_points``, leaves ``max_range_m`` or passes ``follow_s``. Returns ``[(t, world box)]``."""
    out = []
    cur, prev_t = np.asarray(world_box, dtype=np.float64).copy(), int(t0)
    ref = _box_points_world(frame_points(prev_t), poses[prev_t], cur, SURFACE_M)
    v = None if velocity is None else np.asarray(velocity, dtype=np.float64)
    vmax = cfg.max_speed_mps.get(str(category), 15.0)
    if v is not None and np.hypot(*v) < STATIC_SPEED_MPS:
        # a static track's object stays put: held wherever the LiDAR still sees it
        for t in times:
            t = int(t)
            if abs(t - int(t0)) > cfg.follow_s * 1e9:
                break
            T = poses[t]
            lb = to_world_boxes(cur[None], invert(T))[0]
            if np.hypot(lb[0], lb[1]) <= cfg.max_range_m and len(_box_points_world(frame_points(t), T, cur, SURFACE_M)) >= cfg.min_points:
                out.append((t, cur.copy()))
        return out
    if len(ref) < cfg.min_points:
        return out
    for t in times:
        t = int(t)
        if abs(t - int(t0)) > cfg.follow_s * 1e9:
            break
        dt = (t - prev_t) / 1e9
        pred = cur.copy()
        if v is not None:
            pred[:2] += v * dt
            radius = cfg.search_m
        else:
            radius = min(vmax * abs(dt), cfg.search_first_m)
        T = poses[t]
        lb = to_world_boxes(pred[None], invert(T))[0]
        if np.hypot(lb[0], lb[1]) > cfg.max_range_m:
            break
        offs = None
        if v is None and str(category) in ALONG_HEADING:     # a vehicle moves along its heading: search that line
            st = cfg.search_step_m
            along = np.arange(-np.ceil(radius / st), np.ceil(radius / st) + 1) * st
            side = np.arange(-np.ceil(cfg.search_m / st), np.ceil(cfg.search_m / st) + 1) * st
            a, b = np.meshgrid(along, side, indexing="ij")
            c, s_ = np.cos(cur[6]), np.sin(cur[6])
            offs = np.stack([a.ravel() * c - b.ravel() * s_, a.ravel() * s_ + b.ravel() * c], -1)
        now = _box_points_world(frame_points(t), T, pred, radius)
        st = cfg.search_step_m
        shift, share = register_shift(ref + (pred[:2] - cur[:2]), now, radius, cell=st, offsets=offs)
        fine, _ = register_shift(ref + (pred[:2] - cur[:2]) + shift, now, 1.5 * st, cell=st / 2)   # then half a cell
        shift = shift + fine
        if share < cfg.min_register:
            break
        new = pred.copy()
        new[:2] += shift
        mine = _box_points_world(frame_points(t), T, new, SURFACE_M)
        if len(mine) < cfg.min_points:
            break
        meas_v = (new[:2] - cur[:2]) / dt
        v = meas_v if v is None else 0.5 * v + 0.5 * meas_v
        cur, prev_t, ref = new, t, mine
        out.append((t, cur.copy()))
    return out


def _follow_reviewed(rev, RW, rts, todo, poses, events, rows_of, W, lab_ts, cfg, frame_points) -> dict[int, dict[int, np.ndarray]]:
    """Every person's box followed by the LiDAR (:func:`follow`) forward and backward up to the neighbouring
    reviewed frames, starting from its track's velocity (confirmed moving track) or none (added box; static track:
    zero). Returns ``person's box row -> {keyframe: world box}``."""
    cats = rev["category"].to_numpy(dtype=object)
    rev_ts = rev["timestamp_ns"].to_numpy(np.int64)
    vel: dict[int, np.ndarray] = {}
    for k, ev in events.items():
        rows = rows_of[k]
        static = _is_static(W[rows, :2], cfg.static_max_disp_m)
        v = _track_velocity(W[rows, :2], lab_ts[rows])
        for t_r, ok, j in ev:
            if ok:
                vel[j] = np.zeros(2) if static else v[np.nonzero(lab_ts[rows] == t_r)[0][0]]
    followed: dict[int, dict[int, np.ndarray]] = {}
    for j in range(len(rev)):
        r = int(rev_ts[j])
        later = [t for t in rts if t > r]
        earlier = [t for t in rts if t < r]
        fwd = [t for t in todo if r < t < (later[0] if later else np.inf)]
        bwd = [t for t in reversed(todo) if (earlier[-1] if earlier else -np.inf) < t < r]
        followed[j] = {t: wb for times in (fwd, bwd)
                       for t, wb in follow(RW[j], vel.get(j), r, times, poses, frame_points, cats[j], cfg)}
    return followed


def _extend_reviewed(out, rev, followed, poses, cfg) -> list[dict]:
    """Boxes for reviewed objects at unreviewed keyframes where no kept label stands for them: the followed boxes
    (:func:`_follow_reviewed`)."""
    fill: list[dict] = []
    have: dict[int, np.ndarray] = {int(t): g[["x", "y"]].to_numpy(np.float64) for t, g in out.groupby("timestamp_ns")}
    cats = rev["category"].to_numpy(dtype=object)
    rev_ts = rev["timestamp_ns"].to_numpy(np.int64)
    for j in range(len(rev)):
        r = int(rev_ts[j])
        for t, wb in followed.get(j, {}).items():
            b = to_world_boxes(wb[None], invert(poses[t]))[0]
            h = have.get(t)
            carried = _carried_dist(b[3:5], cfg)
            if h is not None and len(h) and np.min(np.hypot(h[:, 0] - b[0], h[:, 1] - b[1])) < carried:
                continue
            fill.append({"timestamp_ns": t, "object_id": f"rv{r}-{j}", "track_id": None,
                         **dict(zip(BOX_COLUMNS, map(float, b))), "category": cats[j], "score": 1.0,
                         "provenance": PROVENANCE})
            have[t] = np.vstack([h, b[None, :2]]) if h is not None and len(h) else b[None, :2]
    return fill
