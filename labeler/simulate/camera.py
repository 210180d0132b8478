"""Ray-cast pinhole cameras: one ray per pixel into the same :class:`~labeler.simulate.scene.RayScene` as the LiDAR.

Camera frame (OpenCV): x right, y down, z forward, metres. Pixel (u, v) has its centre at (u + 0.5, v + 0.5).
Mounts are given in the LiDAR frame (x forward, y left, z up): the optical axis is yawed by ``yaw_deg`` CCW
from +x and pitched down by ``pitch_deg``. Shading: sky gradient, textured ground (lane markings), facades with
windows, objects in their class colours with Lambert shading under a per-log sun, distance haze, vignetting,
sensor noise.
"""

from __future__ import annotations

import numpy as np

from labeler.geometry.camera import CameraCalib
from labeler.simulate.scene import RayScene, rotate

# name -> (yaw_deg, pitch_deg, hfov_deg, position in the LiDAR frame (m))
MOUNTS: dict[str, tuple[float, float, float, tuple[float, float, float]]] = {
    "front": (0.0, 2.0, 70.0, (0.95, 0.0, -0.42)),
    "back": (180.0, 4.0, 90.0, (-2.05, 0.0, -0.35)),
    "left": (90.0, 3.0, 90.0, (0.2, 0.95, -0.5)),
    "right": (-90.0, 3.0, 90.0, (0.2, -0.95, -0.5)),
    "front_left": (50.0, 3.0, 70.0, (0.8, 0.8, -0.45)),
    "front_right": (-50.0, 3.0, 70.0, (0.8, -0.8, -0.45)),
}
SKY_HORIZON = np.array([0.80, 0.85, 0.90], np.float32)
SKY_ZENITH = np.array([0.33, 0.52, 0.80], np.float32)
HAZE_M = 450.0


def make_calib(name: str, width: int, height: int) -> CameraCalib:
    """Calibration of a named camera (see :data:`MOUNTS`): square pixels, principal point at the image centre."""
    if name not in MOUNTS:
        raise ValueError(f"unknown camera {name!r}; known: {sorted(MOUNTS)}")
    yaw, pitch, hfov, pos = MOUNTS[name]
    f = (width / 2) / np.tan(np.deg2rad(hfov) / 2)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    # rows: camera x (right), y (down), z (forward) in LiDAR coordinates
    y, p = np.deg2rad(yaw), np.deg2rad(pitch)
    fwd = np.array([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), -np.sin(p)])
    right = np.array([np.sin(y), -np.cos(y), 0.0])
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ np.asarray(pos, dtype=np.float64)
    return CameraCalib(name=name, K=K, cam_from_lidar=T, width=int(width), height=int(height))


