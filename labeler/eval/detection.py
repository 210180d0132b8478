"""Honest 3D detection evaluation: nuScenes-style centre-distance AP and KITTI-style BEV-IoU AP.

Everything here is a pure function of a prediction table and a ground-truth table (pyarrow Tables or
pandas DataFrames). Both need ``log_id, timestamp_ns, category, x, y, z, l, w, h, yaw`` (the box
convention of :mod:`labeler.geometry.boxes`: LiDAR frame, geometric centre); predictions also need
``score``. A GT table may carry ``num_lidar_pts`` (as the native log format's ``annotations.parquet``
does, ``-1`` = unknown). A frame is ``(log_id, timestamp_ns)``; boxes only ever match within a frame.

Centre-distance AP (:func:`nuscenes_ap`, ``EvalResult.ap``) reproduces nuscenes-devkit 1.1.11
(``nuscenes/eval/detection/algo.py``: ``accumulate`` + ``calc_ap`` + ``calc_tp``) exactly:

* per class, predictions sorted by score descending over the whole set; ties are broken as the devkit's
  ``sorted((score, i))[::-1]`` does (the later prediction in the devkit's list order first, the devkit's list
  being frames in order of first appearance in the prediction table, rows in table order within a frame);
* each prediction takes the closest not-yet-taken GT of its class in its frame (BEV centre distance, the
  first GT in table order on a tie) and is a TP when that distance is ``< dist_th`` (strict), else a FP;
* ``precision = cumTP / (cumTP + cumFP)``, ``recall = cumTP / num_gt``, resampled on 101 recall points
  ``linspace(0, 1, 101)`` with ``np.interp(grid, recall, precision, right=0)`` (NOT the monotone
  envelope: the devkit interpolates the raw curve);
* ``AP = mean(max(precision[round(100 * min_recall) + 1:] - min_precision, 0)) / (1 - min_precision)``;
* a class with no GT, or with no TP at all, gets the devkit's "no predictions" curve: AP 0. Like the devkit,
  such a class still counts in the mAP (set ``EvalConfig.map_classes_with_gt_only`` to leave it out);
* the range filter keeps boxes (GT and predictions) with BEV distance from the LiDAR origin ``< max range``
  (the devkit's ``ego_dist < class_range``) and drops GT boxes with ``num_lidar_pts == 0`` (``-1`` is kept),
  as the devkit's ``filter_eval_boxes`` does (its bike-rack filter has no counterpart here).
* TP errors (at ``tp_dist_threshold_m``, 2 m by default): ATE (BEV centre distance, m), ASE (1 - IoU of the
  sizes aligned at a common centre and heading), AOE (absolute yaw difference, rad, period 2 pi; NaN for
  ``traffic_cone`` as in the devkit). Velocity and attribute errors need data we do not have.

BEV-IoU AP (``EvalResult.iou_ap``, :func:`bev_iou_ap`): the same greedy matching (score descending, each GT
at most once per frame) but each prediction takes the not-yet-taken GT with the highest rotated BEV IoU
(:func:`labeler.geometry.boxes.bev_iou`, exact polygon clipping, computed only for pairs whose footprint
circles overlap) and is a TP when IoU ``>= threshold``. AP is the KITTI-style N-point interpolated AP:
``mean over r in R of max(precision[recall >= r])`` (0 where recall r is never reached), with
``R = {1/40, 2/40, ..., 1}`` for 40 points (the KITTI benchmark's "R40", the default) or
``R = {0, 0.1, ..., 1}`` for 11 points (Pascal VOC 2007 / the original KITTI). This is NOT the official
KITTI evaluation (no difficulty levels, no DontCare regions); it is the same matching as above with IoU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from labeler.classes import CLASSES
from labeler.geometry.boxes import BOX_COLUMNS, bev_iou

__all__ = [
    "NUSCENES_CLASS_RANGE_M",
    "EvalConfig",
    "PRCurve",
    "EvalResult",
    "evaluate",
    "nuscenes_ap",
    "nuscenes_curve",
    "bev_iou_ap",
    "recall_at_iou",
    "calc_ap",
    "calc_tp",
    "interpolated_ap",
]

# The nuScenes detection challenge's per-class evaluation ranges (metres), for classes labeler shares with it
# (cyclist ~ bicycle). Pass ``class_max_range_m=tuple(NUSCENES_CLASS_RANGE_M.items())`` to use them.
NUSCENES_CLASS_RANGE_M: dict[str, float] = {
    "car": 50.0, "truck": 50.0, "bus": 50.0, "pedestrian": 40.0, "cyclist": 40.0, "traffic_cone": 30.0,
}

_NELEM = 101  # the devkit's DetectionMetricData.nelem
_TP_METRICS = ("trans_err", "scale_err", "orient_err")
_TP_LABELS = {"trans_err": "ATE", "scale_err": "ASE", "orient_err": "AOE"}


@dataclass(frozen=True)
class EvalConfig:
    """Settings of :func:`evaluate`. Defaults are the nuScenes detection challenge's where it has one.

    Attributes:
        classes: classes evaluated and averaged into the mAP, in report order (default: labeler's CLASSES).
            Rows of other categories (e.g. ``animal``) are ignored on both sides.
        dist_thresholds_m: BEV centre-distance match thresholds (nuScenes: 0.5, 1, 2, 4 m).
        tp_dist_threshold_m: the threshold whose matches give the TP errors and the recall at ``score_threshold``
            (nuScenes: 2 m); must be one of ``dist_thresholds_m``.
        min_recall, min_precision: the devkit's ``calc_ap`` clipping (0.1, 0.1).
        max_range_m: keep GT and predictions whose BEV distance from the LiDAR origin is ``< max_range_m``
            (default 50 m, the nuScenes range for vehicles); None disables the filter.
        class_max_range_m: per-class overrides of ``max_range_m`` as ``((class, metres), ...)``,
            e.g. ``tuple(NUSCENES_CLASS_RANGE_M.items())``.
        ignore_empty_gt: drop GT boxes with ``num_lidar_pts == 0`` when that column exists (``-1`` = unknown, kept),
            as the devkit does.
        iou_thresholds: BEV IoU match threshold per class as ``((class, iou), ...)``: 0.5 for vehicles, 0.25 for
            pedestrians, cyclists and cones by default; classes not listed use ``default_iou_threshold``.
        default_iou_threshold: IoU threshold of classes not in ``iou_thresholds`` (0.5).
        iou_ap_points: 40 (KITTI R40, recall points 1/40..1) or 11 (recall points 0, 0.1, .., 1).
        score_threshold: the operating point of the per-class recall / precision "at score" columns (0.3).
        map_classes_with_gt_only: False (the devkit): a class without GT scores AP 0 and still counts in the mAP.
            True: such classes are reported but left out of both means.
    """

    classes: tuple[str, ...] = CLASSES
    dist_thresholds_m: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    tp_dist_threshold_m: float = 2.0
    min_recall: float = 0.1
    min_precision: float = 0.1
    max_range_m: float | None = 50.0
    class_max_range_m: tuple[tuple[str, float], ...] = ()
    ignore_empty_gt: bool = True
    iou_thresholds: tuple[tuple[str, float], ...] = (
        ("car", 0.5), ("truck", 0.5), ("bus", 0.5), ("pedestrian", 0.25), ("cyclist", 0.25), ("traffic_cone", 0.25),
    )
    default_iou_threshold: float = 0.5
    iou_ap_points: int = 40
    score_threshold: float = 0.3
    map_classes_with_gt_only: bool = False

    def __post_init__(self):
        if isinstance(self.class_max_range_m, Mapping):
            object.__setattr__(self, "class_max_range_m", tuple(self.class_max_range_m.items()))
        if isinstance(self.iou_thresholds, Mapping):
            object.__setattr__(self, "iou_thresholds", tuple(self.iou_thresholds.items()))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "dist_thresholds_m", tuple(float(t) for t in self.dist_thresholds_m))
        if not self.classes:
            raise ValueError("EvalConfig.classes is empty")
        if not self.dist_thresholds_m or any(t <= 0 for t in self.dist_thresholds_m):
            raise ValueError(f"dist_thresholds_m must be positive, got {self.dist_thresholds_m}")
        if float(self.tp_dist_threshold_m) not in self.dist_thresholds_m:
            raise ValueError(f"tp_dist_threshold_m {self.tp_dist_threshold_m} must be one of {self.dist_thresholds_m}")
        if not (0 <= self.min_precision < 1 and 0 <= self.min_recall <= 1):
            raise ValueError("need 0 <= min_precision < 1 and 0 <= min_recall <= 1")
        if self.iou_ap_points not in (11, 40):
            raise ValueError(f"iou_ap_points must be 11 or 40, got {self.iou_ap_points}")
        for _, t in self.iou_thresholds + ((None, self.default_iou_threshold),):
            if not 0 < t <= 1:
                raise ValueError(f"IoU thresholds must be in (0, 1], got {t}")

    def iou_threshold(self, category: str) -> float:
        return float(dict(self.iou_thresholds).get(category, self.default_iou_threshold))

    def max_range(self, category: str) -> float | None:
        return dict(self.class_max_range_m).get(category, self.max_range_m)


@dataclass
class PRCurve:
    """The devkit's DetectionMetricData for one class and threshold: 101-point resampled curves.

    ``recall`` is ``linspace(0, 1, 101)``; ``precision`` and ``confidence`` are the raw curves interpolated on it
    (0 beyond the highest recall reached); the ``*_err`` arrays are the cumulative-mean TP errors resampled by
    confidence, as in the devkit.
    """

    recall: np.ndarray
    precision: np.ndarray
    confidence: np.ndarray
    trans_err: np.ndarray
    scale_err: np.ndarray
    orient_err: np.ndarray
    num_gt: int = 0
    num_pred: int = 0
    num_tp: int = 0

    @classmethod
    def no_predictions(cls, num_gt: int = 0, num_pred: int = 0) -> PRCurve:
        return cls(np.linspace(0, 1, _NELEM), np.zeros(_NELEM), np.zeros(_NELEM),
                   np.ones(_NELEM), np.ones(_NELEM), np.ones(_NELEM), num_gt, num_pred, 0)

    @property
    def max_recall_ind(self) -> int:
        nz = np.nonzero(self.confidence)[0]
        return int(nz[-1]) if len(nz) else 0


@dataclass
class EvalResult:
    """What :func:`evaluate` found. Dicts are keyed by class (in ``config.classes`` order), then threshold."""

    config: EvalConfig
    ap: dict[str, dict[float, float]]             # centre-distance AP per class per distance threshold
    class_ap: dict[str, float]                    # mean over distance thresholds
    mean_ap: float                                # nuScenes mAP: mean over classes (and thresholds)
    iou_ap: dict[str, float]                      # BEV-IoU AP per class at config.iou_threshold(class)
    mean_iou_ap: float
    num_gt: dict[str, int]                        # after the range / empty-GT filter
    num_pred: dict[str, int]                      # after the range filter
    recall_at_score: dict[str, float]             # at tp_dist_threshold_m, predictions with score >= score_threshold
    precision_at_score: dict[str, float]
    iou_recall_at_score: dict[str, float]         # same operating point, matched by BEV IoU
    tp_errors: dict[str, dict[str, float]]        # class -> {"trans_err", "scale_err", "orient_err"}
    mean_tp_errors: dict[str, float]              # nan-mean over classes, as the devkit
    curves: dict[tuple[str, float], PRCurve] = field(default_factory=dict, repr=False)
    iou_pr: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)  # raw (recall, precision)

    def to_table(self) -> pd.DataFrame:
        """One row per class: counts, AP per distance threshold, mean AP, BEV-IoU AP, recall at score, TP errors."""
        rows = []
        for c in self.config.classes:
            r = {"class": c, "num_gt": self.num_gt[c], "num_pred": self.num_pred[c]}
            for t in self.config.dist_thresholds_m:
                r[f"AP@{t:g}m"] = self.ap[c][t]
            r["AP"] = self.class_ap[c]
            r["iou_thr"] = self.config.iou_threshold(c)
            r["AP_BEV_IoU"] = self.iou_ap[c]
            r["recall@score"] = self.recall_at_score[c]
            r["precision@score"] = self.precision_at_score[c]
            r["iou_recall@score"] = self.iou_recall_at_score[c]
            for m in _TP_METRICS:
                r[_TP_LABELS[m]] = self.tp_errors[c][m]
            rows.append(r)
        return pd.DataFrame(rows)

    def format(self, digits: int = 3) -> str:
        """A plain-text per-class table with the means (see :func:`labeler.eval.report.format_result`)."""
        from labeler.eval.report import format_result

        return format_result(self, digits=digits)

    def __str__(self) -> str:
        return self.format()


# ----------------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------------

_REQUIRED = ("log_id", "timestamp_ns", "category") + BOX_COLUMNS


@dataclass
class _Set:
    frame: np.ndarray     # (N,) int64 frame code; codes are ranked by first appearance in the prediction table
    row: np.ndarray       # (N,) int64 row index in the input table
    boxes: np.ndarray     # (N, 7)
    cat: np.ndarray       # (N,) object
    score: np.ndarray     # (N,) float64 (zeros for GT)
    npts: np.ndarray      # (N,) int64 (-1 when unknown)

    def take(self, m) -> _Set:
        return _Set(self.frame[m], self.row[m], self.boxes[m], self.cat[m], self.score[m], self.npts[m])


def _to_frame(t, what: str, need_score: bool) -> pd.DataFrame:
    if isinstance(t, pa.Table):
        cols = [c for c in (*_REQUIRED, "score", "num_lidar_pts") if c in t.column_names]
        df = t.select(cols).to_pandas()
    elif isinstance(t, pd.DataFrame):
        df = t
    else:
        raise TypeError(f"{what}: expected a pyarrow Table or pandas DataFrame, got {type(t).__name__}")
    need = _REQUIRED + (("score",) if need_score else ())
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}")
    return df


def _prepare(preds, gts, cfg: EvalConfig, classes) -> tuple[_Set, _Set]:
    p = _to_frame(preds, "predictions", need_score=True)
    g = _to_frame(gts, "ground truth", need_score=False)
    # frame codes in order of first appearance, predictions first (the devkit's EvalBoxes insertion order)
    keys = pd.MultiIndex.from_arrays([
        np.concatenate([p["log_id"].astype(str).to_numpy(), g["log_id"].astype(str).to_numpy()]),
        np.concatenate([p["timestamp_ns"].to_numpy(np.int64), g["timestamp_ns"].to_numpy(np.int64)]),
    ])
    codes, _ = pd.factorize(keys)
    codes = np.asarray(codes, dtype=np.int64)

    def make(df, fr, is_pred):
        n = len(df)
        boxes = df[list(BOX_COLUMNS)].to_numpy(np.float64).reshape(n, 7)
        score = df["score"].to_numpy(np.float64) if is_pred else np.zeros(n)
        npts = (df["num_lidar_pts"].fillna(-1).to_numpy(np.int64) if (not is_pred and "num_lidar_pts" in df.columns)
                else np.full(n, -1, dtype=np.int64))
        s = _Set(fr, np.arange(n, dtype=np.int64), boxes, df["category"].astype(str).to_numpy(object), score, npts)
        if not np.isfinite(boxes).all():
            raise ValueError(f"{'predictions' if is_pred else 'ground truth'}: non-finite box values")
        if is_pred and not np.isfinite(score).all():
            raise ValueError("predictions: non-finite scores")
        keep = np.isin(s.cat, list(classes))
        dist = np.sqrt(boxes[:, 0] ** 2 + boxes[:, 1] ** 2)   # the devkit's ego_dist
        for c in classes:
            rng = cfg.max_range(c)
            if rng is not None:
                keep &= ~((s.cat == c) & ~(dist < rng))
        if not is_pred and cfg.ignore_empty_gt:
            keep &= s.npts != 0
        return s.take(keep)

    return make(p, codes[: len(p)], True), make(g, codes[len(p):], False)


# ----------------------------------------------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------------------------------------------


def _devkit_order(p: _Set) -> np.ndarray:
    """Indices of ``p`` (one class) in the devkit's processing order: score descending, ties as the devkit."""
    listed = np.lexsort((p.row, p.frame))              # EvalBoxes.all order: frame by first appearance, then rows
    score = p.score[listed]
    pos = np.arange(len(listed))
    sortind = np.lexsort((pos, score))[::-1]           # sorted((score, i))[::-1]
    return listed[sortind]


def _groups(frame: np.ndarray) -> dict[int, np.ndarray]:
    """frame code -> indices into ``frame`` (ascending, so the given order is kept within a frame)."""
    if len(frame) == 0:
        return {}
    o = np.argsort(frame, kind="stable")
    f = frame[o]
    cuts = np.flatnonzero(np.diff(f)) + 1
    return {int(frame[s[0]]): s for s in (o[a:b] for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(f)]))}


