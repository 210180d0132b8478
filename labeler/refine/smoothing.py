"""Offboard refinement of one log's predictions (pure functions over tables): :func:`refine_log`.

Steps, per log (see docs/refinement.md):

1. boxes to the world frame with each frame's ``world_from_lidar`` (:func:`labeler.refine.tracking.to_world`);
2. tracking (:func:`labeler.refine.tracking.track`): constant-velocity Kalman + Hungarian, class-aware gates;
3. per track: class by score-weighted vote; one size (score-weighted median of l, w, h); centre smoothed by an
   RTS smoother over every frame from the track's first to its last detection (which also interpolates gaps);
   static tracks (the smoothed centre moves < ``static_max_disp_m``) get one pose, the weighted median;
   heading: moving tracks take the direction of motion (a 180 deg flip of a detection is thus fixed), slow tracks
   keep the detector yaw flipped by 180 deg where it points against the track's reference heading and then a
   circular moving average; z by a running median;
4. gaps of up to ``max_gap_frames`` frames are filled with boxes marked ``source = "interpolated"``;
5. short, weak tracks are dropped (fewer than ``min_hits`` detections and best score under ``strong_score``,
   or a track score under ``min_track_score``).

:func:`refine_log` returns the refined boxes (LiDAR frame of each frame) and the raw boxes with their track id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from labeler.geometry.boxes import BOX_COLUMNS, transform_boxes, wrap_angle
from labeler.geometry.transforms import invert
from labeler.refine.tracking import CLASS_ACCEL, DEFAULT_ACCEL, TrackCfg, rts_smooth, to_world, track

REFINED_SCHEMA = pa.schema(
    [("log_id", pa.string()), ("timestamp_ns", pa.int64()), ("object_id", pa.string()), ("track_id", pa.string())]
    + [(c, pa.float64()) for c in BOX_COLUMNS]
    + [("category", pa.string()), ("score", pa.float64()), ("source", pa.string()), ("raw_object_id", pa.string()),
       ("num_points", pa.int64())]
)
RAW_SCHEMA = pa.schema(
    [("log_id", pa.string()), ("timestamp_ns", pa.int64()), ("object_id", pa.string()), ("track_id", pa.string())]
    + [(c, pa.float64()) for c in BOX_COLUMNS]
    + [("category", pa.string()), ("score", pa.float64()), ("num_points", pa.int64()), ("kept", pa.bool_()),
       ("yaw_flipped", pa.bool_())]
)


@dataclass(frozen=True)
class RefineCfg:
    """Refinement settings."""

    track: TrackCfg = field(default_factory=TrackCfg)
    max_gap_frames: int = 5            # interpolate gaps of up to this many frames
    min_hits: int = 3                  # a track with fewer detections ...
    strong_score: float = 0.6          # ... and no detection scoring at least this is dropped
    min_track_score: float = 0.12      # tracks scoring under this are dropped
    static_max_disp_m: float = 1.0     # smoothed centre moves less than this over the track: static
    moving_speed_mps: float = 1.5      # faster than this: heading = direction of motion
    yaw_window: int = 5                # circular moving average of heading, frames (slow tracks)
    z_window: int = 9                  # running median of z, frames
    interpolated_score_factor: float = 0.85
    size_quantile: float = 0.5         # score-weighted quantile of l, w, h per track (0.5 = median)
    extrapolate_frames: int = 10       # extend moving tracks this many frames past both ends (source "extrapolated")
    extrapolated_score_factor: float = 0.5


def weighted_quantile(values, weights, q: float = 0.5) -> float:
    """Weighted quantile (``q`` = 0.5: weighted median) of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if len(v) == 0:
        return float("nan")
    o = np.argsort(v)
    v, w = v[o], np.maximum(w[o], 1e-9)
    c = np.cumsum(w) - 0.5 * w
    return float(np.interp(q * w.sum(), c, v))


def vote_class(categories, scores) -> str:
    """Class with the largest summed score (ties: first seen)."""
    tot: dict[str, float] = {}
    for c, s in zip(categories, scores):
        tot[str(c)] = tot.get(str(c), 0.0) + float(s)
    return max(tot, key=lambda k: tot[k])


