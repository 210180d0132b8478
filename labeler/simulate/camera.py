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
        hc, wc = (H - 1) // 2 + 2, (W - 1) // 2 + 2
        cu, cv = np.meshgrid(np.arange(wc) * 2, np.arange(hc) * 2)
        self.cdirs_lidar, self.czfac = rays(cu, cv)
        # pixel classes by (row parity, column parity) with the flat indices of their 1, 2 or 4 corners
        self.classes = []
        for a in (0, 1):
            for b in (0, 1):
                yy, xx = np.meshgrid(np.arange(a, H, 2), np.arange(b, W, 2), indexing="ij")
                i, j = yy.ravel() // 2, xx.ravel() // 2
                corners = [(i + di) * wc + (j + dj) for di in range(a + 1) for dj in range(b + 1)]
                self.classes.append(((yy * W + xx).ravel(), np.stack(corners)))
        r2 = ((u - W / 2) ** 2 + (v - H / 2) ** 2) / ((W / 2) ** 2 + (H / 2) ** 2)
        gain = rng.uniform(0.92, 1.08) * (1.0 + rng.normal(0, 0.02, 3))  # exposure and white balance of this log
        self.scale = ((1.0 - 0.22 * r2).reshape(-1, 1) * gain * 255.0).astype(np.float32)  # incl. vignetting
        self.noise = rng.normal(0, 2.5, (H + 16, W + 16, 3)).astype(np.float32)
        # the ego does not pitch or roll, so a pixel's elevation (and its sky colour) is fixed per camera
        k = np.clip(self.dirs_lidar[:, 2] / 0.5, 0.0, 1.0)[:, None] ** 0.7
        self.sky = (SKY_HORIZON * (1 - k) + SKY_ZENITH * k).astype(np.float32)
        self.rays_cast = 0  # statistics: rays cast by the last render

    def _hits(self, scene: RayScene, origin, R: np.ndarray, exact: bool):
        """Per-pixel hits: prim (N,) (-1 = sky), texture coordinates (N, 2), range t (N,), normal (N, 3)."""
        n = len(self.dirs_lidar)
        prim = np.full(n, -1, np.int64)
        st = np.zeros((n, 2), np.float32)
        t = np.full(n, np.inf, np.float32)
        normal = np.zeros((n, 3), np.float32)

        def cast_into(pix):
            h = scene.cast(origin, rotate(np.take(self.dirs_lidar, pix, axis=0), R))
            ok = np.nonzero(np.isfinite(h["t"]))[0]
            q = pix[ok]
            prim[q], t[q], normal[q] = h["prim"][ok], h["t"][ok], h["normal"][ok]
            st[q] = scene.texcoords(h["prim"][ok], h["uv"][ok])
            return len(pix)

        if exact:
            self.rays_cast = cast_into(np.arange(n))
            return prim, st, t, normal
        h = scene.cast(origin, rotate(self.cdirs_lidar, R))
        cok = np.isfinite(h["t"])
        cprim = np.where(cok, h["prim"], 0)
        ckey = np.where(cok, scene.patch[cprim], -1)
        cst = np.zeros((len(cok), 2), np.float32)
        cst[cok] = scene.texcoords(cprim[cok], h["uv"][cok])
        cinvz = np.where(cok, 1.0 / (h["t"] * self.czfac), 0.0).astype(np.float32)
        need = []
        for pix, cidx in self.classes:
            keys = ckey[cidx]
            same = np.all(keys == keys[0], axis=0)
            use = np.nonzero(same & (keys[0] >= 0))[0]
            need.append(pix[~same])
            ci = cidx[:, use]
            iz = cinvz[ci]
            izm = iz.mean(axis=0)
            q = pix[use]
            st[q] = (cst[ci] * iz[..., None]).mean(axis=0) / izm[:, None]
            t[q] = 1.0 / (izm * self.zfac[q])
            prim[q] = cprim[ci[0]]
            normal[q] = h["normal"][ci[0]]
        self.rays_cast = len(cok) + cast_into(np.concatenate(need))
        return prim, st, t, normal

    def render(self, scene: RayScene, world_from_lidar: np.ndarray, sun_dir: np.ndarray,
               rng: np.random.Generator, exact: bool = False) -> np.ndarray:
        """(H, W, 3) uint8 RGB image from the camera at LiDAR pose ``world_from_lidar`` (4x4, world frame)."""
        c = self.calib
        Tw = np.asarray(world_from_lidar, dtype=np.float64)
        R = Tw[:3, :3].T.astype(np.float32)  # row vectors: d_world = d_lidar @ R
        origin = Tw[:3, :3] @ self.origin_lidar + Tw[:3, 3]
        prim, st, t, normal = self._hits(scene, origin, R, exact)
        img = self.sky.copy()
        idx = np.nonzero(prim >= 0)[0]
        if len(idx):
            p = prim[idx]
            base, _, _ = scene.surface(p, st[idx], with_color=True)
            n, d = np.take(normal, idx, axis=0), rotate(np.take(self.dirs_lidar, idx, axis=0), R)
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