def _center_dist(pb: np.ndarray, gb: np.ndarray) -> np.ndarray:
    dx = pb[:, None, 0] - gb[None, :, 0]
    dy = pb[:, None, 1] - gb[None, :, 1]
    return np.sqrt(dx * dx + dy * dy)


def _pair_bev_iou(pb: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """Rotated BEV IoU (Np, Ng), clipping polygons only for pairs whose footprint circles overlap."""
    out = np.zeros((len(pb), len(gb)))
    if len(pb) == 0 or len(gb) == 0:
        return out
    rp = np.hypot(pb[:, 3], pb[:, 4]) / 2
    rg = np.hypot(gb[:, 3], gb[:, 4]) / 2
    near = _center_dist(pb, gb) < rp[:, None] + rg[None, :]
    ri = np.flatnonzero(near.any(axis=1))
    ci = np.flatnonzero(near.any(axis=0))
    if len(ri) and len(ci):
        out[np.ix_(ri, ci)] = bev_iou(pb[ri], gb[ci])   # bev_iou rejects the far pairs itself
    return out


def _greedy(M: np.ndarray, th: float, lower_is_better: bool) -> np.ndarray:
    """Greedy one-to-one matching of rows (already in processing order) to columns. Returns column or -1 per row.

    Row i takes the best untaken column (the first one on a tie); a match needs ``M < th`` (distance) or
    ``M >= th`` (IoU), otherwise the row is unmatched and takes nothing.
    """
    n, m = M.shape
    out = np.full(n, -1, dtype=np.int64)
    if m == 0:
        return out
    taken = np.zeros(m, dtype=bool)
    bad = np.inf if lower_is_better else -np.inf
    for i in range(n):
        row = np.where(taken, bad, M[i])
        j = int(np.argmin(row)) if lower_is_better else int(np.argmax(row))
        if (row[j] < th) if lower_is_better else (row[j] >= th and row[j] > 0):
            taken[j] = True
            out[i] = j
    return out


def _match(p: _Set, g: _Set, order: np.ndarray, thresholds, kind: str) -> dict[float, np.ndarray]:
    """For predictions ``p[order]`` return, per threshold, the matched index into ``g`` (or -1) of each."""
    res = {t: np.full(len(order), -1, dtype=np.int64) for t in thresholds}
    pg = _groups(p.frame[order])
    gg = _groups(g.frame)
    for f, pi in pg.items():
        gi = gg.get(f)
        if gi is None:
            continue
        pb = p.boxes[order[pi]]
        gb = g.boxes[gi]
        if kind == "dist":
            M = _center_dist(pb, gb)
        else:
            M = _pair_bev_iou(pb, gb)
        for t in thresholds:
            j = _greedy(M, t, lower_is_better=(kind == "dist"))
            res[t][pi[j >= 0]] = gi[j[j >= 0]]
    return res


# ----------------------------------------------------------------------------------------------------------------
# Curves and APs (the devkit's accumulate / calc_ap / calc_tp)
# ----------------------------------------------------------------------------------------------------------------


def _cummean(x: np.ndarray) -> np.ndarray:
    if np.sum(np.isnan(x)) == len(x):
        return np.ones(len(x))
    sum_vals = np.nancumsum(x.astype(float))
    count_vals = np.cumsum(~np.isnan(x))
    return np.divide(sum_vals, count_vals, out=np.zeros_like(sum_vals), where=count_vals != 0)


def _yaw_diff(a: np.ndarray, b: np.ndarray, period: float = 2 * np.pi) -> np.ndarray:
    diff = (a - b + period / 2) % period - period / 2
    diff = np.where(diff > np.pi, diff - 2 * np.pi, diff)
    return np.abs(diff)


def _scale_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the (l, w, h) boxes aligned at a common centre and heading; rows of (N, 3)."""
    inter = np.prod(np.minimum(a, b), axis=1)
    return inter / (np.prod(a, axis=1) + np.prod(b, axis=1) - inter)


def _accumulate(p: _Set, g: _Set, order: np.ndarray, matched: np.ndarray, num_gt: int) -> PRCurve:
    """The devkit's ``accumulate`` given the matching of predictions ``p[order]``."""
    npred = len(order)
    if num_gt == 0:
        return PRCurve.no_predictions(0, npred)
    is_tp = matched >= 0
    if not is_tp.any():
        return PRCurve.no_predictions(num_gt, npred)
    tp = np.cumsum(is_tp.astype(np.int64)).astype(float)
    fp = np.cumsum((~is_tp).astype(np.int64)).astype(float)
    conf = p.score[order]
    prec = tp / (fp + tp)
    rec = tp / float(num_gt)
    rec_interp = np.linspace(0, 1, _NELEM)
    prec_i = np.interp(rec_interp, rec, prec, right=0)
    conf_i = np.interp(rec_interp, rec, conf, right=0)

    pb = p.boxes[order[is_tp]]
    gb = g.boxes[matched[is_tp]]
    match_conf = conf[is_tp]
    errs = {
        "trans_err": _center_dist_rows(pb, gb),
        "scale_err": 1 - _scale_iou(gb[:, 3:6], pb[:, 3:6]),
        "orient_err": _yaw_diff(gb[:, 6], pb[:, 6]),
    }
    out = {}
    for k, v in errs.items():
        tmp = _cummean(np.asarray(v, dtype=float))
        out[k] = np.interp(conf_i[::-1], match_conf[::-1], tmp[::-1])[::-1]
    return PRCurve(rec_interp, prec_i, conf_i, out["trans_err"], out["scale_err"], out["orient_err"],
                   num_gt, npred, int(is_tp.sum()))


def _center_dist_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dx = a[:, 0] - b[:, 0]
    dy = a[:, 1] - b[:, 1]
    return np.sqrt(dx * dx + dy * dy)


def calc_ap(precision: np.ndarray, min_recall: float = 0.1, min_precision: float = 0.1) -> float:
    """The devkit's ``calc_ap`` on a 101-point precision curve (recall grid ``linspace(0, 1, 101)``)."""
    assert 0 <= min_precision < 1
    assert 0 <= min_recall <= 1
    prec = np.array(precision, dtype=float, copy=True)
    prec = prec[round(100 * min_recall) + 1:]
    prec -= min_precision
    prec[prec < 0] = 0
    return float(np.mean(prec)) / (1.0 - min_precision)


def calc_tp(curve: PRCurve, metric: str, min_recall: float = 0.1) -> float:
    """The devkit's ``calc_tp``: mean TP error between min_recall (excluded) and the highest recall reached; 1.0
    when that range is empty (no match, or max recall <= min_recall)."""
    first = round(100 * min_recall) + 1
    last = curve.max_recall_ind
    if last < first:
        return 1.0
    return float(np.mean(getattr(curve, metric)[first: last + 1]))


def interpolated_ap(recall: np.ndarray, precision: np.ndarray, num_points: int = 40) -> float:
    """N-point interpolated AP of a raw PR curve: mean over recall points r of max(precision[recall >= r]).

    ``num_points=40``: r in {1/40, ..., 1} (KITTI R40); ``num_points=11``: r in {0, 0.1, ..., 1} (VOC 2007 / KITTI R11).
    """
    if num_points == 40:
        pts = np.linspace(1 / 40, 1, 40)
    elif num_points == 11:
        pts = np.linspace(0, 1, 11)
    else:
        raise ValueError(f"num_points must be 11 or 40, got {num_points}")
    recall = np.asarray(recall, dtype=float)
    precision = np.asarray(precision, dtype=float)
    if len(recall) == 0:
        return 0.0
    # envelope from the right: best precision at any recall >= recall[i]
    env = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, pts - 1e-12, side="left")   # first index with recall >= r (recall is non-decreasing)
    vals = np.where(idx < len(recall), env[np.minimum(idx, len(recall) - 1)], 0.0)
    return float(np.mean(vals))


