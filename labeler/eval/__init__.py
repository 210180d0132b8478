"""Detection evaluation: nuScenes-style centre-distance AP (devkit-exact) and KITTI-style BEV-IoU AP.

See :mod:`labeler.eval.detection` for the rules and :mod:`labeler.eval.report` for tables and PR-curve plots.
"""

from labeler.eval.detection import (
    NUSCENES_CLASS_RANGE_M,
    EvalConfig,
    EvalResult,
    PRCurve,
    bev_iou_ap,
    calc_ap,
    calc_tp,
    evaluate,
    interpolated_ap,
    nuscenes_ap,
    nuscenes_curve,
    recall_at_iou,
)

__all__ = [
    "NUSCENES_CLASS_RANGE_M",
    "EvalConfig",
    "EvalResult",
    "PRCurve",
    "bev_iou_ap",
    "calc_ap",
    "calc_tp",
    "evaluate",
    "interpolated_ap",
    "nuscenes_ap",
    "nuscenes_curve",
    "recall_at_iou",
]
