"""Ray-cast spinning LiDAR (HDL-32E-like) on a :class:`~labeler.simulate.scene.RayScene`.

LiDAR frame: origin at the sensor, x forward, y left, z up, metres (the ego frame shifted up by the mount height).
A sweep is ``num_beams`` lasers with elevations evenly spaced over ``vfov_deg`` (default +10.67 deg to -30.67 deg,
HDL-32E), fired every ``azimuth_res_deg`` over 360 deg; all rays of a sweep are cast at one instant (no motion
distortion). :data:`PROFILES` holds beam patterns and mounting heights of common real sensors, so training data can
mix them (real logs come from many LiDARs: see ``SimConfig.lidar_profiles``).

Output points: (N, 4) float32 ``[x, y, z, intensity]`` in the LiDAR frame, ordered by firing (azimuth column, then
beam). Intensity in [0, 1] = material reflectivity x incidence factor x range falloff, plus noise. Returns are lost
at random (``dropout``), when the echo is weak (dark, grazing or far surfaces), beyond ``max_range_m`` and in a
corner-case dropout sector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeler.simulate.scene import RayScene, rotate

VFOV_DEG = (10.67, -30.67)


@dataclass(frozen=True)
class LidarProfile:
    """Beam pattern and mounting of a spinning LiDAR (approximate public specifications; uniform beam spacing)."""

    num_beams: int
    vfov_deg: tuple[float, float]   # (top, bottom) elevation, degrees
    azimuth_res_deg: float
    height_m: float                 # sensor origin above the road


# name -> profile; "hdl32e" is the simulator's default sensor (nuScenes-like)
PROFILES: dict[str, LidarProfile] = {
    "hdl32e": LidarProfile(32, (10.67, -30.67), 0.25, 1.84),      # Velodyne HDL-32E (nuScenes)
    "hdl64e": LidarProfile(64, (2.0, -24.9), 0.2, 1.73),          # Velodyne HDL-64E (KITTI)
    "pandar40": LidarProfile(40, (7.0, -16.0), 0.2, 1.9),         # Hesai Pandar40 (SUSTechPOINTS-like)
    "vlp32c_x2": LidarProfile(64, (15.0, -25.0), 0.2, 1.95),      # two stacked VLP-32C (Argoverse 2-like)
    "vlp16": LidarProfile(16, (15.0, -15.0), 0.2, 1.7),           # Velodyne VLP-16 (sparse)
}
MIN_RANGE_M = 0.8
# return detection: P(detect) = 1 - exp(-refl * incidence * min(1, (SIGNAL_REF_M / r)^2) / SIGNAL_SCALE)
SIGNAL_REF_M = 20.0
SIGNAL_SCALE = 0.008
# the ego's roof below the sensor, LiDAR frame (x, y, z ranges, m): beams hitting it are self-returns, filtered
EGO_ROOF_LIDAR = ((-1.0, 0.55), (-0.62, 0.62), (-1.84, -0.34))


class Lidar:
    """Beam pattern and return model of the simulated LiDAR.

    Args:
        num_beams: lasers (rows); elevations ``linspace(vfov_deg[0], vfov_deg[1], num_beams)`` degrees.
        azimuth_res_deg: horizontal step, degrees; azimuths start at -180 deg (behind) and increase CCW.
        max_range_m: returns beyond this range are lost.
        range_noise_m: standard deviation of the Gaussian range noise, metres.
        vfov_deg: (top, bottom) beam elevations, degrees.
        model: sensor name written to ``log.json``.
    """

    def __init__(self, num_beams: int = 32, azimuth_res_deg: float = 0.25, max_range_m: float = 80.0,
                 range_noise_m: float = 0.02, vfov_deg: tuple[float, float] = VFOV_DEG, model: str = "sim-hdl32e"):
        self.max_range = float(max_range_m)
        self.range_noise = float(range_noise_m)
        self.vfov_deg = (float(vfov_deg[0]), float(vfov_deg[1]))
        self.model = str(model)
        self.elevation_deg = np.linspace(self.vfov_deg[0], self.vfov_deg[1], num_beams)
        n_az = int(round(360.0 / azimuth_res_deg))
        self.azimuth_deg = -180.0 + np.arange(n_az) * (360.0 / n_az)
        A, E = np.meshgrid(np.deg2rad(self.azimuth_deg), np.deg2rad(self.elevation_deg), indexing="ij")
        self.dirs = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], axis=-1).reshape(-1, 3).astype(np.float32)
        self.ray_azimuth_deg = np.repeat(self.azimuth_deg, num_beams).astype(np.float32)
        self.self_hit = ray_hits_box(self.dirs, EGO_ROOF_LIDAR)  # rays that hit the ego's own roof

    @property
    def blind_fraction(self) -> float:
        """Fraction of rays blocked by the ego roof (their self-returns are filtered out)."""
        return float(self.self_hit.mean())

    @property
    def num_rays(self) -> int:
        return len(self.dirs)

    def meta(self) -> dict:
        """LiDAR description for ``log.json``."""
        return {"model": self.model, "num_beams": len(self.elevation_deg),
                "elevation_deg": list(self.vfov_deg),
                "azimuth_res_deg": float(360.0 / len(self.azimuth_deg)), "max_range_m": self.max_range,
                "range_noise_m": self.range_noise}

    def scan(self, scene: RayScene, world_from_lidar: np.ndarray, rng: np.random.Generator,
             dropout: float = 0.04, sector: tuple[float, float] | None = None) -> np.ndarray:
        """One sweep from the pose ``world_from_lidar`` (4x4).

        Args:
            dropout: probability that a return is randomly lost.
            sector: ``(start_deg, width_deg)`` azimuth sector (LiDAR frame, CCW from +x) with no returns at all.

        Returns:
            (N, 4) float32 points ``[x, y, z, intensity]``, LiDAR frame.
        """
        R = np.asarray(world_from_lidar, dtype=np.float64)
        dirs_w = rotate(self.dirs, R[:3, :3].T.astype(np.float32))
        hit = scene.cast(R[:3, 3], dirs_w)
        n = self.num_rays
        # noise is drawn for every ray, so the random stream does not depend on the scene
        r_noise = rng.normal(0.0, self.range_noise, n).astype(np.float32)
        i_noise = rng.normal(0.0, 0.015, n).astype(np.float32)
        lost = rng.random(n) < dropout
        detect_u = rng.random(n).astype(np.float32)
        t = hit["t"]
        ok = np.isfinite(t) & (t <= self.max_range) & (t >= MIN_RANGE_M) & ~lost & ~self.self_hit
        if sector is not None:
            ok &= ~in_sector(self.ray_azimuth_deg, *sector)
        idx = np.nonzero(ok)[0]
        prim = hit["prim"][idx]
        _, refl, retro = scene.surface(prim, scene.texcoords(prim, hit["uv"][idx]), with_color=False)
        nrm, dw = scene.normals[hit["prim"][idx]], dirs_w[idx]
        cos_inc = np.abs(nrm[:, 0] * dw[:, 0] + nrm[:, 1] * dw[:, 1] + nrm[:, 2] * dw[:, 2])
        incidence = np.where(retro, 0.85 + 0.15 * cos_inc, 0.2 + 0.8 * cos_inc)
        rng_m = t[idx] + r_noise[idx]
        falloff = 1.0 - 0.35 * (t[idx] / self.max_range) ** 2
        inten = np.clip(refl * incidence * falloff + i_noise[idx], 0.0, 1.0)
        # weak echoes (dark, grazing, far) are lost: detection probability from the received signal ~ 1/r^2
        signal = refl * incidence * np.minimum(1.0, (SIGNAL_REF_M / t[idx]) ** 2)
        keep = detect_u[idx] < 1.0 - np.exp(-signal / SIGNAL_SCALE)
        pts = np.empty((int(keep.sum()), 4), np.float32)
        pts[:, :3] = self.dirs[idx[keep]] * rng_m[keep, None]
        pts[:, 3] = inten[keep]
        return pts


def ray_hits_box(dirs: np.ndarray, box: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Rays from the origin along ``dirs`` (N, 3) that hit the axis-aligned box ((x0, x1), (y0, y1), (z0, z1))."""
    d = np.where(np.abs(dirs) < 1e-9, 1e-9, dirs).astype(np.float64)
    lo = np.array([b[0] for b in box]) / d
    hi = np.array([b[1] for b in box]) / d
    t0 = np.minimum(lo, hi).max(axis=1)
    t1 = np.maximum(lo, hi).min(axis=1)
    return (t0 <= t1) & (t1 > 0)


def in_sector(azimuth_deg: np.ndarray, start_deg: float, width_deg: float) -> np.ndarray:
    """Mask of azimuths (deg, any wrap) inside the CCW sector ``[start, start + width)``."""
    return np.mod(np.asarray(azimuth_deg, dtype=np.float64) - start_deg, 360.0) < width_deg


def point_azimuth_deg(points: np.ndarray) -> np.ndarray:
    """Azimuth (deg, CCW from +x, in [-180, 180]) of LiDAR-frame points."""
    return np.degrees(np.arctan2(points[:, 1], points[:, 0]))