# ----------------------------------------------------------------------------------------------------------------
# Per-class results and the public entry points
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _ClassEval:
    curves: dict[float, PRCurve]
    ap: dict[float, float]
    num_gt: int
    num_pred: int
    recall_at_score: float
    precision_at_score: float
    iou_ap: float
    iou_recall_at_score: float
    iou_pr: tuple[np.ndarray, np.ndarray]
    tp_errors: dict[str, float]


def _operating_point(order_scores: np.ndarray, matched: np.ndarray, num_gt: int, thr: float) -> tuple[float, float]:
    sel = order_scores >= thr          # a prefix: the order is score descending
    n = int(sel.sum())
    ntp = int((matched[sel] >= 0).sum())
    rec = ntp / num_gt if num_gt else float("nan")
    prec = ntp / n if n else float("nan")
    return rec, prec


def _eval_class(P: _Set, G: _Set, c: str, cfg: EvalConfig, do_dist: bool = True, do_iou: bool = True) -> _ClassEval:
    p = P.take(P.cat == c)
    g = G.take(G.cat == c)
    order = _devkit_order(p)
    num_gt, num_pred = len(g.row), len(order)
    curves, ap = {}, {}
    rec_s = prec_s = float("nan")
    tp_err = {m: float("nan") for m in _TP_METRICS}
    if do_dist:
        matches = _match(p, g, order, cfg.dist_thresholds_m, "dist") if num_gt else {}
        for t in cfg.dist_thresholds_m:
            m = matches.get(t, np.full(num_pred, -1, dtype=np.int64))
            curves[t] = _accumulate(p, g, order, m, num_gt)
            ap[t] = calc_ap(curves[t].precision, cfg.min_recall, cfg.min_precision)
        mt = matches.get(cfg.tp_dist_threshold_m, np.full(num_pred, -1, dtype=np.int64))
        rec_s, prec_s = _operating_point(p.score[order], mt, num_gt, cfg.score_threshold)
        for metric in _TP_METRICS:
            if c == "traffic_cone" and metric == "orient_err":
                tp_err[metric] = float("nan")
            else:
                tp_err[metric] = calc_tp(curves[cfg.tp_dist_threshold_m], metric, cfg.min_recall)
    iou_ap_v, iou_rec, iou_pr = 0.0, float("nan"), (np.zeros(0), np.zeros(0))
    if do_iou:
        thr = cfg.iou_threshold(c)
        mi = (_match(p, g, order, (thr,), "iou")[thr] if num_gt else np.full(num_pred, -1, dtype=np.int64))
        iou_ap_v, iou_pr = _iou_ap(mi, num_gt, cfg.iou_ap_points)
        iou_rec, _ = _operating_point(p.score[order], mi, num_gt, cfg.score_threshold)
    return _ClassEval(curves, ap, num_gt, num_pred, rec_s, prec_s, iou_ap_v, iou_rec, iou_pr, tp_err)


