"""Learned box scores for refined boxes: a small gradient-boosted model that reads what the whole track says about
a box (how often and how confidently it was detected, how many points it had, how steady its size was, how far it
is, whether the box was detected or filled in) and returns the probability that the box is right
(docs/refinement.md, "Learned box scores").

The hand-made score of a refined box is its track's score (75th-percentile detection score, discounted for short
tracks). That ranks a long track of weak duplicates above a short track of a real, sparsely seen object, and it
is the same for every box of a track, near or far. The model is trained on simulated logs that neither the
detector nor the benchmark's held-out logs use (``labeler train-rescorer``), labels from the ground truth: a box
is right when it is matched one-to-one (Hungarian, BEV centre distance <= 2 m) to a ground-truth box of its class.

* :data:`FEATURES`, :func:`track_features`: the feature rows, computed inside
  :func:`labeler.refine.smoothing.refine_log` (pure numpy/pandas);
* :class:`BoxScorer`: the shipped model, plain JSON (trees as arrays, no pickle), evaluated with numpy;
* :func:`fit_scorer`: scikit-learn's ``GradientBoostingClassifier`` exported to a :class:`BoxScorer`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labeler.classes import CLASSES

DEFAULT_MODEL = str(Path(__file__).resolve().parents[2] / "models" / "box_rescorer.json")

# one row per refined box; track-level values repeat over a track's boxes
FEATURES = (
    "class_index",         # index in labeler.classes.CLASSES of the track's voted class
    "n_det",               # frames with a detection in the track
    "span_frames",         # frames from the track's first to its last detection
    "det_fraction",        # n_det / span_frames
    "score_p75", "score_max", "score_mean", "score_std",   # the track's detection scores
    "track_score",         # the hand-made track score (labeler.refine.smoothing.track_score)
    "log_points_mean", "log_points_max",                   # log1p of the detections' LiDAR point counts
    "l", "w", "h",         # the track's one size, m
    "size_spread",         # spread of the detections' lengths / the track's length
    "class_share",         # share of the track's summed score that voted for its class
    "speed_mps",           # median speed of the refined centres
    "range_mean_m",        # mean BEV distance of the detections from the LiDAR
    "detected",            # 1: this box refines a detection; 0: filled in (interpolated)
    "det_score",           # this box's detection score (0 when filled in)
    "log_points",          # log1p of this box's detection's point count (0 when filled in)
    "range_m",             # this box's BEV distance from the LiDAR
    "edge_s",              # seconds from this box to the nearer end of its track
)


@dataclass(frozen=True)
class RescoreCfg:
    """Learned box scores for refined boxes (``refine.rescore`` in a pipeline YAML, ``--refine rescore.<key>=`` in
    ``labeler bench efficiency``). The model is tied to the detector whose boxes it was trained on: retrain it
    (``labeler train-rescorer``) with new detector weights."""

    enabled: bool = False              # replace each refined box's score by the model's probability that it is right
    model_path: str = ""               # JSON written by ``labeler train-rescorer`` ("": models/box_rescorer.json)


def track_features(det: pd.DataFrame, ev: pd.DataFrame, out: pd.DataFrame, category: str, tscore: float,
                   grid_ns: np.ndarray, ego_xy: dict[int, np.ndarray]) -> np.ndarray:
    """Feature rows (:data:`FEATURES`) of one track's refined boxes.

    Args:
        det: the track's input rows (LiDAR-frame ``x, y``, ``l``, ``score``, ``num_points``, ``timestamp_ns``).
        ev: the rows that give the track its score, class and size (:func:`labeler.refine.smoothing.track_evidence`).
        out: the refined rows (:func:`labeler.refine.smoothing.refine_track`: ``timestamp_ns, wx, wy, l, w, h,
            source, raw_index``).
        category: the track's voted class; ``tscore``: its track score.
        grid_ns: the log's frame times (for the track's span in frames).
        ego_xy: ``timestamp_ns -> (x, y)`` of the LiDAR in the world frame.
    """
    sc = ev["score"].to_numpy(np.float64)
    pts = np.maximum(ev["num_points"].to_numpy(np.float64), 0.0)
    ts_det = np.sort(det["timestamp_ns"].unique())
    lo, hi = np.searchsorted(grid_ns, ts_det[0]), np.searchsorted(grid_ns, ts_det[-1])
    span = int(hi - lo + 1)
    n_det = len(ts_det)
    cat_score = ev.groupby(ev["category"].astype(str))["score"].sum()
    share = float(cat_score.get(category, 0.0) / max(cat_score.sum(), 1e-9))
    lens = ev["l"].to_numpy(np.float64)
    l0 = float(out["l"].iloc[0]) if len(out) else float(np.median(lens))
    t = out["timestamp_ns"].to_numpy(np.int64)
    wx, wy = out["wx"].to_numpy(np.float64), out["wy"].to_numpy(np.float64)
    if len(t) > 1:
        v = np.hypot(np.diff(wx), np.diff(wy)) / np.maximum(np.diff(t) / 1e9, 1e-3)
        speed = float(np.median(v))
    else:
        speed = 0.0
    rng_det = np.hypot(det["x"].to_numpy(np.float64), det["y"].to_numpy(np.float64))
    track_row = [float(CLASSES.index(category)) if category in CLASSES else -1.0, n_det, span, n_det / max(span, 1),
                 float(np.quantile(sc, 0.75)), float(sc.max()), float(sc.mean()), float(sc.std()), tscore,
                 float(np.log1p(pts).mean()), float(np.log1p(pts.max())),
                 l0, float(out["w"].iloc[0]) if len(out) else 0.0, float(out["h"].iloc[0]) if len(out) else 0.0,
                 float(np.std(lens) / max(l0, 0.1)), share, speed, float(rng_det.mean())]
    rows = np.zeros((len(out), len(FEATURES)))
    rows[:, :len(track_row)] = track_row
    raw_index = out["raw_index"].to_numpy(np.int64)
    detected = raw_index >= 0
    det_score = np.zeros(len(out))
    det_pts = np.zeros(len(out))
    if detected.any():
        det_score[detected] = det.loc[raw_index[detected], "score"].to_numpy(np.float64)
        det_pts[detected] = np.log1p(np.maximum(det.loc[raw_index[detected], "num_points"].to_numpy(np.float64), 0))
    exy = np.array([ego_xy[int(x)] for x in t]).reshape(-1, 2)
    k = len(track_row)
    rows[:, k] = detected
    rows[:, k + 1] = det_score
    rows[:, k + 2] = det_pts
    rows[:, k + 3] = np.hypot(wx - exy[:, 0], wy - exy[:, 1])
    rows[:, k + 4] = np.minimum(t - ts_det[0], ts_det[-1] - t) / 1e9
    return rows


class BoxScorer:
    """A gradient-boosted binary classifier stored as arrays (``predict`` = sigmoid(init + lr x sum of leaf
    values)); comparisons in float32, as scikit-learn's trees make them."""

    def __init__(self, spec: dict):
        if list(spec.get("features", [])) != list(FEATURES):
            raise ValueError("box rescorer: the model's features differ from labeler.refine.rescore.FEATURES "
                             f"({spec.get('features')}); retrain it with `labeler train-rescorer`")
        self.spec = spec
        self.init = float(spec["init"])
        self.lr = float(spec["learning_rate"])
        self.trees = [{k: np.asarray(v) for k, v in t.items()} for t in spec["trees"]]
        for t in self.trees:
            t["threshold"] = t["threshold"].astype(np.float32)
            t["value"] = t["value"].astype(np.float64)
        self.depth = int(spec["max_depth"])

    @property
    def version(self) -> str:
        return str(self.spec.get("version", ""))

    def decision(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32).reshape(-1, len(FEATURES))
        rows = np.arange(len(X))
        f = np.full(len(X), self.init)
        for t in self.trees:
            node = np.zeros(len(X), dtype=np.int64)
            for _ in range(self.depth + 1):
                left = t["left"][node]
                leaf = left < 0
                if leaf.all():
                    break
                go_left = X[rows, np.maximum(t["feature"][node], 0)] <= t["threshold"][node]
                node = np.where(leaf, node, np.where(go_left, left, t["right"][node]))
            f += self.lr * t["value"][node]
        return f

    def predict(self, X) -> np.ndarray:
        """Probability that each box (row of :data:`FEATURES`) is right."""
        return 1.0 / (1.0 + np.exp(-self.decision(X)))

    def save(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.spec, f, separators=(",", ":"))
        return path


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> BoxScorer:
    with open(path) as f:
        return BoxScorer(json.load(f))


