"""The common frame model every reader produces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from labeler.geometry.camera import CameraCalib


@dataclass
class Frame:
    """One LiDAR sweep with the camera images nearest in time, calibration, pose and (optional) ground truth.

    Attributes:
        log_id: id of the log the frame belongs to.
        timestamp_ns: LiDAR sweep time, ns (the frame key together with ``log_id``).
        frame_index: 0-based index of the frame in its log.
        points: (N, 4) float32 ``[x, y, z, intensity]``, LiDAR frame, metres; intensity in [0, 1].
        lidar_file: path of the point file the points came from.
        images: camera name -> (H, W, 3) uint8 RGB image. Readers may hand out a
            :class:`labeler.logs.images.LazyImages`: the same mapping, decoding each image in full on first access
            (the health checks use its reduced views and never trigger a full decode).
        image_files: camera name -> image path.
        camera_timestamps_ns: camera name -> capture time, ns.
        cameras: camera name -> calibration.
        world_from_ego: (4, 4) ego pose in the log's world frame.
        ego_from_lidar: (4, 4) LiDAR mounting.
        gt_boxes: (M, 7) ground-truth boxes (LiDAR frame, see labeler.geometry.boxes) or None.
        gt_categories: (M,) class names, gt_track_ids: (M,) track ids (str).
    """

    log_id: str
    timestamp_ns: int
    frame_index: int
    points: np.ndarray
    lidar_file: str
    world_from_ego: np.ndarray
    ego_from_lidar: np.ndarray = field(default_factory=lambda: np.eye(4))
    images: Mapping[str, np.ndarray] = field(default_factory=dict)
    image_files: dict[str, str] = field(default_factory=dict)
    camera_timestamps_ns: dict[str, int] = field(default_factory=dict)
    cameras: dict[str, CameraCalib] = field(default_factory=dict)
    gt_boxes: np.ndarray | None = None
    gt_categories: np.ndarray | None = None
    gt_track_ids: np.ndarray | None = None

    @property
    def key(self) -> str:
        """Frame key used everywhere outside Python (Label Studio tasks, file names): ``<log_id>/<timestamp_ns>``."""
        return f"{self.log_id}/{self.timestamp_ns}"

    @property
    def world_from_lidar(self) -> np.ndarray:
        return self.world_from_ego @ self.ego_from_lidar