def _iou_ap(matched: np.ndarray, num_gt: int, num_points: int) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    if num_gt == 0 or len(matched) == 0:
        return 0.0, (np.zeros(0), np.zeros(0))
    is_tp = matched >= 0
    tp = np.cumsum(is_tp)
    rec = tp / num_gt
    prec = tp / np.arange(1, len(is_tp) + 1)
    return interpolated_ap(rec, prec, num_points), (rec, prec)


def evaluate(preds, gts, cfg: EvalConfig | None = None) -> EvalResult:
    """Evaluate a prediction table against a ground-truth table (see the module docstring for every rule).

    Args:
        preds: pyarrow Table or DataFrame with log_id, timestamp_ns, category, x, y, z, l, w, h, yaw, score
            (e.g. a PREDICTIONS_3D table).
        gts: the same columns without score, optionally num_lidar_pts.
        cfg: settings; ``EvalConfig()`` by default.
    """
    cfg = cfg or EvalConfig()
    P, G = _prepare(preds, gts, cfg, cfg.classes)
    per = {c: _eval_class(P, G, c, cfg) for c in cfg.classes}

    in_mean = [c for c in cfg.classes if per[c].num_gt > 0 or not cfg.map_classes_with_gt_only]
    class_ap = {c: float(np.mean([per[c].ap[t] for t in cfg.dist_thresholds_m])) for c in cfg.classes}
    mean_ap = float(np.mean([class_ap[c] for c in in_mean])) if in_mean else float("nan")
    mean_iou = float(np.mean([per[c].iou_ap for c in in_mean])) if in_mean else float("nan")
    mean_tp = {}
    for m in _TP_METRICS:
        vals = [per[c].tp_errors[m] for c in in_mean]
        mean_tp[m] = float(np.nanmean(vals)) if vals and not np.all(np.isnan(vals)) else float("nan")

    return EvalResult(
        config=cfg,
        ap={c: dict(per[c].ap) for c in cfg.classes},
        class_ap=class_ap,
        mean_ap=mean_ap,
        iou_ap={c: per[c].iou_ap for c in cfg.classes},
        mean_iou_ap=mean_iou,
        num_gt={c: per[c].num_gt for c in cfg.classes},
        num_pred={c: per[c].num_pred for c in cfg.classes},
        recall_at_score={c: per[c].recall_at_score for c in cfg.classes},
        precision_at_score={c: per[c].precision_at_score for c in cfg.classes},
        iou_recall_at_score={c: per[c].iou_recall_at_score for c in cfg.classes},
        tp_errors={c: dict(per[c].tp_errors) for c in cfg.classes},
        mean_tp_errors=mean_tp,
        curves={(c, t): per[c].curves[t] for c in cfg.classes for t in cfg.dist_thresholds_m},
        iou_pr={c: per[c].iou_pr for c in cfg.classes},
    )


