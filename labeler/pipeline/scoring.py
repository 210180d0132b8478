"""Frame confidence and review priority from per-box and per-frame signals (pure functions).

Signals used here (each becomes a reason string kept with the frame):

* ``low_score`` - a box whose detector score is under ``low_score``;
* ``sparse_box`` - a box with fewer than ``few_points`` LiDAR points (likely false positive);
* ``unusual_size`` - a box whose size is far from its class's typical size (odd vehicles, rare objects);
* ``tta_disagreement`` - test-time-augmented views disagree on a box (models with ``model.tta``);
* sensor-health flags from the filters (``lidar_sector_dropout``, ``camera_black:<cam>`` ...).

``confidence`` in [0, 1] says how likely the frame's pre-labels are all right; ``priority`` orders frames for
review (higher first): 1 - confidence plus a weight per distinct reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeler.classes import TYPICAL_SIZE_M
from labeler.pipeline.config import ScoringCfg

REASON_WEIGHTS = {
    "low_score": 0.15,
    "tta_disagreement": 0.3,
    "sparse_box": 0.1,
    "unusual_size": 0.4,
    "lidar_sector_dropout": 0.5,
    "camera_black": 0.4,
    "camera_overexposed": 0.4,
    "camera_time_skew": 0.3,
    "no_boxes": 0.05,
}
# relative spread of sizes per class used by the unusual-size test (fraction of the typical size)
SIZE_SPREAD = 0.18


@dataclass
class FrameScore:
    confidence: float
    priority: float
    reasons: list[str]


def unusual_size(categories, boxes: np.ndarray, sigma: float) -> np.ndarray:
    """(N,) bool: the box's length, width or height is more than ``sigma`` spreads from its class's typical size."""
    out = np.zeros(len(boxes), dtype=bool)
    for i, (c, b) in enumerate(zip(categories, boxes)):
        typ = TYPICAL_SIZE_M.get(str(c))
        if typ is None:
            out[i] = True
            continue
        z = np.abs(np.log(np.maximum(b[3:6], 1e-3) / np.asarray(typ))) / np.log1p(SIZE_SPREAD)
        out[i] = bool((z > sigma).any())
    return out


def score_frame(boxes: np.ndarray, categories, scores: np.ndarray, num_points: np.ndarray,
                health_flags: list[str], cfg: ScoringCfg, uncertainty: np.ndarray | None = None) -> FrameScore:
    """Score one frame from its pre-labels, their TTA uncertainty (optional) and sensor-health flags."""
    reasons: list[str] = []
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores):
        if (scores < cfg.low_score).any():
            reasons.append("low_score")
        if (np.asarray(num_points) < cfg.few_points).any():
            reasons.append("sparse_box")
        if unusual_size(categories, np.asarray(boxes), cfg.rare_size_sigma).any():
            reasons.append("unusual_size")
        if uncertainty is not None and (np.asarray(uncertainty) > cfg.tta_disagreement).any():
            reasons.append("tta_disagreement")
        # probability all boxes are right, softened: geometric mean of scores
        confidence = float(np.exp(np.mean(np.log(np.clip(scores, 1e-3, 1.0)))))
    else:
        reasons.append("no_boxes")
        confidence = 0.9
    reasons.extend(health_flags)
    health_penalty = 0.5 if health_flags else 0.0
    confidence = float(np.clip(confidence * (1.0 - health_penalty), 0.0, 1.0))
    kinds = {r.split(":")[0] for r in reasons}
    priority = (1.0 - confidence) + sum(REASON_WEIGHTS.get(k, 0.2) for k in kinds)
    return FrameScore(confidence=confidence, priority=float(priority), reasons=reasons)
