"""Offboard refinement of one log's predictions (pure functions over tables): :func:`refine_log`.

Steps, per log (see docs/refinement.md):

1. boxes to the world frame with each frame's ``world_from_lidar`` (:func:`labeler.refine.tracking.to_world`);
2. tracking (:func:`labeler.refine.tracking.track`): constant-velocity Kalman + Hungarian, class-aware gates;
3. per track: class by score-weighted vote; one size (score-weighted median of l, w, h); centre smoothed by an
   RTS smoother over every frame from the track's first to its last detection (which also interpolates gaps);
   static tracks (the smoothed centre moves < ``static_max_disp_m``) get one pose, the weighted median;
   short runs of outlier detections are smoothed over (:func:`_robust_smooth`);
   heading: moving tracks take the direction of motion (a 180 deg flip of a detection is thus fixed), slow tracks
   keep the detector yaw flipped by 180 deg where it points against the track's reference heading and then a
   circular moving average; z by a running median;
4. gaps whose detections are at most ``max_gap_s`` apart are filled with boxes marked ``source = "interpolated"``;
5. duplicate tracks (a box overlapping a higher-scored one of its class group in the same frame) lose that box;
6. short, weak tracks are dropped (fewer than ``min_hits`` detections and best score under ``strong_score``,
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
from labeler.refine.proposals import PROPOSAL_SOURCE, ProposalCfg
from labeler.refine.rescore import FEATURES, RescoreCfg, load_scorer, track_features
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
    """Refinement settings. Durations are in seconds, so the same settings work on 10 Hz sweeps and on the
    pipeline's 2 Hz keyframes (windows become ``round(seconds / median frame spacing)`` frames, at least 1).
    Defaults chosen on held-out logs 000-001 (docs/refinement.md)."""

    enabled: bool = True               # pipeline: refine each log after all its chunks (False: raw boxes only)
    context_hz: float = 0.0            # pipeline: also run the detector on frames dropped only for the keyframe rate,
                                       # up to this rate, as tracking context (context_3d; 0: keyframes only)
    track: TrackCfg = field(default_factory=TrackCfg)
    max_gap_s: float = 1.05            # fill a gap when the detections on both sides are at most this far apart
    min_hits: int = 3                  # a track with fewer detections ...
    strong_score: float = 0.6          # ... and no detection scoring at least this is dropped
    min_track_score: float = 0.12      # tracks scoring under this are dropped
    static_max_disp_m: float = 1.0     # 80 % of the detections within this of the track's median centre: static
    moving_speed_mps: float = 1.5      # faster than this: heading = direction of motion
    yaw_window_s: float = 0.5          # circular moving average of heading (slow tracks)
    z_window_s: float = 0.9            # running median of z
    interpolated_score_factor: float = 0.85
    size_quantile: float = 0.5         # score-weighted quantile of l, w, h per track (0.5 = median)
    extrapolate_s: float = 0.0         # extend moving tracks this long past both ends (source "extrapolated");
                                       # off: on held-out logs it only added false boxes
    extrapolated_score_factor: float = 0.5
    max_shift_m: float = 1.0           # moving tracks: a smoothed centre further than this from its detection falls
                                       # back to the detection (motion-model failure, not noise) ...
    outlier_run_s: float = 1.0         # ... unless it is one of a run of such detections shorter than this: an
                                       # outlier (a sparse or mislocated detection), smoothed over instead (0: off)
    detection_weight: float = 0.0      # box score = track_score^(1-a) * detection_score^a (0: track score only, chosen on
                                       # the tuning logs: 25.1 % vs 26.8 % box error at 0.5)
    nms_iou: float = 0.1               # per frame, a box overlapping a higher-scored box of the same class group by
                                       # more than this BEV IoU is a duplicate track's and dropped (1: keep all)
    proposals: ProposalCfg = field(default_factory=ProposalCfg)  # cluster proposals as extra weak detections
                                       # (labeler/refine/proposals.py; off by default)
    rescore: RescoreCfg = field(default_factory=RescoreCfg)  # learned box scores (labeler/refine/rescore.py)


def _frames(seconds: float, dt_s: float) -> int:
    """Window/extent in frames for a duration at frame spacing ``dt_s`` (at least 1 for windows)."""
    return max(1, int(round(seconds / max(dt_s, 1e-3))))


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


def static_spread(x, y, w, q: float = 0.8) -> float:
    """The ``q`` quantile of the detections' distances from their weighted-median centre. A track is static when
    this is small: robust to a few outlier detections (up to 1 - q of them), but a car that waits and then drives
    off is not static (comparing the medians of the first and second half called it static when it waited for
    more than half of each half, and pinned its moving frames to the stop)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return 0.0
    cx, cy = weighted_quantile(x, w), weighted_quantile(y, w)
    return float(np.quantile(np.hypot(x - cx, y - cy), q))


