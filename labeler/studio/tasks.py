"""What the pipeline sends to Label Studio: one :class:`ReviewTask` per frame to review."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labeler.geometry.bev import BevGrid


@dataclass
class CameraView:
    """One camera image of the frame with its 2D boxes (pixels, u right, v down)."""

    name: str  # [A-Za-z0-9_]+, becomes the LS tags cam_<name> / box_<name>
    image_path: str  # must lie under the Label Studio document root
    width: int
    height: int
    boxes: list[tuple[str, float, float, float, float, str, float]] = field(default_factory=list)
    # (object_id, x1, y1, x2, y2, category, score)


@dataclass
class ReviewTask:
    """One frame to review: BEV render + boxes, camera views, and why it was picked."""

    frame_key: str  # "<log_id>/<timestamp_ns>": the idempotency key in Label Studio
    log_id: str
    timestamp_ns: int
    bev_image_path: str  # must lie under the Label Studio document root
    bev_grid: BevGrid
    boxes: np.ndarray  # (N, 7) [x, y, z, l, w, h, yaw], LiDAR frame
    categories: list[str]
    scores: list[float]
    object_ids: list[str]  # unique within the frame; LS region ids derive from them
    cameras: list[CameraView]
    priority: float
    reasons: list[str]
    model_version: str
    run_id: str


@dataclass
class PushedTask:
    """Outcome of pushing one ReviewTask."""

    frame_key: str
    task_id: int
    status: str  # "created" | "existing" | "updated"