def _single_class_cfg(category: str, cfg: EvalConfig | None, **over) -> EvalConfig:
    base = cfg or EvalConfig()
    return replace(base, classes=(category,), **over)


def nuscenes_curve(preds, gts, category: str, dist_th: float, cfg: EvalConfig | None = None) -> PRCurve:
    """The devkit's ``accumulate(gt, pred, category, center_distance, dist_th)`` after ``cfg``'s filters."""
    c = _single_class_cfg(category, cfg, dist_thresholds_m=(float(dist_th),), tp_dist_threshold_m=float(dist_th))
    P, G = _prepare(preds, gts, c, c.classes)
    return _eval_class(P, G, category, c, do_iou=False).curves[float(dist_th)]


def nuscenes_ap(preds, gts, category: str, dist_th: float, cfg: EvalConfig | None = None) -> float:
    """nuScenes AP of one class at one centre-distance threshold (devkit ``calc_ap(accumulate(...), 0.1, 0.1)``)."""
    c = cfg or EvalConfig()
    return calc_ap(nuscenes_curve(preds, gts, category, dist_th, cfg).precision, c.min_recall, c.min_precision)


def bev_iou_ap(preds, gts, category: str, iou: float | None = None, num_points: int | None = None,
               cfg: EvalConfig | None = None) -> float:
    """KITTI-style interpolated AP of one class, matched by rotated BEV IoU >= ``iou`` (default: cfg's for the class)."""
    base = cfg or EvalConfig()
    thr = base.iou_threshold(category) if iou is None else float(iou)
    c = _single_class_cfg(category, base, iou_thresholds=((category, thr),),
                          iou_ap_points=base.iou_ap_points if num_points is None else int(num_points))
    P, G = _prepare(preds, gts, c, c.classes)
    return _eval_class(P, G, category, c, do_dist=False).iou_ap


def recall_at_iou(preds, gts, category: str, iou: float = 0.5, *, min_score: float = 0.0,
                  cfg: EvalConfig | None = None) -> float:
    """Fraction of GT boxes of ``category`` matched by a prediction of that class with rotated BEV IoU >= ``iou``.

    Predictions with ``score >= min_score`` are matched greedily, highest score first, each GT at most once per
    frame. ``cfg`` supplies the range / empty-GT filters (``EvalConfig()``'s by default: 50 m, num_lidar_pts == 0
    dropped); pass ``EvalConfig(max_range_m=None, ignore_empty_gt=False)`` to count every GT box.
    Returns NaN when there is no GT of that class.
    """
    c = _single_class_cfg(category, cfg, iou_thresholds=((category, float(iou)),), score_threshold=float(min_score))
    P, G = _prepare(preds, gts, c, c.classes)
    r = _eval_class(P, G, category, c, do_dist=False)
    return r.iou_recall_at_score if r.num_gt else float("nan")