def track_score(scores, num_frames_seen: int) -> float:
    """Track-level confidence: the 75th-percentile detection score, discounted for short tracks
    (1 - exp(-n / 4): 1 detection -> 0.22, 3 -> 0.53, 10 -> 0.92)."""
    s = np.asarray(scores, dtype=np.float64)
    return float(np.quantile(s, 0.75) * (1.0 - np.exp(-num_frames_seen / 4.0)))


def axis_heading(yaws, weights) -> float:
    """Reference heading of a set of yaws that may be 180 deg flipped: the weighted mean axis (doubled-angle
    mean, refined on the yaws within 30 deg of it) pointed the way the weighted majority points."""
    y = np.asarray(yaws, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    axis = 0.5 * np.arctan2((w * np.sin(2 * y)).sum(), (w * np.cos(2 * y)).sum())
    near = np.abs(wrap_angle(2 * (y - axis))) < np.radians(60)
    if near.any():
        axis = 0.5 * np.arctan2((w[near] * np.sin(2 * y[near])).sum(), (w[near] * np.cos(2 * y[near])).sum())
    forward = (w * (np.cos(y - axis) > 0)).sum()
    backward = (w * (np.cos(y - axis) < 0)).sum()
    return float(wrap_angle(axis if forward >= backward else axis + np.pi))


def fix_flips(yaws, reference) -> tuple[np.ndarray, np.ndarray]:
    """Flip each yaw by 180 deg where it points more than 90 deg away from ``reference`` (scalar or per-yaw).
    Returns (fixed yaws, flipped mask)."""
    y = np.asarray(yaws, dtype=np.float64)
    flipped = np.cos(y - np.asarray(reference, dtype=np.float64)) < 0
    return wrap_angle(np.where(flipped, y + np.pi, y)), flipped


def circular_smooth(angles, window: int) -> np.ndarray:
    """Centred circular moving average (NaN entries ignored; window in samples)."""
    a = np.asarray(angles, dtype=np.float64)
    s, c = np.sin(a), np.cos(a)
    ok = np.isfinite(a)
    s, c = np.where(ok, s, 0.0), np.where(ok, c, 0.0)
    ss = pd.Series(s).rolling(max(1, window), center=True, min_periods=1).sum().to_numpy()
    cc = pd.Series(c).rolling(max(1, window), center=True, min_periods=1).sum().to_numpy()
    return np.arctan2(ss, cc)


def robust_displacement(x, y, w) -> float:
    """Distance between the weighted-median centres of the first and the second half of a track's detections
    (robust to single outliers; 0 for one detection)."""
    n = len(x)
    if n < 2:
        return 0.0
    h = n // 2
    a = (weighted_quantile(x[:h], w[:h]), weighted_quantile(y[:h], w[:h]))
    b = (weighted_quantile(x[n - h:], w[n - h:]), weighted_quantile(y[n - h:], w[n - h:]))
    return float(np.hypot(a[0] - b[0], a[1] - b[1]))


def _running_median(v: np.ndarray, window: int) -> np.ndarray:
    s = pd.Series(v)
    return s.rolling(window, center=True, min_periods=1).median().to_numpy()


def _frame_grid(frame_times_ns) -> np.ndarray:
    return np.asarray(sorted(set(int(t) for t in frame_times_ns)), dtype=np.int64)


def refine_track(det: pd.DataFrame, grid_ns: np.ndarray, cfg: RefineCfg) -> tuple[pd.DataFrame, np.ndarray]:
    """Refined world-frame boxes of one track (rows of :func:`to_world` output sharing a track id).

    Returns (rows with ``timestamp_ns, wx, wy, wz, wyaw, l, w, h, source, raw_index``, per-detection flipped mask
    in ``det`` order)."""
    det = det.sort_values(["timestamp_ns", "score"], ascending=[True, False])
    det = det[~det["timestamp_ns"].duplicated()]  # one detection per frame (the tracker never assigns two)
    ts = det["timestamp_ns"].to_numpy(np.int64)
    w = np.clip(det["score"].to_numpy(np.float64), 0.05, 1.0)
    lo, hi = np.searchsorted(grid_ns, ts[0]), np.searchsorted(grid_ns, ts[-1])
    ext = cfg.extrapolate_frames if len(ts) >= cfg.min_hits else 0
    lo, hi = max(0, lo - ext), min(len(grid_ns) - 1, hi + ext)
    g = grid_ns[lo:hi + 1]
    pos = np.searchsorted(g, ts)
    n = len(g)
    z_xy = np.full((n, 2), np.nan)
    z_xy[pos] = det[["wx", "wy"]].to_numpy(np.float64)
    rv = np.full(n, 1.0)
    rv[pos] = cfg.track.meas_sigma_m ** 2 / np.maximum(w, 0.1)
    cat = vote_class(det["category"], w)
    states, _ = rts_smooth(g / 1e9, z_xy, rv, CLASS_ACCEL.get(cat, DEFAULT_ACCEL), cfg.track.init_speed_sigma)
    speed = np.hypot(states[:, 2], states[:, 3])
    static = robust_displacement(det["wx"].to_numpy(), det["wy"].to_numpy(), w) < cfg.static_max_disp_m
    raw_yaw = det["wyaw"].to_numpy(np.float64)
    yaw_full = np.full(n, np.nan)
    if static:
        ref = axis_heading(raw_yaw, w)
        fixed, flipped = fix_flips(raw_yaw, ref)
        xy = np.array([weighted_quantile(det["wx"], w), weighted_quantile(det["wy"], w)])
        states[:, :2] = xy
        yaw_full[:] = ref
    else:
        motion = np.arctan2(states[:, 3], states[:, 2])
        moving = speed > cfg.moving_speed_mps
        ref_slow = axis_heading(raw_yaw, w)
        ref = np.where(moving[pos], motion[pos], ref_slow)
        fixed, flipped = fix_flips(raw_yaw, ref)
        yaw_full[pos] = fixed
        sm = circular_smooth(yaw_full, cfg.yaw_window)
        yaw_full = np.where(moving, motion, sm)
    z_full = np.full(n, np.nan)
    z_full[pos] = det["wz"].to_numpy(np.float64)
    z_full = pd.Series(z_full).interpolate(limit_direction="both").to_numpy()
    z_full = _running_median(z_full, cfg.z_window)
    size = [weighted_quantile(det[c], w, cfg.size_quantile) for c in ("l", "w", "h")]
    # which grid frames to emit: detected ones, and missed ones inside gaps of <= max_gap_frames
    has = np.zeros(n, dtype=bool)
    has[pos] = True
    emit = has.copy()
    gaps = np.diff(pos) - 1
    for a, gap in zip(pos[:-1], gaps):
        if 0 < gap <= cfg.max_gap_frames:
            emit[a + 1:a + 1 + gap] = True
    source = np.where(has, "detected", "interpolated").astype(object)
    if not static and ext:
        source[:pos[0]] = "extrapolated"
        source[pos[-1] + 1:] = "extrapolated"
        emit[:pos[0]] = True
        emit[pos[-1] + 1:] = True
    raw_index = np.full(n, -1, dtype=np.int64)
    raw_index[pos] = det.index.to_numpy()
    out = pd.DataFrame({"timestamp_ns": g, "wx": states[:, 0], "wy": states[:, 1], "wz": z_full, "wyaw": wrap_angle(yaw_full),
                        "l": size[0], "w": size[1], "h": size[2],
                        "source": source, "raw_index": raw_index})
    flips = pd.Series(flipped, index=det.index)
    return out[emit].reset_index(drop=True), flips


def refine_log(preds, world_from_lidar: dict[int, np.ndarray], frame_times_ns=None, cfg: RefineCfg = RefineCfg(),
               log_id: str | None = None) -> tuple[pa.Table, pa.Table]:
    """Refine one log's single-frame detections.

    Args:
        preds: pyarrow Table or DataFrame, one row per box: ``timestamp_ns, object_id, x, y, z, l, w, h, yaw,
            category, score, num_points`` (LiDAR frame, e.g. the log's rows of PREDICTIONS_3D), optional
            ``log_id``, ``uncertainty``.
        world_from_lidar: ``timestamp_ns -> 4x4`` pose of every frame (``Frame.world_from_lidar``).
        frame_times_ns: the log's frame timestamps (default: the keys of ``world_from_lidar``).
        log_id: written into the output (default: ``preds.log_id``).

    Returns:
        ``(refined, raw)``: ``refined`` (:data:`REFINED_SCHEMA`, LiDAR frame of each frame, score = track score,
        ``source`` detected|interpolated, ``raw_object_id`` of the detection it refines or null) and ``raw``
        (:data:`RAW_SCHEMA`: the input boxes with their ``track_id`` (null: untracked), ``kept`` (its track
        survived) and ``yaw_flipped`` (its heading was fixed by 180 deg)).
    """
    df = preds.to_pandas() if isinstance(preds, pa.Table) else pd.DataFrame(preds).copy()
    df = df.reset_index(drop=True)
    if log_id is None:
        log_id = str(df["log_id"].iloc[0]) if len(df) and "log_id" in df.columns else ""
    if "object_id" not in df.columns:
        df["object_id"] = [f"p{k:04d}" for k in range(len(df))]
    if "num_points" not in df.columns:
        df["num_points"] = -1
    grid = _frame_grid(frame_times_ns if frame_times_ns is not None else world_from_lidar.keys())
    raw_track = np.full(len(df), None, dtype=object)
    kept = np.zeros(len(df), dtype=bool)
    flipped = np.zeros(len(df), dtype=bool)
    rows = []
    if len(df):
        wdf = to_world(df, world_from_lidar)
        tids = track(wdf, grid, cfg.track)
        for tid in np.unique(tids[tids >= 0]):
            sel = wdf[tids == tid]
            for r in sel.index:
                raw_track[r] = f"t{tid:04d}"
            n_det = sel["timestamp_ns"].nunique()
            sc = sel["score"].to_numpy(np.float64)
            tscore = track_score(sc, n_det)
            if (n_det < cfg.min_hits and sc.max() < cfg.strong_score) or tscore < cfg.min_track_score:
                continue
            out, flips = refine_track(sel, grid, cfg)
            kept[sel.index] = True
            flipped[flips.index] = flips.to_numpy()
            cat = vote_class(sel["category"], sel["score"])
            for k, r in enumerate(out.itertuples(index=False)):
                interp = r.source != "detected"
                factor = {"detected": 1.0, "interpolated": cfg.interpolated_score_factor}.get(r.source, cfg.extrapolated_score_factor)
                rows.append({"timestamp_ns": int(r.timestamp_ns), "track_id": f"t{tid:04d}",
                             "wbox": (r.wx, r.wy, r.wz, r.l, r.w, r.h, r.wyaw), "category": cat,
                             "score": tscore * factor, "source": r.source,
                             "raw_object_id": None if interp else str(df.at[int(r.raw_index), "object_id"]),
                             "num_points": 0 if interp else int(df.at[int(r.raw_index), "num_points"])})
    # back to each frame's LiDAR frame
    boxes = np.zeros((len(rows), 7))
    by_ts: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_ts.setdefault(r["timestamp_ns"], []).append(i)
    for ts, idx in by_ts.items():
        b = np.array([rows[i]["wbox"] for i in idx], dtype=np.float64)
        boxes[idx] = transform_boxes(b, invert(np.asarray(world_from_lidar[ts])))
    counter: dict[int, int] = {}
    cols: dict[str, list] = {f.name: [] for f in REFINED_SCHEMA}
    for i, r in enumerate(rows):
        k = counter.get(r["timestamp_ns"], 0)
        counter[r["timestamp_ns"]] = k + 1
        cols["log_id"].append(log_id)
        cols["timestamp_ns"].append(r["timestamp_ns"])
        cols["object_id"].append(f"r{k:03d}")
        cols["track_id"].append(r["track_id"])
        for j, c in enumerate(BOX_COLUMNS):
            cols[c].append(float(boxes[i, j]))
        for c in ("category", "score", "source", "raw_object_id", "num_points"):
            cols[c].append(r[c])
    refined = pa.table(cols, schema=REFINED_SCHEMA)
    raw = pa.table({"log_id": [log_id] * len(df), "timestamp_ns": df["timestamp_ns"].astype(np.int64),
                    "object_id": df["object_id"].astype(str), "track_id": list(raw_track),
                    **{c: df[c].astype(np.float64) for c in BOX_COLUMNS}, "category": df["category"].astype(str),
                    "score": df["score"].astype(np.float64), "num_points": df["num_points"].astype(np.int64),
                    "kept": kept, "yaw_flipped": flipped}, schema=RAW_SCHEMA)
    return refined, raw
