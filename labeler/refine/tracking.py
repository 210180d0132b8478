"""World-frame multi-object tracking of one log's per-frame detections (pure functions).

Model: constant velocity in the ground plane, state ``[x, y, vx, vy]`` in the log's world frame, a Kalman filter
per track (white-noise acceleration, per-class sigma) and Hungarian assignment
(:func:`scipy.optimize.linear_sum_assignment`) of detections to predicted tracks on BEV centre distance.

Gating is class-aware: a detection may only join a track of the same class *group* (vehicles: car/truck/bus;
vulnerable road users: pedestrian/cyclist; cones; anything else: its own group), a different class inside the group
costs :attr:`TrackCfg.class_switch_cost_m` extra metres (so class switches along a track are possible and are later
voted away), and the gate is the larger class gate of the pair plus three predicted position sigmas (so a track
that coasted through a gap, or one whose velocity is not yet known, gets a wider gate).

Forward pass + backward smoothing (not two merged association passes): identities come from one forward pass
with coasting for up to ``max_coast_s`` seconds without a detection; the offboard (non-causal) estimate comes from a
Rauch-Tung-Striebel smoother run over each finished track (:func:`rts_smooth`, used by
:mod:`labeler.refine.smoothing`). For a linear-Gaussian motion model the RTS smoother *is* the optimal
combination of a forward and a backward filter, so a separate backward association pass would only change
identities, and with coasting the forward pass already bridges the short occlusions a backward pass would fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from labeler.geometry.boxes import BOX_COLUMNS, transform_boxes

CLASS_GROUP = {"car": "vehicle", "truck": "vehicle", "bus": "vehicle", "pedestrian": "vru", "cyclist": "vru",
               "traffic_cone": "cone"}
# base association gate (m) and acceleration noise (m/s^2) per class
CLASS_GATE_M = {"car": 2.5, "truck": 3.5, "bus": 4.0, "pedestrian": 1.2, "cyclist": 1.8, "traffic_cone": 0.8}
CLASS_ACCEL = {"car": 3.0, "truck": 2.0, "bus": 2.0, "pedestrian": 1.5, "cyclist": 2.0, "traffic_cone": 0.05}
DEFAULT_GATE_M = 2.0
DEFAULT_ACCEL = 2.0


@dataclass(frozen=True)
class TrackCfg:
    """Tracker settings (metres, seconds, frames)."""

    max_coast_s: float = 1.05          # a track coasts at most this long without a detection (10 Hz: 9 missed
                                       # frames, 2 Hz keyframes: 1); time-based so the tracker works at any rate
    meas_sigma_m: float = 0.35         # centre measurement noise of a score-1 detection
    init_speed_sigma: float = 6.0      # velocity prior of a new track, m/s
    class_switch_cost_m: float = 0.5   # extra cost of joining a track of another class of the same group
    gate_sigmas: float = 3.0           # gate = class gate + this many predicted position sigmas
    size_cost_m: float = 0.0           # extra cost per unit |ln(detection length / track length)|: a 12 m bus
                                       # detection joining a 4.5 m car track costs ~1 x this (0: centre distance only)
    size_alpha: float = 0.3            # the track length follows its detections' (exponential average, log space)
    min_score: float = 0.0             # detections below are not tracked


def group_of(category: str) -> str:
    return CLASS_GROUP.get(str(category), str(category))


def to_world(preds: pd.DataFrame, world_from_lidar: dict[int, np.ndarray]) -> pd.DataFrame:
    """Copy of ``preds`` (LiDAR-frame boxes) with world-frame columns ``wx, wy, wz, wyaw`` added.

    ``world_from_lidar`` maps each frame's ``timestamp_ns`` to its 4x4 pose; a box of a frame without a pose is
    an error (KeyError naming the timestamp)."""
    out = preds.copy()
    W = np.zeros((len(out), 4))
    for ts, idx in out.groupby("timestamp_ns").indices.items():
        T = world_from_lidar.get(int(ts))
        if T is None:
            raise KeyError(f"no world_from_lidar pose for frame timestamp_ns={ts}")
        b = transform_boxes(out[list(BOX_COLUMNS)].to_numpy(np.float64)[idx], T)
        W[idx] = b[:, [0, 1, 2, 6]]
    for k, c in enumerate(("wx", "wy", "wz", "wyaw")):
        out[c] = W[:, k]
    return out


def cv_matrices(dt: float, accel: float) -> tuple[np.ndarray, np.ndarray]:
    """State transition F and process noise Q of the constant-velocity model over ``dt`` seconds."""
    F = np.eye(4)
    F[0, 2] = F[1, 3] = dt
    q = accel ** 2
    g = np.array([[dt ** 4 / 4, dt ** 3 / 2], [dt ** 3 / 2, dt ** 2]]) * q
    Q = np.zeros((4, 4))
    Q[np.ix_([0, 2], [0, 2])] = g
    Q[np.ix_([1, 3], [1, 3])] = g
    return F, Q


_H = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])


@dataclass
class _Track:
    tid: int
    category: str
    x: np.ndarray
    P: np.ndarray
    last_frame: int
    log_len: float = 0.0               # ln of the track's length (m), following its detections
    rows: list = field(default_factory=list)


def _meas_var(score: float, cfg: TrackCfg) -> float:
    return (cfg.meas_sigma_m ** 2) / max(float(score), 0.1)


def track(world: pd.DataFrame, frame_times_ns, cfg: TrackCfg = TrackCfg()) -> np.ndarray:
    """Track id (int >= 0, or -1 for detections under ``cfg.min_score``) per row of ``world``.

    Args:
        world: rows with ``timestamp_ns, category, score, wx, wy`` (see :func:`to_world`).
        frame_times_ns: every frame timestamp of the log the detector ran on, in time order (frames without
            detections included). Any rate works: prediction, gates (class gate + ``gate_sigmas`` predicted
            sigmas, which grow with the time since the last update) and coasting (``max_coast_s``) scale with dt.
    """
    times = np.asarray(sorted(set(int(t) for t in frame_times_ns)), dtype=np.int64)
    fidx = {int(t): i for i, t in enumerate(times)}
    out = np.full(len(world), -1, dtype=np.int64)
    if len(world) == 0:
        return out
    ts = world["timestamp_ns"].to_numpy(np.int64)
    cats = world["category"].astype(str).to_numpy()
    scores = world["score"].to_numpy(np.float64)
    xy = world[["wx", "wy"]].to_numpy(np.float64)
    log_len = (np.log(np.maximum(world["l"].to_numpy(np.float64), 0.1)) if "l" in world.columns
               else np.zeros(len(world)))
    size_cost = cfg.size_cost_m if "l" in world.columns else 0.0
    by_frame: dict[int, list[int]] = {}
    for r in np.nonzero(scores >= cfg.min_score)[0]:
        if int(ts[r]) not in fidx:
            raise KeyError(f"detection at timestamp_ns={ts[r]} is not one of the log's frames")
        by_frame.setdefault(fidx[int(ts[r])], []).append(int(r))
    active: list[_Track] = []
    next_id = 0
    t_prev: dict[int, float] = {}
    for f in range(len(times)):
        t = times[f] / 1e9
        # retire tracks that coasted too long (time-based: the same at 10 Hz and at 2 Hz keyframes)
        active = [tr for tr in active if t - t_prev[tr.tid] <= cfg.max_coast_s + 1e-6]
        preds = []
        for tr in active:
            F, Q = cv_matrices(t - t_prev[tr.tid], CLASS_ACCEL.get(tr.category, DEFAULT_ACCEL))
            preds.append((F @ tr.x, F @ tr.P @ F.T + Q))
        rows = by_frame.get(f, [])
        assigned: dict[int, int] = {}
        if active and rows:
            C = np.full((len(active), len(rows)), 1e6)
            for i, (tr, (xp, Pp)) in enumerate(zip(active, preds)):
                sig = float(np.sqrt(max(Pp[0, 0], Pp[1, 1])))
                for j, r in enumerate(rows):
                    if group_of(cats[r]) != group_of(tr.category):
                        continue
                    d = float(np.hypot(*(xy[r] - xp[:2])))
                    gate = max(CLASS_GATE_M.get(cats[r], DEFAULT_GATE_M), CLASS_GATE_M.get(tr.category, DEFAULT_GATE_M))
                    gate += cfg.gate_sigmas * sig
                    cost = d + (cfg.class_switch_cost_m if cats[r] != tr.category else 0.0)
                    cost += size_cost * abs(log_len[r] - tr.log_len)
                    if d <= gate:
                        C[i, j] = cost
            ri, ci = linear_sum_assignment(C)
            for i, j in zip(ri, ci):
                if C[i, j] < 1e6:
                    assigned[j] = i
        for j, r in enumerate(rows):
            if j in assigned:
                tr = active[assigned[j]]
                xp, Pp = preds[assigned[j]]
                R = np.eye(2) * _meas_var(scores[r], cfg)
                S = _H @ Pp @ _H.T + R
                K = Pp @ _H.T @ np.linalg.inv(S)
                tr.x = xp + K @ (xy[r] - _H @ xp)
                tr.P = (np.eye(4) - K @ _H) @ Pp
                tr.last_frame = f
                if scores[r] >= 0.5 or tr.category is None:
                    tr.category = cats[r]
                tr.log_len += cfg.size_alpha * (log_len[r] - tr.log_len)
                t_prev[tr.tid] = t
                out[r] = tr.tid
            else:
                x0 = np.array([xy[r, 0], xy[r, 1], 0.0, 0.0])
                P0 = np.diag([_meas_var(scores[r], cfg)] * 2 + [cfg.init_speed_sigma ** 2] * 2)
                tr = _Track(next_id, cats[r], x0, P0, f, float(log_len[r]))
                t_prev[tr.tid] = t
                active.append(tr)
                out[r] = next_id
                next_id += 1
    return out


def rts_smooth(times_s, meas_xy, meas_var, accel: float, init_speed_sigma: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Rauch-Tung-Striebel smoothed CV states at every time of ``times_s`` (sorted, seconds).

    ``meas_xy`` (T, 2) may hold NaN rows (no measurement at that time: predict only), ``meas_var`` (T,) the
    measurement variance per row. Returns (states (T, 4) ``[x, y, vx, vy]``, position sigma (T,)).
    """
    t = np.asarray(times_s, dtype=np.float64)
    z = np.asarray(meas_xy, dtype=np.float64)
    rv = np.asarray(meas_var, dtype=np.float64)
    n = len(t)
    first = int(np.nonzero(np.isfinite(z[:, 0]))[0][0])
    xs = np.zeros((n, 4))
    Ps = np.zeros((n, 4, 4))
    xp_all = np.zeros((n, 4))
    Pp_all = np.zeros((n, 4, 4))
    Fs = np.zeros((n, 4, 4))
    x = np.array([z[first, 0], z[first, 1], 0.0, 0.0])
    P = np.diag([rv[first] * 4, rv[first] * 4, init_speed_sigma ** 2, init_speed_sigma ** 2])
    for k in range(n):
        if k == 0:
            F, Q = np.eye(4), np.zeros((4, 4))
        else:
            F, Q = cv_matrices(t[k] - t[k - 1], accel)
        xp, Pp = F @ x, F @ P @ F.T + Q
        Fs[k], xp_all[k], Pp_all[k] = F, xp, Pp
        if np.isfinite(z[k, 0]):
            S = _H @ Pp @ _H.T + np.eye(2) * rv[k]
            K = Pp @ _H.T @ np.linalg.inv(S)
            x = xp + K @ (z[k] - _H @ xp)
            P = (np.eye(4) - K @ _H) @ Pp
        else:
            x, P = xp, Pp
        xs[k], Ps[k] = x, P
    for k in range(n - 2, -1, -1):
        C = Ps[k] @ Fs[k + 1].T @ np.linalg.inv(Pp_all[k + 1])
        xs[k] = xs[k] + C @ (xs[k + 1] - xp_all[k + 1])
        Ps[k] = Ps[k] + C @ (Ps[k + 1] - Pp_all[k + 1]) @ C.T
    return xs, np.sqrt(np.maximum(Ps[:, 0, 0], Ps[:, 1, 1]))
