"""Where the real driving-sensor samples live, a skip helper, and the nuScenes keyframe reader two tests share.

The data sit next to the checkout, at ``<repo>/../shared/data/real`` (see its README.md for provenance, licences
and formats). They are never copied into the repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO_ROOT / "../shared/data/real").resolve()

# mmdet3d v1.x nuScenes label ids (metainfo.categories of the info file); -1 = ignore
NUSCENES_LABELS = {0: "car", 1: "truck", 2: "trailer", 3: "bus", 4: "construction_vehicle", 5: "bicycle",
                   6: "motorcycle", 7: "pedestrian", 8: "traffic_cone", 9: "barrier", -1: "ignore"}


def require_real_data(*parts: str) -> Path:
    """Path ``REAL_DATA/<parts...>``; skips the calling test when it does not exist."""
    p = REAL_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not found at {p} (expected <repo>/../shared/data/real, see its README.md)")
    return p


@dataclass
class NuScenesKeyframe:
    """The nuScenes keyframe: raw info dict, points (N, 5) x, y, z, intensity 0-255, ring; GT in the LiDAR frame."""

    dir: Path
    info: dict
    points: np.ndarray
    boxes: np.ndarray        # (M, 7) [x, y, z (gravity centre), l, w, h, yaw]
    categories: np.ndarray   # (M,) names (NUSCENES_LABELS)
    num_lidar_pts: np.ndarray


def load_nuscenes_keyframe() -> NuScenesKeyframe:
    d = require_real_data("nuscenes_keyframe")
    info = json.loads(next(d.glob("*.info.json")).read_text())["data_list"][0]
    pts = np.fromfile(d / info["lidar_points"]["lidar_path"], dtype=np.float32).reshape(-1, 5)
    inst = info["instances"]
    boxes = np.array([i["bbox_3d"] for i in inst], dtype=np.float64).reshape(-1, 7)
    cats = np.array([NUSCENES_LABELS[i["bbox_label_3d"]] for i in inst])
    return NuScenesKeyframe(d, info, pts, boxes, cats, np.array([i["num_lidar_pts"] for i in inst]))