def load_scorer(path: str = "") -> BoxScorer:
    """The box scorer at ``path`` ("" = the shipped ``models/box_rescorer.json``); cached per file version."""
    p = path or DEFAULT_MODEL
    if not os.path.exists(p):
        raise FileNotFoundError(f"box rescorer model {p} not found: train one with `labeler train-rescorer --out {p}` "
                                "or set refine.rescore.enabled: false")
    return _load(p, os.path.getmtime(p))


def fit_scorer(X, y, n_estimators: int = 200, max_depth: int = 3, learning_rate: float = 0.1, seed: int = 0,
               meta: dict | None = None) -> BoxScorer:
    """Fit scikit-learn's ``GradientBoostingClassifier`` on feature rows ``X`` and 0/1 labels ``y`` and export it."""
    from sklearn.ensemble import GradientBoostingClassifier

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    clf = GradientBoostingClassifier(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                                     subsample=0.8, random_state=seed)
    clf.fit(X, y)
    trees = []
    for est in clf.estimators_[:, 0]:
        tr = est.tree_
        trees.append({"left": tr.children_left.tolist(), "right": tr.children_right.tolist(),
                      "feature": tr.feature.tolist(), "threshold": tr.threshold.tolist(),
                      "value": tr.value[:, 0, 0].tolist()})
    tree_sum = sum(learning_rate * est.predict(X[:1].astype(np.float32)) for est in clf.estimators_[:, 0])
    init = float(clf.decision_function(X[:1])[0] - tree_sum[0])
    spec = {"kind": "gradient_boosting", "features": list(FEATURES), "init": init, "learning_rate": learning_rate,
            "max_depth": max_depth, "trees": trees, **(meta or {})}
    return BoxScorer(spec)