class CameraRenderer:
    """Renders one camera. ``rng`` fixes the per-log look (exposure, white balance, noise pattern).

    Sampling: rays are cast on a grid of every second pixel ("corners"). A pixel between corners that all hit
    the same planar surface patch (one box face, the ground, a facade; see ``Mesh.patch``) or all see sky takes
    its hit by perspective-correct interpolation (exact for a plane); every other pixel (object silhouettes,
    patch borders) gets its own ray. ``exact=True`` casts one ray per pixel everywhere (same image up to
    features thinner than two pixels).
    """

    def __init__(self, calib: CameraCalib, rng: np.random.Generator):
        self.calib = calib
        W, H = calib.width, calib.height
        R = calib.cam_from_lidar[:3, :3]
        self.origin_lidar = -R.T @ calib.cam_from_lidar[:3, 3]
        Kinv = np.linalg.inv(calib.K)

        def rays(u, v):  # pixel centres -> unit directions (LiDAR frame) and their optical-axis component
            d = rotate(np.stack([u.ravel() + 0.5, v.ravel() + 0.5, np.ones(u.size)], axis=1), Kinv.T)
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            return rotate(d, R).astype(np.float32), d[:, 2].astype(np.float32)

        u, v = np.meshgrid(np.arange(W), np.arange(H))
        self.dirs_lidar, self.zfac = rays(u, v)
        self.hc, self.wc = (H - 1) // 2 + 2, (W - 1) // 2 + 2  # corner grid: every second pixel, one beyond
        cu, cv = np.meshgrid(np.arange(self.wc) * 2, np.arange(self.hc) * 2)
        self.cdirs_lidar, self.czfac = rays(cu, cv)
        r2 = ((u - W / 2) ** 2 + (v - H / 2) ** 2) / ((W / 2) ** 2 + (H / 2) ** 2)
        gain = rng.uniform(0.92, 1.08) * (1.0 + rng.normal(0, 0.02, 3))  # exposure and white balance of this log
        self.scale = ((1.0 - 0.22 * r2).reshape(-1, 1) * gain * 255.0).astype(np.float32)  # incl. vignetting
        self.noise = rng.normal(0, 2.5, (H + 16, W + 16, 3)).astype(np.float32)
        # the ego does not pitch or roll, so a pixel's elevation (and its sky colour) is fixed per camera
        k = np.clip(self.dirs_lidar[:, 2] / 0.5, 0.0, 1.0)[:, None] ** 0.7
        self.sky = (SKY_HORIZON * (1 - k) + SKY_ZENITH * k).astype(np.float32)
        self.rays_cast = 0  # statistics: rays cast by the last render

    def _hits(self, scene: RayScene, origin, R: np.ndarray, exact: bool):
        """Per-pixel hits, flat (N = H * W): prim (N,) (-1 = sky), texture coordinates (N, 2), range t (N,)."""
        H, W = self.calib.height, self.calib.width
        prim = np.full((H, W), -1, np.int64)
        st = np.zeros((H, W, 2), np.float32)
        invz = np.zeros((H, W), np.float32)  # 1 / depth along the optical axis (0: sky)
        need = np.ones((H, W), bool) if exact else np.zeros((H, W), bool)
        if not exact:
            h = scene.cast(origin, rotate(self.cdirs_lidar, R))
            ok = np.isfinite(h["t"])
            cp = np.where(ok, h["prim"], 0)
            cprim = np.where(ok, cp, -1).reshape(self.hc, self.wc)
            ckey = np.where(ok, scene.patch[cp], -1).reshape(self.hc, self.wc)
            ciz = np.where(ok, 1.0 / (h["t"] * self.czfac), 0.0).astype(np.float32)
            cstz = np.zeros((len(ok), 2), np.float32)
            cstz[ok] = scene.texcoords(cp[ok], h["uv"][ok]) * ciz[ok, None]
            ciz, cstz = ciz.reshape(self.hc, self.wc), cstz.reshape(self.hc, self.wc, 2)
            # pixel (y, x) lies between corners (y // 2 + {0, y % 2}, x // 2 + {0, x % 2})
            for a in (0, 1):
                for b in (0, 1):
                    nr, nc = len(range(a, H, 2)), len(range(b, W, 2))
                    k0 = ckey[:nr, :nc]
                    same = np.ones((nr, nc), bool)
                    iz = np.zeros((nr, nc), np.float32)
                    sz = np.zeros((nr, nc, 2), np.float32)
                    views = [(di, dj) for di in range(a + 1) for dj in range(b + 1)]
                    for di, dj in views:
                        if di or dj:
                            same &= ckey[di:di + nr, dj:dj + nc] == k0
                        iz += ciz[di:di + nr, dj:dj + nc]
                        sz += cstz[di:di + nr, dj:dj + nc]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        st[a::2, b::2] = sz / iz[..., None]  # perspective-correct: (st / z) and (1 / z) are affine
                    invz[a::2, b::2] = iz / len(views)
                    prim[a::2, b::2] = np.where(same, cprim[:nr, :nc], -1)
                    need[a::2, b::2] = ~same
        prim, st, invz, need = prim.reshape(-1), st.reshape(-1, 2), invz.reshape(-1), need.reshape(-1)
        with np.errstate(divide="ignore"):
            t = 1.0 / (invz * self.zfac)
        pix = np.nonzero(need)[0]
        hh = scene.cast(origin, rotate(np.take(self.dirs_lidar, pix, axis=0), R))
        ok = np.nonzero(np.isfinite(hh["t"]))[0]
        q = pix[ok]
        prim[pix] = -1
        prim[q], t[q] = hh["prim"][ok], hh["t"][ok]
        st[q] = scene.texcoords(hh["prim"][ok], hh["uv"][ok])
        self.rays_cast = len(pix) + (0 if exact else self.hc * self.wc)
        return prim, st, t

    def render(self, scene: RayScene, world_from_lidar: np.ndarray, sun_dir: np.ndarray,
               rng: np.random.Generator, exact: bool = False) -> np.ndarray:
        """(H, W, 3) uint8 RGB image from the camera at LiDAR pose ``world_from_lidar`` (4x4, world frame)."""
        c = self.calib
        Tw = np.asarray(world_from_lidar, dtype=np.float64)
        R = Tw[:3, :3].T.astype(np.float32)  # row vectors: d_world = d_lidar @ R
        origin = Tw[:3, :3] @ self.origin_lidar + Tw[:3, 3]
        prim, st, t = self._hits(scene, origin, R, exact)
        img = self.sky.copy()
        idx = np.nonzero(prim >= 0)[0]
        if len(idx):
            p = prim[idx]
            base, _, _ = scene.surface(p, st[idx], with_color=True)
            n, d = scene.normals[p], rotate(np.take(self.dirs_lidar, idx, axis=0), R)
            facing = np.where(n[:, 0] * d[:, 0] + n[:, 1] * d[:, 1] + n[:, 2] * d[:, 2] > 0, np.float32(-1), np.float32(1))
            sun = sun_dir.astype(np.float32)
            lambert = np.maximum((n[:, 0] * sun[0] + n[:, 1] * sun[1] + n[:, 2] * sun[2]) * facing, 0.0)
            shade = 0.48 + 0.55 * lambert + 0.08 * n[:, 2] * facing
            fog = np.exp(t[idx] * np.float32(-1.0 / HAZE_M))
            img[idx] = base * (shade * fog)[:, None] + SKY_HORIZON * (1 - fog)[:, None]
        img *= self.scale
        oy, ox = rng.integers(0, 16, 2)
        img = img.reshape(c.height, c.width, 3)
        img += self.noise[oy:oy + c.height, ox:ox + c.width]
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)


def black_frame(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Corner case ``camera_black``: a nearly black image (lens covered / sensor failure), mean well below 15."""
    out = img.astype(np.float32) * 0.025 + rng.normal(1.5, 1.0, img.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def overexposed_frame(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Corner case ``camera_overexposed``: nearly saturated white (sun glare / exposure failure), mean above 240."""
    out = 255.0 - (255.0 - img.astype(np.float32)) * 0.04 - np.abs(rng.normal(0, 1.0, img.shape))
    return np.clip(out, 0, 255).astype(np.uint8)
