"""Pinhole cameras and 3D -> 2D box projection.

Camera frame (OpenCV): x right, y down, z forward (optical axis), metres. Pixels: u right, v down,
origin at the top-left corner of the top-left pixel.

* ``K``: 3x3 intrinsics, ``[u, v, 1]^T ~ K @ [x, y, z]^T`` in the camera frame.
* ``cam_from_lidar``: 4x4 rigid transform taking LiDAR-frame points into the camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeler.geometry.boxes import box_corners

# the 12 edges of a box, as pairs of corner indices of box_corners()
BOX_EDGES = np.array(
    [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]]
)
NEAR_PLANE_M = 0.1


@dataclass(frozen=True)
class CameraCalib:
    """Calibration of one camera relative to the LiDAR.

    Attributes:
        name: camera name, e.g. ``"front"``.
        K: (3, 3) intrinsics in pixels.
        cam_from_lidar: (4, 4) transform LiDAR frame -> camera frame (OpenCV axes).
        width, height: image size in pixels.
    """

    name: str
    K: np.ndarray
    cam_from_lidar: np.ndarray
    width: int
    height: int

    def to_dict(self) -> dict:
        return {
            "K": np.asarray(self.K).tolist(),
            "cam_from_lidar": np.asarray(self.cam_from_lidar).tolist(),
            "width": int(self.width),
            "height": int(self.height),
        }

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "CameraCalib":
        K = np.asarray(d["K"], dtype=np.float64)
        T = np.asarray(d["cam_from_lidar"], dtype=np.float64)
        if K.shape != (3, 3) or T.shape != (4, 4):
            raise ValueError(f"camera {name!r}: K must be 3x3 and cam_from_lidar 4x4, got {K.shape}, {T.shape}")
        return cls(name=name, K=K, cam_from_lidar=T, width=int(d["width"]), height=int(d["height"]))


def project_points(calib: CameraCalib, points_xyz) -> tuple[np.ndarray, np.ndarray]:
    """Project LiDAR-frame points. Returns ``uv`` (M, 2) pixels and ``depth`` (M,) metres along the optical axis.

    Points behind the camera get a negative or small depth; callers filter with ``depth > NEAR_PLANE_M``.
    """
    p = np.asarray(points_xyz, dtype=np.float64)[:, :3]
    pc = p @ calib.cam_from_lidar[:3, :3].T + calib.cam_from_lidar[:3, 3]
    depth = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = pc @ calib.K.T
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, depth


def boxes_to_2d(calib: CameraCalib, boxes, min_size_px: float = 2.0):
    """Project 3D boxes (LiDAR frame) to axis-aligned 2D boxes in the image.

    Edges that cross the near plane are clipped there, so boxes partly behind the camera project correctly.

    Returns:
        boxes2d: (N, 4) ``[x1, y1, x2, y2]`` pixels, clipped to the image.
        visible: (N,) bool, the clipped box has at least ``min_size_px`` in both directions.
        truncation: (N,) fraction of the unclipped 2D box area that lies outside the image.
        depth: (N,) depth of the box centre in the camera frame, metres.
    """
    corners = box_corners(boxes)  # (N, 8, 3)
    n = len(corners)
    out = np.zeros((n, 4))
    visible = np.zeros(n, dtype=bool)
    trunc = np.ones(n)
    centers = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)[:, :3]
    _, cdepth = project_points(calib, centers) if n else (None, np.zeros(0))
    R, t = calib.cam_from_lidar[:3, :3], calib.cam_from_lidar[:3, 3]
    for i in range(n):
        pc = corners[i] @ R.T + t
        pts = [pc[k] for k in range(8) if pc[k, 2] > NEAR_PLANE_M]
        for a, b in BOX_EDGES:
            za, zb = pc[a, 2], pc[b, 2]
            if (za > NEAR_PLANE_M) != (zb > NEAR_PLANE_M):
                s = (NEAR_PLANE_M - za) / (zb - za)
                pts.append(pc[a] + s * (pc[b] - pc[a]))
        if not pts:
            continue
        q = np.array(pts) @ calib.K.T
        uv = q[:, :2] / q[:, 2:3]
        x1, y1 = uv.min(axis=0)
        x2, y2 = uv.max(axis=0)
        full = max((x2 - x1) * (y2 - y1), 1e-9)
        cx1, cy1 = np.clip([x1, y1], 0, [calib.width, calib.height])
        cx2, cy2 = np.clip([x2, y2], 0, [calib.width, calib.height])
        out[i] = [cx1, cy1, cx2, cy2]
        inside = max(cx2 - cx1, 0) * max(cy2 - cy1, 0)
        trunc[i] = 1.0 - inside / full
        visible[i] = (cx2 - cx1) >= min_size_px and (cy2 - cy1) >= min_size_px
    return out, visible, trunc, cdepth
