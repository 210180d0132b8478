"""Geometry in explicit frames and units. See docs/conventions.md."""

from labeler.geometry.boxes import (
    BOX_DIM,
    box_corners,
    bev_corners,
    points_in_boxes,
    count_points_in_boxes,
    transform_boxes,
    wrap_angle,
)
from labeler.geometry.camera import CameraCalib, project_points, boxes_to_2d

__all__ = [
    "BOX_DIM",
    "box_corners",
    "bev_corners",
    "points_in_boxes",
    "count_points_in_boxes",
    "transform_boxes",
    "wrap_angle",
    "CameraCalib",
    "project_points",
    "boxes_to_2d",
]
