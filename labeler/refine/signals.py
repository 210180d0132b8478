"""Uncertainty signals per box and per frame, and review selection from them (pure functions).

Each signal is a small pure function whose answer can be checked by hand (tests/refine/test_signals.py):

* :func:`score_band` - the detector score is in the ambiguous band ``[low, high)``;
* :func:`tta_disagreement` - the test-time-augmentation spread (``Detections.uncertainty``, optional) is large;
* :func:`track_flicker` - temporal flicker from tracking: a track that appears and vanishes (too short to keep),
  class switches along a track, 180 deg heading flips;
* :func:`likely_false_positive` - a box with almost no LiDAR points;
* :func:`above_ground_clusters` + :func:`unexplained_clusters` - an above-ground point cluster with enough
  points that no box explains (a likely miss);
* :func:`rarity` - a class that is rare in the corner-case bank, or a size far from
  :data:`labeler.classes.TYPICAL_SIZE_M`;
* :func:`ego_stopped` - the ego vehicle stands still (the stop is a scene worth one look);
* sensor-health flags from :mod:`labeler.pipeline.filters` are passed in as they are.

:func:`frame_signals` turns one frame's signals into a priority with reasons; :func:`select_diverse` picks
frames within a budget, one frame per *event* (a reason that holds over consecutive frames, or along one track,
is one event: once a frame of it is picked, the reason no longer raises the priority of the other frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from labeler.classes import TYPICAL_SIZE_M

# weight of each reason kind in the frame priority (kind = the part before ':')
REASON_WEIGHTS: dict[str, float] = {
    # corner-case causes: a sensor fault, a rare or odd object, a stop (one look each)
    "lidar_sector_dropout": 1.5,
    "camera_black": 1.5,
    "camera_overexposed": 1.5,
    "rare_class": 1.5,
    "unusual_size": 1.2,
    "ego_stopped": 1.2,
    # pre-label uncertainty
    "camera_time_skew": 0.3,
    "camera_blurred": 0.1,
    "missed_cluster": 0.3,
    "likely_fp": 0.2,
    "tta_disagreement": 0.3,
    "short_track": 0.15,
    "class_switch": 0.15,
    "yaw_flip": 0.05,
    "uncertain_score": 0.1,
    "no_accepted_labels": 0.5,
}
DEFAULT_REASON_WEIGHT = 0.2
# the corner-case causes above (one look each); select_diverse opens their events before pre-label uncertainty
CORNER_TIER = 100.0
CORNER_CASE_KINDS = frozenset({"lidar_sector_dropout", "camera_black", "camera_overexposed", "rare_class",
                               "unusual_size", "ego_stopped"})
SIZE_SPREAD = 0.18  # relative spread of sizes per class (same as labeler.pipeline.scoring)


@dataclass(frozen=True)
class SignalCfg:
    score_low: float = 0.3               # score band [low, high) = uncertain
    score_high: float = 0.6
    tta_threshold: float = 0.3           # uncertainty above = disagreement
    fp_max_points: int = 5               # a box with fewer points is a likely false positive
    miss_min_points: int = 40            # an unexplained cluster with at least this many points = likely miss
    miss_margin_m: float = 0.5           # a cluster centre this close to a box counts as explained
    rare_fraction: float = 0.02          # a class under this share of the bank's boxes is rare
    size_sigma: float = 3.0              # size this many spreads from typical = unusual
    stopped_speed_mps: float = 0.3       # ego slower than this is stopped ...
    stopped_hold_s: float = 1.0          # ... there and for this long before and after (a stop's creeping ends out)
    min_hits: int = 3                    # tracks with fewer detections "appear and vanish"
    per_box_weight: float = 0.05         # priority per uncertain box (besides the distinct reasons)
    empty_min_boxes: int = 3             # a frame with this many pre-labels scoring >= score_low but none accepted
                                         # gets no_accepted_labels
    above_ground_clusters: bool = True   # pipeline: cluster each kept frame's points (in process_chunk) for the
                                         # missed_cluster signal (~0.1-0.3 s per frame); False: no miss signal


# ------------------------------------------------------------------------------------------------ per box


def score_band(scores, low: float = 0.3, high: float = 0.6) -> np.ndarray:
    """(N,) bool: the score is in ``[low, high)`` (neither a clear object nor clear clutter)."""
    s = np.asarray(scores, dtype=np.float64)
    return (s >= low) & (s < high)


def tta_disagreement(uncertainty, threshold: float = 0.3) -> np.ndarray:
    """(N,) bool: test-time-augmentation spread above ``threshold``; ``None`` (model without TTA) or NaN -> False."""
    if uncertainty is None:
        return np.zeros(0, dtype=bool)
    u = np.asarray(uncertainty, dtype=np.float64)
    return np.isfinite(u) & (u > threshold)


def likely_false_positive(num_points, max_points: int = 5) -> np.ndarray:
    """(N,) bool: fewer than ``max_points`` LiDAR points inside the box (``-1`` = unknown -> False)."""
    n = np.asarray(num_points, dtype=np.int64)
    return (n >= 0) & (n < max_points)


def unusual_size(categories, boxes, sigma: float = 3.0) -> np.ndarray:
    """(N,) bool: l, w or h is more than ``sigma`` log-spreads from the class's typical size (unknown class: True)."""
    from labeler.pipeline.scoring import unusual_size as _unusual_size

    return _unusual_size(categories, np.asarray(boxes, dtype=np.float64).reshape(-1, 7), sigma)


