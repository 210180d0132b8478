"""Box fitting: BEV vehicle boxes snapped onto the outline of their points (a second, geometric stage).

The network places boxes from a 0.8 m grid and learned its priors in simulation; on real sweeps its vehicle
boxes land on the right object but often with a metre of centre error or a skewed heading. The geometric
detector (:mod:`labeler.models.geometric`: ground grid, clustering, L-shape fit anchored on the visible near
edge) measures exactly those from the points. :func:`fit_boxes` keeps the network's class and score and takes
position, heading and size from the geometric box of the same object when there is one:

* candidates: geometric boxes of a vehicle class whose centre lies within ``max(1.5 m, l / 2)`` of the network
  box's centre, with BEV IoU >= ``min_iou`` (0.2) and length and width within a factor ``exp(max_size_change)``
  (0.3: ~35 %) of the network's (a cluster of two parked cars is not one car); the highest IoU wins;
* the fitted heading is the geometric one, turned by pi when that is closer to the network's heading (the
  L-shape fit knows the axis, not the direction);
* a network box with no candidate is kept as it is.

Measured through the pipeline (``benchmarks/results/real_recall.md``): car recall at BEV IoU 0.5 on SUSTechPOINTS
0.44 -> 0.82, AV2 0.32 -> 0.71, nuScenes 1 -> 2 of 4 cars; on the simulator, whose boxes the network learned, it costs car AP 0.886 -> 0.79 (the L-shape fit
of partly seen objects is worse than the network there). So it is off by default and meant for real logs
(``model.fit_points: true``). The gates were chosen on these same samples (no separate split).
"""

from __future__ import annotations

import numpy as np

from labeler.geometry.boxes import bev_iou

VEHICLES = frozenset({"car", "truck", "bus"})


def fit_boxes(boxes: np.ndarray, categories: np.ndarray, geo_boxes: np.ndarray, geo_categories: np.ndarray,
              min_iou: float = 0.2, max_size_change: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Snap network vehicle boxes onto geometric boxes of the same objects.

    Args:
        boxes: (N, 7) network boxes, LiDAR frame. categories: (N,) their classes.
        geo_boxes: (M, 7) geometric boxes of the same sweep. geo_categories: (M,) their classes.

    Returns:
        ((N, 7) boxes, (N,) bool: which were fitted).
    """
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 7)
    fitted = np.zeros(len(out), bool)
    geo = np.asarray(geo_boxes, dtype=np.float64).reshape(-1, 7)
    gveh = np.isin(np.asarray(geo_categories, dtype=object), list(VEHICLES))
    veh = np.isin(np.asarray(categories, dtype=object), list(VEHICLES))
    if not veh.any() or not gveh.any():
        return out, fitted
    geo = geo[gveh]
    idx = np.flatnonzero(veh)
    iou = bev_iou(out[idx], geo)
    dist = np.hypot(out[idx, None, 0] - geo[None, :, 0], out[idx, None, 1] - geo[None, :, 1])
    near = dist < np.maximum(1.5, out[idx, 3] / 2)[:, None]
    same_size = (np.abs(np.log(geo[None, :, 3] / out[idx, None, 3])) < max_size_change) & \
        (np.abs(np.log(geo[None, :, 4] / out[idx, None, 4])) < max_size_change)
    score = np.where(near & same_size & (iou >= min_iou), iou - 1e-3 * dist, -np.inf)
    for r, i in enumerate(idx):
        j = int(np.argmax(score[r]))
        if not np.isfinite(score[r, j]):
            continue
        g = geo[j].copy()
        flip = np.cos(g[6] - out[i, 6]) < 0
        g[6] = (g[6] + (np.pi if flip else 0.0) + np.pi) % (2 * np.pi) - np.pi
        out[i] = g
        fitted[i] = True
    return out, fitted
