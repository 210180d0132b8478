"""Rigid transforms. Names follow ``dst_from_src`` (a 4x4 that maps points in ``src`` into ``dst``)."""

from __future__ import annotations

import numpy as np


def quat_to_matrix(qw, qx, qy, qz) -> np.ndarray:
    """Rotation matrix (3x3) from a unit quaternion (w, x, y, z)."""
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    q = q / np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def yaw_to_quat(yaw) -> tuple[float, float, float, float]:
    """Quaternion (w, x, y, z) of a rotation by ``yaw`` radians about +z."""
    return float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))


def se3(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def pose_from_xyz_yaw(x, y, z, yaw) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return se3(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), [x, y, z])


def yaw_of(T: np.ndarray) -> float:
    return float(np.arctan2(T[1, 0], T[0, 0]))


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return se3(R.T, -R.T @ t)