def rarity(categories, boxes, class_counts: dict[str, int] | None = None, rare_fraction: float = 0.02,
           sigma: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Per box (rare_class, unusual_size) bools. A class is rare when it makes less than ``rare_fraction`` of the
    boxes in ``class_counts`` (e.g. the corner-case bank's label counts; None: only classes without a typical size
    are rare)."""
    cats = [str(c) for c in categories]
    if class_counts:
        total = max(1, sum(class_counts.values()))
        rare = np.array([class_counts.get(c, 0) / total < rare_fraction for c in cats], dtype=bool)
    else:
        rare = np.array([c not in TYPICAL_SIZE_M for c in cats], dtype=bool)
    return rare, unusual_size(cats, boxes, sigma)


def track_flicker(raw: pd.DataFrame, min_hits: int = 3) -> pd.DataFrame:
    """Temporal flicker flags per raw box from tracking output (the ``raw`` table of
    :func:`labeler.refine.smoothing.refine_log`: ``track_id``, ``category``, ``score``, ``yaw_flipped``).

    Returns a DataFrame (same index) with bool columns ``short_track`` (its track has fewer than ``min_hits``
    detections: it appears and vanishes), ``class_switch`` (its class differs from its track's score-weighted
    majority class) and ``yaw_flip`` (its heading was 180 deg off the track's)."""
    out = pd.DataFrame(index=raw.index, data={"short_track": False, "class_switch": False, "yaw_flip": False})
    if len(raw) == 0:
        return out
    tid = raw["track_id"]
    has = tid.notna()
    if has.any():
        sizes = raw[has].groupby("track_id")["timestamp_ns"].transform("nunique")
        out.loc[sizes.index, "short_track"] = (sizes < min_hits).to_numpy()
        maj = raw[has].groupby(["track_id", "category"])["score"].sum().reset_index()
        maj = maj.sort_values("score", ascending=False).drop_duplicates("track_id").set_index("track_id")["category"]
        out.loc[has, "class_switch"] = (raw.loc[has, "category"].to_numpy() != maj.loc[tid[has]].to_numpy())
    out.loc[~has, "short_track"] = True
    if "yaw_flipped" in raw.columns:
        out["yaw_flip"] = raw["yaw_flipped"].fillna(False).astype(bool).to_numpy()
    return out


# ------------------------------------------------------------------------------------------------ per frame


def above_ground_groups(points, min_points: int = 10):
    """The geometric model's above-ground clusters of one sweep (:mod:`labeler.models.geometric`: its ground grid,
    height band and DBSCAN; LiDAR frame), for :func:`above_ground_clusters` and the cluster proposals
    (:mod:`labeler.refine.proposals`), which need the points themselves.

    Returns ``(obstacles (M, 3), their heights above the local ground (M,), ground grid or None, GeometricConfig,
    index arrays into obstacles, one per cluster of min_points..max_cluster_points points)``."""
    from labeler.models.geometric import GeometricConfig, GroundGrid, _groups, cluster

    cfg = GeometricConfig()
    p = np.asarray(points, dtype=np.float64)[:, :3]
    p = p[np.isfinite(p).all(axis=1)]
    r = cfg.max_range_m
    p = p[(np.abs(p[:, 0]) < r) & (np.abs(p[:, 1]) < r) & (np.hypot(p[:, 0], p[:, 1]) > cfg.ego_radius_m)]
    if len(p) < min_points:
        return np.zeros((0, 3)), np.zeros(0), None, cfg, []
    ground = GroundGrid.fit(p, cfg)
    hgt = p[:, 2] - ground.height_at(p[:, :2])
    keep = (hgt > cfg.min_height_m) & (hgt < cfg.max_height_m)
    obs, obs_h = p[keep], hgt[keep]
    groups = [idx for idx in _groups(cluster(obs, cfg)) if min_points <= len(idx) <= cfg.max_cluster_points]
    return obs, obs_h, ground, cfg, groups


def cluster_summary(obs: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """(K, 6) ``[cx, cy, cz, n_points, extent_x, extent_y]`` of each cluster (index arrays into ``obs``)."""
    out = []
    for idx in groups:
        c = obs[idx]
        ext = c[:, :2].max(0) - c[:, :2].min(0)
        out.append([*c.mean(0), len(idx), ext[0], ext[1]])
    return np.asarray(out, dtype=np.float64).reshape(-1, 6)


def above_ground_clusters(points, min_points: int = 10) -> np.ndarray:
    """Above-ground point clusters of one sweep, (K, 6) ``[cx, cy, cz, n_points, extent_x, extent_y]`` (LiDAR
    frame), using the geometric model's ground grid and DBSCAN (:func:`above_ground_groups`)."""
    obs, _, _, _, groups = above_ground_groups(points, min_points)
    return cluster_summary(obs, groups)


def unexplained_clusters(clusters, boxes, min_points: int = 40, margin_m: float = 0.5,
                         max_extent_m: float = 15.0) -> np.ndarray:
    """(K,) bool: cluster ``k`` has at least ``min_points`` points, is smaller than ``max_extent_m`` (not a
    building or a hedge) and its centre lies in no box's BEV footprint grown by ``margin_m``: a likely miss."""
    c = np.asarray(clusters, dtype=np.float64).reshape(-1, 6)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    big = (c[:, 3] >= min_points) & (np.maximum(c[:, 4], c[:, 5]) <= max_extent_m)
    if len(b) == 0 or len(c) == 0:
        return big
    d = c[:, None, :2] - b[None, :, :2]
    cs, sn = np.cos(b[:, 6]), np.sin(b[:, 6])
    lx = d[..., 0] * cs + d[..., 1] * sn
    ly = -d[..., 0] * sn + d[..., 1] * cs
    inside = (np.abs(lx) <= b[:, 3] / 2 + margin_m) & (np.abs(ly) <= b[:, 4] / 2 + margin_m)
    return big & ~inside.any(axis=1)


def ego_stopped(timestamps_ns, world_from_ego, threshold_mps: float = 0.3, hold_s: float = 0.0) -> np.ndarray:
    """(F,) bool per frame: ego speed (central differences of the poses) below ``threshold_mps`` at the frame and
    at every frame within ``hold_s`` of it (:func:`stopped_frames`)."""
    from labeler.pipeline.filters import ego_speed_mps

    ts = np.asarray(timestamps_ns)
    return stopped_frames(ts, ego_speed_mps(ts, np.asarray(world_from_ego)), threshold_mps, hold_s)


def stopped_frames(timestamps_ns, speed_mps, threshold_mps: float = 0.3, hold_s: float = 0.0) -> np.ndarray:
    """(F,) bool: the ego stands at a frame when its speed is below ``threshold_mps`` there and at every frame of
    the log within ``hold_s`` of it. A stop's first and last ``hold_s`` (the ego creeping to a halt, or pulling
    away) do not count, so the stop event's frames are ones where it really stands."""
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    slow = np.asarray(speed_mps, dtype=np.float64) < threshold_mps
    if hold_s <= 0 or len(ts) == 0:
        return slow
    o = np.argsort(ts, kind="stable")
    t, sl = ts[o], slow[o]
    fast = np.concatenate([[0], np.cumsum(~sl)])          # moving frames before each index
    lo = np.searchsorted(t, t - int(hold_s * 1e9), side="left")
    hi = np.searchsorted(t, t + int(hold_s * 1e9), side="right")
    out = np.empty(len(ts), dtype=bool)
    out[o] = sl & (fast[hi] - fast[lo] == 0)
    return out


@dataclass
class FrameSignal:
    priority: float
    reasons: list[str]          # "kind" or "kind:detail" (detail: track id or camera), one per distinct cause
    uncertain_boxes: int


def frame_signals(scores, num_points, categories, boxes, *, uncertainty=None, track_ids=None, flicker=None,
                  clusters=None, health_flags=(), stopped: bool = False, class_counts=None,
                  explain_boxes=None, cfg: SignalCfg = SignalCfg()) -> FrameSignal:
    """Priority and reasons of one frame from its boxes' signals.

    Args:
        scores, num_points, categories, boxes: the frame's pre-labels (LiDAR frame).
        uncertainty: per-box TTA spread (``getattr(det, "uncertainty", None)``) or None.
        track_ids: per-box track id (reasons then name the track, so one track = one event) or None.
        flicker: :func:`track_flicker` rows of these boxes (bool columns) or None.
        clusters: :func:`above_ground_clusters` of the frame's points or None.
        health_flags: sensor-health flags of the frame (``lidar_sector_dropout``, ``camera_black:front``, ...).
        stopped: the ego stands still.
        class_counts: class -> box count of the corner-case bank (rarity) or None.
        explain_boxes: (M, 7) boxes a cluster must fall in to count as explained (default ``boxes``); pass the
            labels that will be kept (e.g. refined boxes above the accept score) so a miss of the final labels
            counts, not one hidden by a low-score raw box. When given and empty while the frame has at least
            ``cfg.empty_min_boxes`` pre-labels scoring >= ``cfg.score_low``, the frame gets ``no_accepted_labels`` (auto-accepting it would
            label nothing although the detector saw objects).
    """
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    tids = [None] * n if track_ids is None else list(track_ids)
    reasons: list[str] = []
    uncertain = np.zeros(n, dtype=bool)

    def add(kind: str, mask):
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        for i in np.nonzero(mask)[0]:
            r = kind if tids[i] is None else f"{kind}:{tids[i]}"
            if r not in reasons:
                reasons.append(r)
        return mask

    uncertain |= score_band(s, cfg.score_low, cfg.score_high)
    if uncertain.any():
        reasons.append("uncertain_score")
    if uncertainty is not None and n:
        uncertain |= add("tta_disagreement", tta_disagreement(uncertainty, cfg.tta_threshold))
    uncertain |= add("likely_fp", likely_false_positive(num_points, cfg.fp_max_points))
    if n:
        rare, odd = rarity(categories, b, class_counts, cfg.rare_fraction, cfg.size_sigma)
        uncertain |= add("rare_class", rare)
        uncertain |= add("unusual_size", odd)
    if flicker is not None and n:
        for col in ("short_track", "class_switch", "yaw_flip"):
            uncertain |= add(col, np.asarray(flicker[col], dtype=bool))
    if clusters is not None:
        eb = b if explain_boxes is None else np.asarray(explain_boxes, dtype=np.float64).reshape(-1, 7)
        miss = unexplained_clusters(clusters, eb, cfg.miss_min_points, cfg.miss_margin_m)
        for k in np.nonzero(miss)[0]:
            reasons.append("missed_cluster")
        uncertain_misses = int(miss.sum())
    else:
        uncertain_misses = 0
    plausible = int((s >= cfg.score_low).sum())
    if explain_boxes is not None and len(np.asarray(explain_boxes).reshape(-1, 7)) == 0 and plausible >= cfg.empty_min_boxes:
        reasons.append("no_accepted_labels")
    for f in health_flags:
        if f not in reasons:
            reasons.append(f)
    if stopped:
        reasons.append("ego_stopped")
    kinds = {}
    for r in reasons:
        k = r.split(":")[0]
        kinds[k] = REASON_WEIGHTS.get(k, DEFAULT_REASON_WEIGHT)
    n_unc = int(uncertain.sum()) + uncertain_misses
    priority = sum(kinds.values()) + cfg.per_box_weight * n_unc
    # keep reasons unique (missed_cluster may repeat) but count the misses above
    seen, uniq = set(), []
    for r in reasons:
        if r not in seen:
            seen.add(r)
            uniq.append(r)
    return FrameSignal(float(priority), uniq, n_unc)


# ------------------------------------------------------------------------------------------------ selection


def event_ids(log_ids, timestamps_ns, reasons: list[list[str]], max_gap_s: float = 1.5) -> list[list[str]]:
    """Event id per reason per frame: the same reason string in consecutive frames of a log (no more than
    ``max_gap_s`` apart) is one event; a reason naming a track (``kind:t0003``) is one event along that track."""
    order = sorted(range(len(reasons)), key=lambda i: (str(log_ids[i]), int(timestamps_ns[i])))
    last: dict[tuple, tuple[int, str]] = {}
    out: list[list[str]] = [[] for _ in reasons]
    counter = 0
    for i in order:
        for r in reasons[i]:
            key = (str(log_ids[i]), r)
            prev = last.get(key)
            track_reason = ":t" in r
            if prev is not None and (track_reason or int(timestamps_ns[i]) - prev[0] <= max_gap_s * 1e9):
                eid = prev[1]
            else:
                eid = f"{log_ids[i]}|{r}|{counter}"
                counter += 1
            last[key] = (int(timestamps_ns[i]), eid)
            out[i].append(eid)
    return out


def budget_frames(n: int, budget_fraction: float, max_frames: int | None = None) -> int:
    k = int(math.ceil(budget_fraction * n - 1e-9))
    return max(0, min(k, n, max_frames if max_frames is not None else n))


SPREAD_FLOOR = 0.05  # select_diverse(spread_s > 0): every frame is worth covering a little (confident frames miss too)


def select_diverse(log_ids, timestamps_ns, base_priority, reasons: list[list[str]], budget_fraction: float,
                   max_frames: int | None = None, min_gap_s: float = 0.0, event_gap_s: float = 1.5,
                   corner_first: bool = True, spread_s: float = 0.0) -> np.ndarray:
    """Boolean mask of frames for review: greedy, each step takes the frame with the highest
    ``base_priority + sum over reason kinds of the weight of the kind if one of its events is not yet covered``
    (ties: earlier), so a
    corner-case event sends one frame, then the budget moves on to other events. Frames within ``min_gap_s`` of a
    picked frame of the same log are skipped.

    With ``corner_first`` frames are ranked first by the summed weights of the corner-case kinds
    (:data:`CORNER_CASE_KINDS`) whose events they open (a sensor fault 1.5 before an odd size 1.2), then as above,
    so a frame that opens one outranks every frame that only adds pre-label uncertainty: without it, a frame with
    40 uncertain boxes (base 2.0 plus its uncertainty reasons) beat a LiDAR sector dropout (1.5).

    With ``spread_s`` > 0 (review propagation, :mod:`labeler.refine.propagate`: a reviewed frame also fixes its
    neighbours) a frame's own ``base_priority`` is replaced by what it would cover: the sum over the frames of its
    log of ``(base_priority + SPREAD_FLOOR) x`` the rise of their coverage, where a frame's coverage is
    ``max(0, 1 - |dt| / spread_s)`` to its nearest pick (facility location: spreads picks over each log)."""
    n = len(base_priority)
    k = budget_frames(n, budget_fraction, max_frames)
    chosen = np.zeros(n, dtype=bool)
    if k == 0:
        return chosen
    ev = event_ids(log_ids, timestamps_ns, reasons, event_gap_s)
    w = [[REASON_WEIGHTS.get(r.split(":")[0], DEFAULT_REASON_WEIGHT) for r in rs] for rs in reasons]
    base = np.asarray(base_priority, dtype=np.float64)
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    covered: set[str] = set()
    blocked = np.zeros(n, dtype=bool)
    kinds = [[r.split(":")[0] for r in rs] for rs in reasons]

    groups: dict[str, list[int]] = {}
    for j, x in enumerate(log_ids):
        groups.setdefault(str(x), []).append(j)
    by_log = {lid: np.asarray(idx)[np.argsort(ts[idx], kind="stable")] for lid, idx in groups.items()}
    cover = np.zeros(n)   # spread_s: how well each frame is covered by the picks so far

    def coverage(i: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames of i's log, the coverage a pick of i gives each)."""
        idx = by_log[str(log_ids[i])]
        return idx, np.clip(1.0 - np.abs(ts[idx] - ts[i]) / (spread_s * 1e9), 0.0, None)

    def own(i: int) -> float:
        if spread_s <= 0:
            return base[i]
        idx, kern = coverage(i)
        return float(np.sum((base[idx] + SPREAD_FLOOR) * np.clip(kern - cover[idx], 0.0, None)))

    def value(i: int) -> float:
        # each reason kind counts once per frame (ten new yaw flips are not worth more than one sensor failure)
        best: dict[str, float] = {}
        for e, wi, kd in zip(ev[i], w[i], kinds[i]):
            if e not in covered:
                best[kd] = max(best.get(kd, 0.0), wi)
        corner = sum(wk for kd, wk in best.items() if kd in CORNER_CASE_KINDS) if corner_first else 0.0
        return CORNER_TIER * corner + own(i) + sum(best.values())

    # lazy greedy: a frame's value only falls as events get covered, so a stored value is an upper bound and only
    # the top of the heap needs recomputing (the same picks as recomputing every frame each step, in ~n log n)
    import heapq

    heap = [(-value(i), int(ts[i]), i) for i in range(n)]
    heapq.heapify(heap)
    deferred: list = []
    picked = 0
    while picked < k:
        if not heap:
            if not deferred:
                break
            blocked[:] = False  # temporal diversity is a preference: once every frame is near a pick, fill up
            for item in deferred:
                heapq.heappush(heap, item)
            deferred = []
        neg, t_i, i = heapq.heappop(heap)
        if blocked[i]:
            deferred.append((neg, t_i, i))
            continue
        v = value(i)
        if v < -neg:
            heapq.heappush(heap, (-v, t_i, i))
            continue
        chosen[i] = True
        picked += 1
        covered.update(ev[i])
        if spread_s > 0:
            idx, kern = coverage(i)
            cover[idx] = np.maximum(cover[idx], kern)
        if min_gap_s > 0:
            idx = by_log[str(log_ids[i])]
            lo, hi = np.searchsorted(ts[idx], [ts[i] - min_gap_s * 1e9, ts[i] + min_gap_s * 1e9], side="left")
            near = idx[lo:hi]
            blocked[near[np.abs(ts[near] - ts[i]) < min_gap_s * 1e9]] = True
    return chosen


def select_by_priority(log_ids, timestamps_ns, priorities, budget_fraction: float, min_gap_s: float = 1.0,
                       max_frames: int = 10**9) -> np.ndarray:
    """Plain priority order within the budget with temporal diversity: a wrapper of
    :func:`labeler.pipeline.selection.select_for_review` (min_priority 0: every frame may be picked)."""
    from labeler.pipeline.config import SelectionCfg
    from labeler.pipeline.selection import select_for_review

    cfg = SelectionCfg(budget_fraction=budget_fraction, max_frames=max_frames, min_gap_s=min_gap_s, min_priority=-np.inf)
    chosen = select_for_review(log_ids, timestamps_ns, priorities, cfg)
    # temporal diversity is a preference: when the gap leaves budget unused, fill it in priority order
    left = budget_frames(len(chosen), budget_fraction, max_frames) - int(chosen.sum())
    if left > 0:
        pr = np.asarray(priorities, dtype=np.float64)
        order = np.lexsort((np.asarray(timestamps_ns, dtype=np.int64), -pr))
        chosen[[i for i in order if not chosen[i]][:left]] = True
    return chosen