def _running_median(v: np.ndarray, window: int) -> np.ndarray:
    s = pd.Series(v)
    return s.rolling(window, center=True, min_periods=1).median().to_numpy()


def _frame_grid(frame_times_ns) -> np.ndarray:
    return np.asarray(sorted(set(int(t) for t in frame_times_ns)), dtype=np.int64)


def track_evidence(det: pd.DataFrame, detector_first: bool = True) -> pd.DataFrame:
    """The rows of one track that give it its score, class and size: with ``detector_first``, its detector rows
    when it has any (cluster proposals, column ``is_proposal``, then only add frames: they never lower a detected
    track's score or change its class and size); otherwise, or for a track of proposals alone, every row."""
    if not detector_first or "is_proposal" not in det.columns:
        return det
    mine = det[~det["is_proposal"].astype(bool)]
    return mine if len(mine) else det


def _score_weights(det: pd.DataFrame) -> np.ndarray:
    """Per-detection weights of a track's estimates: the score, clipped to [0.05, 1]."""
    return np.clip(det["score"].to_numpy(np.float64), 0.05, 1.0)


def short_runs(flags, times_s, max_run_s: float) -> list[tuple[int, int]]:
    """The runs of consecutive True entries of ``flags`` that span less than ``max_run_s`` (first to last time of
    the run), as (first, last) index pairs."""
    f = np.asarray(flags, dtype=bool)
    t = np.asarray(times_s, dtype=np.float64)
    out = []
    k = 0
    while k < len(f):
        if not f[k]:
            k += 1
            continue
        e = k
        while e + 1 < len(f) and f[e + 1]:
            e += 1
        if t[e] - t[k] < max_run_s:
            out.append((k, e))
        k = e + 1
    return out


OUTLIER_NEIGHBOURS = 3   # detections each side of a candidate outlier run that must fit the track without it


def _robust_smooth(times_s, z_xy, rv, pos, states, accel: float, cfg: RefineCfg, iters: int = 2):
    """Re-smooth without outlier detections. A candidate is a run of detections further than ``max_shift_m`` from
    the smoothed centre, shorter than ``outlier_run_s``; it is an outlier when, smoothed without it, the run is
    still that far and its :data:`OUTLIER_NEIGHBOURS` detections each side lie within half of it (the track goes
    on as before: a sparse or mislocated detection). A step that stays (an identity switch, a manoeuvre the motion
    model misses) fails that test and is left to the ``max_shift_m`` fallback. Returns (states, per-detection
    outlier mask)."""
    outlier = np.zeros(len(pos), dtype=bool)
    meas = z_xy[pos]
    for _ in range(iters):
        far = np.hypot(*(states[pos, :2] - meas).T) > cfg.max_shift_m
        found = False
        for k, e in short_runs(far & ~outlier, times_s[pos], cfg.outlier_run_s):
            trial = outlier.copy()
            trial[k:e + 1] = True
            if trial.all():
                continue
            z = z_xy.copy()
            z[pos[trial]] = np.nan
            st, _ = rts_smooth(times_s, z, rv, accel, cfg.track.init_speed_sigma)
            res = np.hypot(*(st[pos, :2] - meas).T)
            idx = np.nonzero(~trial)[0]
            nb = np.r_[idx[idx < k][-OUTLIER_NEIGHBOURS:], idx[idx > e][:OUTLIER_NEIGHBOURS]]
            if (res[k:e + 1] > cfg.max_shift_m).all() and (res[nb] <= 0.5 * cfg.max_shift_m).all():
                outlier, states, found = trial, st, True
        if not found:
            break
    return states, outlier


def refine_track(det: pd.DataFrame, grid_ns: np.ndarray, cfg: RefineCfg) -> tuple[pd.DataFrame, np.ndarray]:
    """Refined world-frame boxes of one track (rows of :func:`to_world` output sharing a track id).

    Returns (rows with ``timestamp_ns, wx, wy, wz, wyaw, l, w, h, source, raw_index``, per-detection flipped mask
    in ``det`` order)."""
    det = det.sort_values(["timestamp_ns", "score"], ascending=[True, False])
    det = det[~det["timestamp_ns"].duplicated()]  # one detection per frame (the tracker never assigns two)
    ts = det["timestamp_ns"].to_numpy(np.int64)
    w = _score_weights(det)
    lo, hi = np.searchsorted(grid_ns, ts[0]), np.searchsorted(grid_ns, ts[-1])
    dt_s = float(np.median(np.diff(grid_ns))) / 1e9 if len(grid_ns) > 1 else 0.1
    ext = int(round(cfg.extrapolate_s / max(dt_s, 1e-3))) if len(ts) >= cfg.min_hits else 0
    lo, hi = max(0, lo - ext), min(len(grid_ns) - 1, hi + ext)
    g = grid_ns[lo:hi + 1]
    pos = np.searchsorted(g, ts)
    n = len(g)
    z_xy = np.full((n, 2), np.nan)
    z_xy[pos] = det[["wx", "wy"]].to_numpy(np.float64)
    rv = np.full(n, 1.0)
    rv[pos] = cfg.track.meas_sigma_m ** 2 / np.maximum(w, 0.1)
    ev = track_evidence(det, cfg.proposals.detector_first)
    w_ev = _score_weights(ev)
    cat = vote_class(ev["category"], w_ev)
    accel = CLASS_ACCEL.get(cat, DEFAULT_ACCEL)
    states, _ = rts_smooth(g / 1e9, z_xy, rv, accel, cfg.track.init_speed_sigma)
    outlier = np.zeros(len(ts), dtype=bool)
    if cfg.outlier_run_s > 0 and len(ts) >= 3:
        states, outlier = _robust_smooth(g / 1e9, z_xy, rv, pos, states, accel, cfg)
    speed = np.hypot(states[:, 2], states[:, 3])
    static = static_spread(det["wx"].to_numpy(), det["wy"].to_numpy(), w) < cfg.static_max_disp_m
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
        sm = circular_smooth(yaw_full, _frames(cfg.yaw_window_s, dt_s))
        yaw_full = np.where(moving, motion, sm)
        # a smoothed centre far from its own detection means the motion model failed there (a manoeuvre, or an
        # identity switch): keep the detection's centre and heading at that frame
        meas = det[["wx", "wy"]].to_numpy(np.float64)
        far = (np.hypot(*(states[pos, :2] - meas).T) > cfg.max_shift_m) & ~outlier
        states[pos[far], :2] = meas[far]
        yaw_full[pos[far]] = fixed[far]
    z_full = np.full(n, np.nan)
    z_full[pos] = det["wz"].to_numpy(np.float64)
    z_full = pd.Series(z_full).interpolate(limit_direction="both").to_numpy()
    z_full = _running_median(z_full, _frames(cfg.z_window_s, dt_s))
    size = [weighted_quantile(ev[c], w_ev, cfg.size_quantile) for c in ("l", "w", "h")]
    # which grid frames to emit: detected ones, and missed ones inside gaps whose detections are <= max_gap_s apart
    has = np.zeros(n, dtype=bool)
    has[pos] = True
    emit = has.copy()
    gaps = np.diff(pos) - 1
    for a, b, gap in zip(pos[:-1], pos[1:], gaps):
        if gap > 0 and (g[b] - g[a]) / 1e9 <= cfg.max_gap_s + 1e-6:
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


def suppress_duplicates(rows: list[dict], iou: float) -> list[dict]:
    """Per frame, drop a refined box whose BEV IoU with a higher-ranked box of the same class group exceeds ``iou``
    (rank: boxes of tracks with detector boxes first, ``proposals_only`` tracks after them; then score)
    (two tracks on one object: the detector's duplicates become duplicate tracks). Rows hold world boxes in
    ``wbox``; ``iou >= 1`` keeps everything."""
    from labeler.geometry.boxes import bev_iou
    from labeler.refine.tracking import group_of

    if iou >= 1.0 or not rows:
        return rows
    by_ts: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_ts.setdefault(r["timestamp_ns"], []).append(i)
    drop = set()
    for idx in by_ts.values():
        if len(idx) < 2:
            continue
        # a track with detector boxes outranks a track of cluster proposals alone (a proposal never removes a
        # detected object's box), then the higher score wins
        idx = sorted(idx, key=lambda i: (bool(rows[i].get("proposals_only", False)), -rows[i]["score"]))
        b = np.array([rows[i]["wbox"] for i in idx], dtype=np.float64)
        ov = bev_iou(b, b)
        grp = [group_of(rows[i]["category"]) for i in idx]
        kept: list[int] = []
        for a in range(len(idx)):
            if any(ov[a, k] > iou and grp[a] == grp[k] for k in kept):
                drop.add(idx[a])
            else:
                kept.append(a)
    return [r for i, r in enumerate(rows) if i not in drop]


def refine_log(preds, world_from_lidar: dict[int, np.ndarray], frame_times_ns=None, cfg: RefineCfg = RefineCfg(),
               log_id: str | None = None, proposals=None, return_features: bool = False):
    """Refine one log's single-frame detections.

    Args:
        preds: pyarrow Table or DataFrame, one row per box: ``timestamp_ns, object_id, x, y, z, l, w, h, yaw,
            category, score, num_points`` (LiDAR frame, e.g. the log's rows of PREDICTIONS_3D), optional
            ``log_id``, ``uncertainty``.
        world_from_lidar: ``timestamp_ns -> 4x4`` pose of every frame (``Frame.world_from_lidar``).
        frame_times_ns: the log's frame timestamps (default: the keys of ``world_from_lidar``).
        log_id: written into the output (default: ``preds.log_id``).
        proposals: optional extra detections from another source (cluster proposals,
            :func:`labeler.refine.proposals.log_proposals`: ``timestamp_ns, object_id, x..yaw, category, score,
            num_points``), tracked together with ``preds``. A refined box whose detection is a proposal has
            ``source = "proposal"`` and no ``raw_object_id``; proposals are not rows of ``raw``.
        return_features: also return the refined boxes' feature rows (:data:`labeler.refine.rescore.FEATURES`,
            one per row of ``refined``), to train the box rescorer.

    Returns:
        ``(refined, raw)``: ``refined`` (:data:`REFINED_SCHEMA`, LiDAR frame of each frame, score = track score
        blended with the detection's (``detection_weight``; filled-in boxes: track score x factor),
        ``source`` detected|interpolated|proposal, ``raw_object_id`` of the detection it refines or null) and ``raw``
        (:data:`RAW_SCHEMA`: the input boxes with their ``track_id`` (null: untracked), ``kept`` (its track
        survived) and ``yaw_flipped`` (its heading was fixed by 180 deg)); with ``return_features`` a third
        item, the feature matrix. With ``cfg.rescore.enabled`` every refined box's score is the box rescorer's
        probability that it is right (before duplicate suppression, which ranks by it).
    """
    df = preds.to_pandas() if isinstance(preds, pa.Table) else pd.DataFrame(preds).copy()
    df = df.reset_index(drop=True)
    if log_id is None:
        log_id = str(df["log_id"].iloc[0]) if len(df) and "log_id" in df.columns else ""
    if "object_id" not in df.columns:
        df["object_id"] = [f"p{k:04d}" for k in range(len(df))]
    if "num_points" not in df.columns:
        df["num_points"] = -1
    n_raw = len(df)
    if proposals is not None and len(proposals):
        pr = pd.DataFrame(proposals).reset_index(drop=True)
        missing = sorted({"timestamp_ns", *BOX_COLUMNS, "category", "score"} - set(pr.columns))
        if missing:
            raise ValueError(f"refine_log: proposals lack column(s) {missing}; build them with "
                             "labeler.refine.proposals.log_proposals")
        if "object_id" not in pr.columns:
            pr["object_id"] = [f"c{k:04d}" for k in range(len(pr))]
        if "num_points" not in pr.columns:
            pr["num_points"] = -1
        df = pd.concat([df, pr], ignore_index=True)
    is_proposal = np.arange(len(df)) >= n_raw
    grid = _frame_grid(frame_times_ns if frame_times_ns is not None else world_from_lidar.keys())
    raw_track = np.full(len(df), None, dtype=object)
    kept = np.zeros(len(df), dtype=bool)
    flipped = np.zeros(len(df), dtype=bool)
    rows = []
    want_features = return_features or cfg.rescore.enabled
    ego_xy = {int(t): np.asarray(m, dtype=np.float64)[:2, 3] for t, m in world_from_lidar.items()}
    if len(df):
        wdf = to_world(df, world_from_lidar)
        wdf["is_proposal"] = is_proposal
        tids = track(wdf, grid, cfg.track)
        for tid in np.unique(tids[tids >= 0]):
            sel = wdf[tids == tid]
            for r in sel.index:
                raw_track[r] = f"t{tid:04d}"
            n_det = sel["timestamp_ns"].nunique()  # frames with a detection or a proposal
            ev = track_evidence(sel, cfg.proposals.detector_first)
            sc = ev["score"].to_numpy(np.float64)
            tscore = track_score(sc, n_det)
            if (n_det < cfg.min_hits and sc.max() < cfg.strong_score) or tscore < cfg.min_track_score:
                continue
            out, flips = refine_track(sel, grid, cfg)
            kept[sel.index] = True
            flipped[flips.index] = flips.to_numpy()
            cat = vote_class(ev["category"], ev["score"])
            proposals_only = bool(is_proposal[sel.index].all())
            feats = track_features(sel, ev, out, cat, tscore, grid, ego_xy) if want_features else None
            for k, r in enumerate(out.itertuples(index=False)):
                interp = r.source != "detected"
                if interp:
                    factor = cfg.interpolated_score_factor if r.source == "interpolated" else cfg.extrapolated_score_factor
                    box_score = tscore * factor
                else:
                    det_score = float(df.at[int(r.raw_index), "score"])
                    box_score = tscore ** (1.0 - cfg.detection_weight) * det_score ** cfg.detection_weight
                prop = not interp and bool(is_proposal[int(r.raw_index)])
                rows.append({"timestamp_ns": int(r.timestamp_ns), "track_id": f"t{tid:04d}",
                             "wbox": (r.wx, r.wy, r.wz, r.l, r.w, r.h, r.wyaw), "category": cat,
                             "score": box_score, "source": PROPOSAL_SOURCE if prop else r.source,
                             "raw_object_id": None if interp or prop else str(df.at[int(r.raw_index), "object_id"]),
                             "num_points": 0 if interp else int(df.at[int(r.raw_index), "num_points"]),
                             "proposals_only": proposals_only, "features": None if feats is None else feats[k]})
    if cfg.rescore.enabled and rows:
        p = load_scorer(cfg.rescore.model_path).predict(np.stack([r["features"] for r in rows]))
        for r, s in zip(rows, p):
            r["score"] = float(s)
    rows = suppress_duplicates(rows, cfg.nms_iou)
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
    df, raw_track, kept, flipped = df.iloc[:n_raw], raw_track[:n_raw], kept[:n_raw], flipped[:n_raw]
    raw = pa.table({"log_id": [log_id] * len(df), "timestamp_ns": df["timestamp_ns"].astype(np.int64),
                    "object_id": df["object_id"].astype(str), "track_id": list(raw_track),
                    **{c: df[c].astype(np.float64) for c in BOX_COLUMNS}, "category": df["category"].astype(str),
                    "score": df["score"].astype(np.float64), "num_points": df["num_points"].astype(np.int64),
                    "kept": kept, "yaw_flipped": flipped}, schema=RAW_SCHEMA)
    if return_features:
        feats = np.stack([r["features"] for r in rows]) if rows else np.zeros((0, len(FEATURES)))
        return refined, raw, feats
    return refined, raw
