"""The simulated world: road layout, static clutter, actors with trajectories, ego motion, corner-case plan.

Frames and units (all metres, radians, seconds):

* **world**: the log's flat map frame, x/y on the ground, z up, ground (road surface) at z = 0. The world origin
  is the road centre line at the ego's start (the ego starts one or more lane widths to its right).
* **road coordinates** ``(s, d)``: ``s`` arc length along the road centre line, ``d`` lateral offset, positive to
  the left of the direction of increasing ``s``. Forward traffic (the ego's direction) drives towards +s on the
  right half (d < 0), oncoming traffic towards -s on the left half (d > 0).
* **actor pose** ``[x, y, z, yaw]``: world position of the ground-truth box's *geometric centre*, yaw CCW from +x.
* **actor-local frame**: origin at the box centre, x forward, y left, z up (mesh parts are built in it).

Traffic follows the intelligent driver model per lane (the ego is one of the vehicles, with a varying desired
speed), red lights make queues, pedestrians walk the sidewalks and cross, and nothing overlaps anything else in
any frame (:class:`Occupancy`). The scenario is built once per log (:func:`build_scenario`), deterministically
from a ``numpy.random.Generator``;
:meth:`Scenario.ray_scene` assembles the triangle scene of one frame for Embree (LiDAR and cameras cast into the same
scene, see :class:`RayScene`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from labeler.classes import CLASS_COLORS, TYPICAL_SIZE_M
from labeler.geometry.boxes import transform_boxes, wrap_angle
from labeler.geometry.transforms import invert, pose_from_xyz_yaw

CORNER_KINDS: tuple[str, ...] = (
    "rare_class", "odd_size", "lidar_sector_dropout", "camera_black", "camera_overexposed", "stationary",
)
# probability that a log (with cfg.corner_cases) gets each kind; simulate_logs adds two kinds per log in rotation
CORNER_PROB = {"rare_class": 0.3, "odd_size": 0.35, "lidar_sector_dropout": 0.35, "camera_black": 0.25,
               "camera_overexposed": 0.25, "stationary": 0.25}

# ----------------------------------------------------------------------------------------------- materials
MATERIALS: tuple[str, ...] = ("ground", "sidewalk", "curb", "building", "wall", "pole", "trunk", "foliage", "sign",
                              "body", "glass", "wheel", "plate", "person", "skin", "cone", "fur", "bike")
MAT = {n: i for i, n in enumerate(MATERIALS)}
# LiDAR (905 nm) reflectivity in [0, 1] per material; textures (ground markings, windows) override per hit
REFLECTIVITY = np.array([0.10, 0.25, 0.30, 0.35, 0.30, 0.45, 0.20, 0.30, 0.90, 0.55, 0.07, 0.06, 0.95, 0.30,
                         0.35, 0.85, 0.20, 0.40], dtype=np.float32)
# retro-reflective materials: intensity hardly depends on the incidence angle
RETRO = np.zeros(len(MATERIALS), dtype=bool)
RETRO[[MAT["sign"], MAT["plate"], MAT["cone"]]] = True
TEX_NONE, TEX_GROUND, TEX_SIDEWALK, TEX_FACADE = 0, 1, 2, 3

CURB_H = 0.15  # sidewalk height above the road, m
EGO_SIZE = (4.7, 1.9, 1.6)  # ego car footprint used to keep actors from driving through it


# --------------------------------------------------------------------------------------------- meshes
@dataclass
class Mesh:
    """Triangles with per-triangle surface attributes.

    V: (n, 3) vertices; F: (m, 3) vertex indices; mat: (m,) material id (:data:`MAT`); color: (m, 3) uint8 RGB;
    refl: (m,) LiDAR reflectivity; tex: (m,) texture id; uv: (m, 3, 2) texture coordinates per corner (metres:
    ``(s, d)`` for ground/sidewalk, ``(along facade, height)`` for facades); patch: (m,) id of the (near) planar
    surface patch with continuous texture coordinates a triangle belongs to (a box face, the ground strip), used by
    the cameras' adaptive sampling.
    """

    V: np.ndarray
    F: np.ndarray
    mat: np.ndarray
    color: np.ndarray
    refl: np.ndarray
    tex: np.ndarray
    uv: np.ndarray
    patch: np.ndarray


# corner order: bottom (+x+y, +x-y, -x-y, -x+y), then the top face in the same order
_BOX_SIDES = ((0, 1), (1, 2), (2, 3), (3, 0))


def _box_faces() -> np.ndarray:
    f = [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7]]
    for a, b in _BOX_SIDES:
        f += [[a, b, b + 4], [a, b + 4, a + 4]]
    return np.array(f, dtype=np.int64)


BOX_FACES = _box_faces()
BOX_PATCH = np.repeat(np.arange(6), 2)  # each face of a box is two consecutive triangles


class MeshBuilder:
    """Accumulates boxes, frusta and prisms into one :class:`Mesh` (coordinates in the builder's frame)."""

    def __init__(self):
        self.parts: list[tuple] = []
        self.nv = 0
        self.npatch = 0

    def add(self, V, F, mat: int, color, refl: float | None = None, tex=TEX_NONE, uv=None, patch=None) -> None:
        """Append triangles ``F`` over vertices ``V``; ``tex`` is one texture id or one per triangle; ``patch``
        local patch ids per triangle (default: the whole call is one patch)."""
        V = np.asarray(V, dtype=np.float64)
        F = np.asarray(F, dtype=np.int64)
        m = len(F)
        r = REFLECTIVITY[mat] if refl is None else refl
        uv = np.zeros((m, 3, 2), dtype=np.float32) if uv is None else np.asarray(uv, dtype=np.float32)
        tex = np.broadcast_to(np.asarray(tex, np.uint8), (m,)).copy()
        patch = np.zeros(m, np.int64) if patch is None else np.asarray(patch, np.int64)
        self.parts.append((V, F + self.nv, np.full(m, mat, np.uint8), np.tile(np.clip(color, 0, 255), (m, 1)),
                           np.full(m, r, np.float32), tex, uv, patch + self.npatch))
        self.nv += len(V)
        self.npatch += int(patch.max()) + 1 if m else 0

    def frustum(self, cx, cy, z0, z1, l, w, yaw=0.0, mat=0, color=(128, 128, 128), top_scale=1.0,
                refl=None, facade=False) -> None:
        """A box (``top_scale`` = 1) or square frustum: footprint ``l`` x ``w`` centred at (cx, cy), from z0 to z1."""
        sx = np.array([1, 1, -1, -1]) * l / 2
        sy = np.array([1, -1, -1, 1]) * w / 2
        c, s = np.cos(yaw), np.sin(yaw)
        bx, by = cx + c * sx - s * sy, cy + s * sx + c * sy
        tx, ty = cx + (c * sx - s * sy) * top_scale, cy + (s * sx + c * sy) * top_scale
        V = np.stack([np.r_[bx, tx], np.r_[by, ty], np.r_[np.full(4, z0), np.full(4, z1)]], axis=1)
        if not facade:
            self.add(V, BOX_FACES, mat, color, refl, patch=BOX_PATCH)
            return
        # facade texture on the four sides: u along the wall from its first bottom corner, v = height
        uv = np.zeros((12, 3, 2))
        for k, (a, b) in enumerate(_BOX_SIDES):
            e = V[b, :2] - V[a, :2]
            e = e / max(np.linalg.norm(e), 1e-9)
            for j in (4 + 2 * k, 5 + 2 * k):
                for q, vi in enumerate(BOX_FACES[j]):
                    uv[j, q] = [(V[vi, :2] - V[a, :2]) @ e, V[vi, 2]]
        self.add(V, BOX_FACES, mat, color, refl, np.array([TEX_NONE] * 4 + [TEX_FACADE] * 8), uv, BOX_PATCH)

    def prism(self, cx, cy, z0, z1, r, mat, color, n: int = 8) -> None:
        """Vertical n-gon prism (poles, trunks)."""
        a = np.arange(n) * 2 * np.pi / n
        ring = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)
        V = np.concatenate([np.c_[ring, np.full(n, z0)], np.c_[ring, np.full(n, z1)]])
        F, patch = [], []
        for k in range(n):
            j = (k + 1) % n
            F += [[k, j, n + j], [k, n + j, n + k]]
            patch += [k, k]
        for k in range(1, n - 1):
            F += [[0, k + 1, k], [n, n + k, n + k + 1]]
            patch += [n, n + 1]
        self.add(V, F, mat, color, patch=patch)

    def build(self) -> Mesh:
        if not self.parts:
            return empty_mesh()
        cols = list(zip(*self.parts))
        return Mesh(np.concatenate(cols[0]), np.concatenate(cols[1]), np.concatenate(cols[2]),
                    np.concatenate(cols[3]).astype(np.uint8), np.concatenate(cols[4]), np.concatenate(cols[5]),
                    np.concatenate(cols[6]), np.concatenate(cols[7]))


def empty_mesh() -> Mesh:
    return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.uint8), np.zeros((0, 3), np.uint8),
                np.zeros(0, np.float32), np.zeros(0, np.uint8), np.zeros((0, 3, 2), np.float32), np.zeros(0, np.int64))


def concat_meshes(meshes: list[Mesh]) -> Mesh:
    meshes = [m for m in meshes if len(m.F)]
    if not meshes:
        return empty_mesh()
    off = np.cumsum([0] + [len(m.V) for m in meshes[:-1]])
    poff = np.cumsum([0] + [int(m.patch.max()) + 1 for m in meshes[:-1]])
    return Mesh(np.concatenate([m.V for m in meshes]), np.concatenate([m.F + o for m, o in zip(meshes, off)]),
                np.concatenate([m.mat for m in meshes]), np.concatenate([m.color for m in meshes]),
                np.concatenate([m.refl for m in meshes]), np.concatenate([m.tex for m in meshes]),
                np.concatenate([m.uv for m in meshes]), np.concatenate([m.patch + o for m, o in zip(meshes, poff)]))


def rotate(d: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Row vectors ``d`` (N, 3) times ``M`` (3, 3), i.e. ``d @ M``, without BLAS (much faster for a 3x3 ``M``
    than a threaded GEMM call)."""
    return np.einsum("nk,kj->nj", d, M.astype(d.dtype))


# ----------------------------------------------------------------------------------------------- road
class Road:
    """Road centre line (straight and gently curved segments) and its cross-section.

    Cross-section from the centre outwards on each side: ``n_lanes`` lanes of ``lane_w``, a bike lane ``bike_w``,
    an optional parking lane ``park_w[side]``, the curb (``road_half``), a sidewalk ``walk_w[side]`` at
    ``CURB_H``. ``side`` is 0 for the right (forward traffic, d < 0) and 1 for the left (oncoming, d > 0).
    """

    def __init__(self, rng: np.random.Generator, s_lo: float, s_hi: float):
        ds = 0.5
        self.s = np.arange(s_lo, s_hi + ds, ds)
        kappa = np.zeros_like(self.s)
        s = s_lo
        while s < s_hi:
            seg = rng.uniform(60, 220)
            k = 0.0 if rng.random() < 0.45 else rng.choice([-1.0, 1.0]) * rng.uniform(1 / 650, 1 / 230)
            kappa[(self.s >= s) & (self.s < s + seg)] = k
            s += seg
        h = np.concatenate([[0.0], np.cumsum(kappa[:-1] * ds)])
        hm = (h[:-1] + h[1:]) / 2
        x = np.concatenate([[0.0], np.cumsum(np.cos(hm) * ds)])
        y = np.concatenate([[0.0], np.cumsum(np.sin(hm) * ds)])
        # put s = 0 at the world origin with a random heading
        x0, y0, h0 = np.interp(0.0, self.s, x), np.interp(0.0, self.s, y), np.interp(0.0, self.s, h)
        rot = rng.uniform(-np.pi, np.pi) - h0
        c, sn = np.cos(rot), np.sin(rot)
        self.x = c * (x - x0) - sn * (y - y0)
        self.y = sn * (x - x0) + c * (y - y0)
        self.heading = h + rot
        self.lane_w = float(rng.uniform(3.3, 3.7))
        self.n_lanes = int(rng.choice([1, 2, 2, 3]))
        self.bike_w = float(rng.uniform(1.4, 1.8))
        self.park_w = tuple(float(rng.uniform(2.2, 2.5)) if rng.random() < 0.75 else 0.0 for _ in range(2))
        self.walk_w = tuple(float(rng.uniform(3.0, 5.0)) for _ in range(2))
        self.bike_paint = bool(rng.random() < 0.4)
        self.asphalt = float(rng.uniform(0.28, 0.38))
        self.style = str(rng.choice(list(STYLES), p=[0.3, 0.4, 0.3]))  # neighbourhood, see STYLES
        self.crosswalks: list[float] = []  # s where a 4 m crosswalk starts (stop line 1 m before it)

    # cross-section helpers (side 0 = right, 1 = left)
    def lane_d(self, side: int, k: int) -> float:
        sign = -1.0 if side == 0 else 1.0
        return sign * (k + 0.5) * self.lane_w

    def bike_d(self, side: int) -> float:
        sign = -1.0 if side == 0 else 1.0
        return sign * (self.n_lanes * self.lane_w + self.bike_w / 2)

    def park_d(self, side: int) -> float:
        sign = -1.0 if side == 0 else 1.0
        return sign * (self.n_lanes * self.lane_w + self.bike_w + self.park_w[side] / 2)

    def road_half(self, side: int) -> float:
        return self.n_lanes * self.lane_w + self.bike_w + self.park_w[side]

    def at(self, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x, y, heading) of centre-line points at arc length ``s`` (linear extrapolation past the ends)."""
        s = np.asarray(s, dtype=np.float64)
        x, y, h = np.interp(s, self.s, self.x), np.interp(s, self.s, self.y), np.interp(s, self.s, self.heading)
        for end, sgn in ((0, -1), (-1, 1)):
            over = (s - self.s[end]) * sgn > 0
            if np.any(over):
                e = s - self.s[end]
                x = np.where(over, self.x[end] + np.cos(self.heading[end]) * e, x)
                y = np.where(over, self.y[end] + np.sin(self.heading[end]) * e, y)
                h = np.where(over, self.heading[end], h)
        return x, y, h

    def to_world(self, s, d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x, y) of road coordinates (s, d) and the road heading there."""
        x, y, h = self.at(s)
        d = np.asarray(d, dtype=np.float64)
        return x - d * np.sin(h), y + d * np.cos(h), h

    def ground_texture(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour (n, 3) in [0, 1] and LiDAR reflectivity (n,) of the ground at road coordinates (s, d):
        asphalt with lane markings (double yellow centre, dashed white lane lines, solid edge lines, crosswalks
        and stop lines), optional green bike lanes, and grass/dirt beyond the curbs."""
        s = s.astype(np.float32)
        d = d.astype(np.float32)
        ad = np.abs(d)
        n, W = self.n_lanes, self.lane_w
        g = self.asphalt + 0.025 * np.sin(0.37 * s + 1.3 * d) * np.sin(0.05 * s + 0.2) + 0.015 * np.sin(1.9 * s) * np.sin(2.7 * d)
        rgb = np.empty((len(s), 3), np.float32)
        rgb[:, 0] = g
        rgb[:, 1] = g
        rgb[:, 2] = g * 1.04
        refl = 0.06 + 0.3 * (g - 0.2)
        half = np.where(d < 0, self.road_half(0), self.road_half(1)).astype(np.float32)
        if self.bike_paint:
            bike = (ad > n * W + 0.1) & (ad < n * W + self.bike_w)
            rgb[bike] = (0.30, 0.50, 0.34)
            refl[bike] = 0.18
        yellow = (ad > 0.06) & (ad < 0.18) | (ad > 0.30) & (ad < 0.42)
        yellow &= ad < 0.5
        white = np.abs(ad - n * W) < 0.075
        for k in range(1, n):
            white |= (np.abs(ad - k * W) < 0.075) & (np.mod(s, 9.0) < 3.0)
        for side, sign in ((0, -1), (1, 1)):
            if self.park_w[side] > 0:
                white |= (np.abs(d - sign * (n * W + self.bike_w)) < 0.05)
        for cw in self.crosswalks:
            incw = (s >= cw) & (s < cw + 4.0) & (ad < half)
            white |= incw & (np.mod(d, 1.1) < 0.55)
            yellow &= ~incw
            white |= (s >= cw - 1.0) & (s < cw - 0.6) & (d < 0) & (ad < n * W)
            white |= (s >= cw + 4.6) & (s < cw + 5.0) & (d > 0) & (ad < n * W)
        wear = 0.8 + 0.15 * np.sin(0.9 * s + 0.5 * d) ** 2
        rgb[white] = (0.86 * wear[white])[:, None]
        refl[white] = 0.55
        rgb[yellow] = np.c_[0.86 * wear[yellow], 0.70 * wear[yellow], 0.22 * wear[yellow]]
        refl[yellow] = 0.45
        off = ad > half
        if np.any(off):
            v = 0.85 + 0.15 * np.sin(0.7 * s[off]) * np.sin(0.9 * d[off] + 1.0)
            rgb[off] = np.c_[0.33 * v, 0.42 * v, 0.20 * v]
            refl[off] = 0.32
        return rgb, refl.astype(np.float32)


def sidewalk_texture(s: np.ndarray, d: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Paving slabs: darker seams every 1.5 m in s and 1.25 m in d. ``base`` (n, 3) in [0, 1]."""
    seam = (np.mod(s, 1.5) < 0.04) | (np.mod(d, 1.25) < 0.04)
    return base * np.where(seam, 0.75, 1.0)[:, None].astype(np.float32)


def facade_texture(u: np.ndarray, v: np.ndarray, base: np.ndarray | None, refl: np.ndarray | None):
    """Windows on building walls at (u along the wall, v height) metres: colour from ``base`` (n, 3) and/or
    reflectivity from ``refl`` (n,) with the window pixels replaced (either input may be None)."""
    mu3, mv = np.mod(u, 3.0), np.mod(v - 3.5, 3.2)
    mu6 = np.mod(u, 6.0)
    win = ((v > 0.6) & (v < 3.0) & (mu6 > 0.8) & (mu6 < 5.2)) | ((v > 4.2) & (mv > 0.9) & (mv < 2.5) & (mu3 > 0.8) & (mu3 < 2.2))
    rgb = out = None
    if base is not None:
        rgb = base.copy()
        rgb[win] = np.array([0.16, 0.2, 0.26], np.float32) + 0.05 * np.sin(u[win] * 1.3)[:, None]
    if refl is not None:
        out = refl.copy()
        out[win] = 0.05
    return rgb, out


# ------------------------------------------------------------------------------------------ static world
def build_static(road: Road, rng: np.random.Generator, s_lo: float, s_hi: float) -> Mesh:
    """Ground, curbs, sidewalks, buildings, walls, street lights, trees, signs and traffic lights in the world
    frame between arc lengths ``s_lo`` and ``s_hi`` (no ground truth for any of these). The ground beyond the
    textured strip is the analytic plane z = 0 of :meth:`RayScene.cast`."""
    mb = MeshBuilder()
    # textured ground strip (uv = (s, d))
    sg = np.arange(s_lo - 60, s_hi + 60 + 1e-6, 2.0)
    dcols = sorted({-70.0, -40.0, -20.0, 0.0, 20.0, 40.0, 70.0, -road.road_half(0), road.road_half(1),
                    -road.road_half(0) - road.walk_w[0], road.road_half(1) + road.walk_w[1]})
    S, D = np.meshgrid(sg, dcols, indexing="ij")
    gx, gy, _ = road.to_world(S.ravel(), D.ravel())
    V = np.c_[gx, gy, np.zeros(gx.size)]
    nd = len(dcols)
    i, j = np.meshgrid(np.arange(len(sg) - 1), np.arange(nd - 1), indexing="ij")
    a = (i * nd + j).ravel()
    F = np.concatenate([np.c_[a, a + nd, a + nd + 1], np.c_[a, a + nd + 1, a + 1]])
    sd = np.c_[S.ravel(), D.ravel()]
    mb.add(V, F, MAT["ground"], (90, 90, 90), tex=TEX_GROUND, uv=sd[F])
    ss = np.arange(s_lo - 20, s_hi + 20 + 1e-6, 2.0)
    for side in (0, 1):
        sign = -1.0 if side == 0 else 1.0
        h0, h1 = road.road_half(side), road.road_half(side) + road.walk_w[side]
        _strip(mb, road, ss, sign * h0, sign * h1, CURB_H, CURB_H, MAT["sidewalk"], (172, 170, 164), TEX_SIDEWALK)
        _strip(mb, road, ss, sign * h0, sign * h0, 0.0, CURB_H, MAT["curb"], (190, 188, 182), TEX_NONE)
        _buildings(mb, road, rng, side, s_lo, s_hi)
        _street_furniture(mb, road, rng, side, s_lo, s_hi)
    for cw in road.crosswalks:
        for side, s_at in ((0, cw - 2.0), (1, cw + 6.0)):
            sign = -1.0 if side == 0 else 1.0
            x, y, h = road.to_world(s_at, sign * (road.road_half(side) + 0.4))
            mb.prism(float(x), float(y), CURB_H, 4.2, 0.1, MAT["pole"], (70, 72, 70))
            mb.frustum(float(x), float(y), 3.2, 4.2, 0.3, 0.35, float(h), MAT["sign"], (30, 30, 28), refl=0.5)
    return mb.build()


def _strip(mb: MeshBuilder, road: Road, ss, d0, d1, z0, z1, mat, color, tex) -> None:
    """A strip along the road between lateral offsets d0 -> d1 and heights z0 -> z1 (flat or vertical)."""
    x0, y0, _ = road.to_world(ss, np.full(len(ss), d0))
    x1, y1, _ = road.to_world(ss, np.full(len(ss), d1))
    n = len(ss)
    V = np.concatenate([np.c_[x0, y0, np.full(n, z0)], np.c_[x1, y1, np.full(n, z1)]])
    k = np.arange(n - 1)
    F = np.concatenate([np.c_[k, k + 1, n + k + 1], np.c_[k, n + k + 1, n + k]])
    sd = np.concatenate([np.c_[ss, np.full(n, d0)], np.c_[ss, np.full(n, d1)]])
    mb.add(V, F, mat, color, tex=tex, uv=sd[F])


_FACADE_COLORS = np.array([[196, 180, 150], [160, 82, 60], [150, 150, 150], [222, 218, 205], [120, 118, 112],
                           [185, 160, 120], [110, 120, 135], [200, 200, 190]])


# per-log neighbourhood: (P open lot, building length, setback, heights and their probabilities)
STYLES = {
    "downtown": (0.05, (12, 30), (0.5, 2.0), ((8, 16), (16, 30), (30, 45)), (0.3, 0.45, 0.25)),
    "urban": (0.12, (8, 26), (1.0, 4.0), ((4, 8), (8, 16), (16, 28)), (0.35, 0.45, 0.2)),
    "suburban": (0.4, (8, 16), (4.0, 14.0), ((3, 5), (5, 8), (8, 11)), (0.45, 0.45, 0.1)),
}


def _buildings(mb: MeshBuilder, road: Road, rng, side: int, s_lo: float, s_hi: float) -> None:
    sign = -1.0 if side == 0 else 1.0
    front = road.road_half(side) + road.walk_w[side]
    p_lot, length_rng, setback_rng, heights, p_h = STYLES[road.style]
    s = s_lo - 40
    while s < s_hi + 40:
        if rng.random() < p_lot:  # open lot
            s += rng.uniform(8, 30)
            continue
        length, depth = rng.uniform(*length_rng), rng.uniform(8, 18)
        setback = rng.uniform(*setback_rng)
        height = float(rng.uniform(*heights[rng.choice(3, p=p_h)]))
        x, y, h = road.to_world(s + length / 2, sign * (front + setback + depth / 2))
        col = _FACADE_COLORS[rng.integers(len(_FACADE_COLORS))] * rng.uniform(0.85, 1.1)
        mb.frustum(float(x), float(y), 0.0, height, length, depth, float(h), MAT["building"], col,
                   refl=float(rng.uniform(0.3, 0.5)), facade=True)
        gap = 0.0 if rng.random() < 0.5 else rng.uniform(2, 10)
        if gap > 3 and rng.random() < 0.5:  # wall or fence across the gap
            wx, wy, wh = road.to_world(s + length + gap / 2, sign * (front + 0.8))
            mb.frustum(float(wx), float(wy), 0.0, rng.uniform(1.2, 2.4), gap, 0.25, float(wh), MAT["wall"],
                       np.array([150.0, 140.0, 130.0]) * rng.uniform(0.8, 1.1))
        s += length + gap


def _street_furniture(mb: MeshBuilder, road: Road, rng, side: int, s_lo: float, s_hi: float) -> None:
    sign = -1.0 if side == 0 else 1.0
    curb = road.road_half(side)
    cws = np.array(road.crosswalks)

    def near_crosswalk(s):
        return len(cws) and np.any((s > cws - 4) & (s < cws + 9))

    s = s_lo - 30 + rng.uniform(0, 30)
    while s < s_hi + 30:  # street lights
        if not near_crosswalk(s):
            x, y, h = road.to_world(s, sign * (curb + 0.35))
            top = rng.uniform(7, 9)
            mb.prism(float(x), float(y), CURB_H, top, 0.11, MAT["pole"], (95, 98, 100))
            ax, ay, _ = road.to_world(s, sign * (curb - 1.0))
            mb.frustum(float(ax), float(ay), top - 0.15, top, 0.15, 2.7, float(h), MAT["pole"], (95, 98, 100))
            lx, ly, _ = road.to_world(s, sign * (curb - 2.2))
            mb.frustum(float(lx), float(ly), top - 0.35, top - 0.1, 0.35, 0.7, float(h), MAT["pole"], (210, 210, 200))
        s += rng.uniform(28, 40)
    if rng.random() < 0.7:  # a row of trees
        s = s_lo - 30 + rng.uniform(0, 10)
        while s < s_hi + 30:
            if not near_crosswalk(s):
                x, y, _ = road.to_world(s, sign * (curb + 0.7))
                trunk = rng.uniform(2.2, 3.2)
                r = rng.uniform(1.3, 2.5)
                mb.prism(float(x), float(y), CURB_H, trunk + 0.5, rng.uniform(0.12, 0.22), MAT["trunk"], (90, 70, 50))
                green = np.array([60, 110, 50]) * rng.uniform(0.7, 1.2)
                mb.frustum(float(x), float(y), trunk, trunk + r, r * 1.2, r * 1.2, rng.uniform(0, 1.5), MAT["foliage"], green)
                mb.frustum(float(x), float(y), trunk + r, trunk + 2.2 * r, r * 2.4, r * 2.4, rng.uniform(0, 1.5),
                           MAT["foliage"], green * 1.1, top_scale=0.3)
            s += rng.uniform(7, 13)
    for _ in range(rng.integers(1, 4)):  # traffic signs
        s = rng.uniform(s_lo, s_hi)
        if near_crosswalk(s):
            continue
        x, y, h = road.to_world(s, sign * (curb + 0.3))
        mb.prism(float(x), float(y), CURB_H, 2.9, 0.04, MAT["pole"], (150, 150, 150))
        mb.frustum(float(x), float(y), 2.2, 2.9, 0.04, 0.7, float(h), MAT["sign"],
                   [(200, 30, 30), (30, 80, 190), (235, 235, 235)][rng.integers(3)])


# ------------------------------------------------------------------------------------------- actor shapes
def draw_size(rng: np.random.Generator, category: str) -> tuple[float, float, float]:
    """(l, w, h) metres around :data:`TYPICAL_SIZE_M` with a realistic spread per class."""
    tl, tw, th = TYPICAL_SIZE_M[category]
    spread = {"car": (0.07, 0.04, 0.06), "truck": (0.14, 0.03, 0.09), "bus": (0.06, 0.02, 0.04),
              "pedestrian": (0.12, 0.1, 0.06), "cyclist": (0.05, 0.1, 0.05), "traffic_cone": (0.1, 0.1, 0.12),
              "animal": (0.2, 0.15, 0.2)}[category]
    lo_hi = {"car": (3.6, 5.4), "truck": (5.5, 10.5), "bus": (9.5, 13.5), "pedestrian": (0.35, 1.0),
             "cyclist": (1.5, 2.1), "traffic_cone": (0.28, 0.6), "animal": (0.6, 2.0)}[category]
    g = rng.normal(0, 1, 3) * np.array(spread)
    scale = np.exp(rng.normal(0, 0.02))
    l, w, h = (np.array([tl, tw, th]) * np.exp(g) * scale).tolist()
    if category == "pedestrian" and rng.random() < 0.06:  # a child
        h *= rng.uniform(0.6, 0.75)
    return float(np.clip(l, *lo_hi)), float(w), float(h)


def actor_mesh(category: str, l: float, w: float, h: float, rng: np.random.Generator, variant: str = "") -> Mesh:
    """Triangle mesh of an actor in its local frame (origin at the box centre), fitting inside the box
    (inset 4 cm on the sides and 3 cm at the top, standing on the box bottom)."""
    mb = MeshBuilder()
    L, Wd, H = l - 0.08, w - 0.08, h - 0.03
    zb = -h / 2
    col = np.array(CLASS_COLORS[category], np.float64) * rng.uniform(0.9, 1.08)

    def part(x0, x1, y0, y1, z0, z1, mat, color, top=1.0):
        mb.frustum((x0 + x1) / 2, (y0 + y1) / 2, zb + z0, zb + z1, x1 - x0, y1 - y0, 0.0, MAT[mat], color, top)

    def wheels(xs, D, ww=0.24):
        for x in xs:
            for sy in (-1, 1):
                yc = sy * (Wd / 2 - ww / 2)
                part(x - D / 2, x + D / 2, yc - ww / 2, yc + ww / 2, 0.0, D, "wheel", (25, 25, 25))

    def plates(z0):
        for sx in (-1, 1):
            xc = sx * (L / 2 + 0.015)
            part(xc - 0.01, xc + 0.01, -0.26, 0.26, z0, z0 + 0.12, "plate", (235, 235, 225))

    if category == "car":
        D = min(0.68, 0.42 * H)
        ax = L / 2 - max(0.5, 0.2 * L)
        wheels([ax, -ax], D)
        part(-L / 2, L / 2, -Wd / 2 + 0.02, Wd / 2 - 0.02, 0.22, 0.55 * H, "body", col)
        part(-L / 2 + 0.14 * L, L / 2 - 0.3 * L, -Wd / 2 + 0.05, Wd / 2 - 0.05, 0.55 * H, H, "glass", col * 0.35 + 25, 0.8)
        plates(0.3)
    elif category == "truck" and variant == "articulated":
        D = 1.0
        cab_x0 = L / 2 - 2.4
        part(cab_x0, L / 2 - 0.03, -Wd / 2 + 0.02, Wd / 2 - 0.02, 0.5, min(3.6, H), "body", col)
        part(L / 2 - 0.3, L / 2, -Wd / 2 + 0.1, Wd / 2 - 0.1, 0.6 * min(3.6, H), 0.9 * min(3.6, H), "glass", (40, 50, 60))
        part(L / 2 - 6.0, cab_x0, -Wd / 2 + 0.2, Wd / 2 - 0.2, 0.5, 1.2, "body", (60, 60, 60))
        part(-L / 2, L / 2 - 4.8, -Wd / 2 + 0.02, Wd / 2 - 0.02, 1.15, H, "body", col * 0.9)
        wheels([L / 2 - 1.3, L / 2 - 4.6, L / 2 - 5.9, -L / 2 + 1.2, -L / 2 + 2.5, -L / 2 + 3.8], D)
        plates(0.5)
    elif category == "truck":
        D = 1.0
        cab = min(2.3, 0.3 * L)
        part(L / 2 - cab, L / 2 - 0.03, -Wd / 2 + 0.02, Wd / 2 - 0.02, 0.5, 0.8 * H, "body", col)
        part(L / 2 - 0.25, L / 2, -Wd / 2 + 0.1, Wd / 2 - 0.1, 0.56 * H, 0.78 * H, "glass", (40, 50, 60))
        part(-L / 2, L / 2 - cab - 0.15, -Wd / 2 + 0.02, Wd / 2 - 0.02, 0.9, H, "body", col * 0.85)
        part(-L / 2 + 0.4, L / 2 - 0.4, -Wd / 2 + 0.3, Wd / 2 - 0.3, 0.45, 0.95, "body", (60, 60, 60))
        wheels([L / 2 - 1.3, -L / 2 + 1.6, -L / 2 + 2.7], D)
        plates(0.45)
    elif category == "bus":
        D = 1.0
        part(-L / 2 + 0.03, L / 2 - 0.03, -Wd / 2 + 0.03, Wd / 2 - 0.03, 0.3, H, "body", col)
        part(-L / 2 + 0.3, L / 2, -Wd / 2, Wd / 2, 0.56 * H, 0.86 * H, "glass", (40, 48, 58))
        wheels([L / 2 - 2.5, -L / 2 + 3.0], D)
        plates(0.45)
    elif category == "pedestrian":
        d = min(L, 0.3)
        torso_w = min(Wd - 0.2, 0.44)
        for sy in (-1, 1):
            part(-0.08, 0.08, sy * 0.11 - 0.07, sy * 0.11 + 0.07, 0.0, 0.47 * H, "person", col * 0.6)
            ya = sy * (torso_w / 2 + 0.055)
            part(-0.05, 0.05, ya - 0.045, ya + 0.045, 0.45 * H, 0.8 * H, "person", col * 0.9)
        part(-d / 2, d / 2, -torso_w / 2, torso_w / 2, 0.47 * H, 0.82 * H, "person", col, 0.9)
        part(-0.1, 0.1, -0.085, 0.085, 0.86 * H, H, "skin", (220, 175, 140))
    elif category == "cyclist":
        D = min(0.7, 0.4 * H)
        for x in (L / 2 - D / 2, -L / 2 + D / 2):
            part(x - D / 2, x + D / 2, -0.03, 0.03, 0.0, D, "wheel", (25, 25, 25))
        part(-0.32 * L, 0.3 * L, -0.04, 0.04, 0.35, 0.6 * D + 0.45, "bike", col * 0.8)
        part(-0.2, 0.15, -0.16, 0.16, 0.3, 0.56 * H, "person", col * 0.6)
        part(-0.3, 0.05, -min(Wd / 2, 0.2), min(Wd / 2, 0.2), 0.56 * H, 0.84 * H, "person", col)
        part(0.0, 0.42, -min(Wd / 2, 0.22), min(Wd / 2, 0.22), 0.66 * H, 0.76 * H, "person", col * 0.9)
        part(-0.1, 0.1, -0.085, 0.085, 0.86 * H, H, "skin", (220, 175, 140))
    elif category == "traffic_cone":
        part(-L / 2, L / 2, -Wd / 2, Wd / 2, 0.0, 0.04, "cone", col * 0.8)
        part(-0.35 * L, 0.35 * L, -0.35 * Wd, 0.35 * Wd, 0.04, H, "cone", col, 0.15)
    elif category == "animal":
        part(-0.38 * L, 0.28 * L, -Wd / 2 + 0.04, Wd / 2 - 0.04, 0.48 * H, 0.82 * H, "fur", col)
        for x in (0.2 * L, -0.3 * L):
            for sy in (-1, 1):
                part(x - 0.05, x + 0.05, sy * (Wd / 2 - 0.1) - 0.05, sy * (Wd / 2 - 0.1) + 0.05, 0.0, 0.5 * H, "fur", col * 0.8)
        part(0.28 * L, L / 2, -0.1, 0.1, 0.68 * H, H, "fur", col * 0.9)
    else:
        raise ValueError(f"no shape for category {category!r}")
    return mb.build()


# ------------------------------------------------------------------------------------------- actors, traffic
@dataclass
class Actor:
    """A ground-truth object: class, box size (l, w, h) m, local mesh and per-frame world pose (F, 4)
    ``[x, y, z, yaw]`` (z = box centre height)."""

    track_id: str
    category: str
    size: tuple[float, float, float]
    mesh: Mesh
    pose: np.ndarray
    role: str = ""


def footprint_discs(pose: np.ndarray, l: float, w: float, margin: float = 0.1) -> tuple[np.ndarray, float]:
    """Discs covering a box footprint over time: centres (F, n, 2) world and their radius (m)."""
    n = 2 * max(1, int(np.ceil(l / w)))
    xs = np.linspace(-(l - l / n) / 2, (l - l / n) / 2, n)
    c, s = np.cos(pose[:, 3:4]), np.sin(pose[:, 3:4])
    cen = np.stack([pose[:, 0:1] + c * xs, pose[:, 1:2] + s * xs], axis=-1)
    return cen, 0.5 * float(np.hypot(l / n, w)) + margin


class Occupancy:
    """Accepted actors' footprints over time, to reject new ones that would overlap any of them in any frame."""

    def __init__(self):
        self.centres: list[np.ndarray] = []  # (F, 2) per actor
        self.extent: list[float] = []  # bounding-circle radius per actor
        self.discs: list[tuple[np.ndarray, float]] = []
        self._cache = None

    def add(self, pose, l, w) -> None:
        self.centres.append(np.asarray(pose[:, :2], np.float64))
        self.extent.append(0.5 * float(np.hypot(l, w)) + 0.1)
        self.discs.append(footprint_discs(pose, l, w))
        self._cache = None

    def free(self, pose, l, w) -> bool:
        if not self.centres:
            return True
        if self._cache is None:
            self._cache = (np.stack(self.centres, axis=1), np.array(self.extent))
        C, E = self._cache
        ext = 0.5 * float(np.hypot(l, w)) + 0.1
        d = np.hypot(C[:, :, 0] - pose[:, None, 0], C[:, :, 1] - pose[:, None, 1])  # (F, A)
        near = np.nonzero(np.any(d < E + ext, axis=0))[0]
        if not len(near):
            return True
        c, r = footprint_discs(pose, l, w)
        for k in near:
            ck, rk = self.discs[k]
            dd = np.hypot(c[:, :, None, 0] - ck[:, None, :, 0], c[:, :, None, 1] - ck[:, None, :, 1])
            if np.any(dd <= r + rk):
                return False
        return True


@dataclass
class LaneVehicle:
    category: str
    size: tuple[float, float, float]
    p0: float
    v0: float
    v_des: float
    variant: str = ""
    is_ego: bool = False


def idm(vehicles: list[LaneVehicle], times: np.ndarray, v_des_fn, stop_p: float | None, red_until: float,
        substeps: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Intelligent-driver-model car following along one lane, in lane progress ``p`` (m, increasing in the
    driving direction). A red light is a standing obstacle at ``stop_p`` until ``red_until`` (s) for vehicles that
    can stop for it at t = 0. Returns positions and speeds (F, n) at ``times``."""
    n = len(vehicles)
    if n == 0:
        return np.zeros((len(times), 0)), np.zeros((len(times), 0))
    order = np.argsort([-v.p0 for v in vehicles])  # front-most first; no overtaking, so the order is fixed
    p = np.array([vehicles[k].p0 for k in order])
    v = np.array([vehicles[k].v0 for k in order])
    L = np.array([vehicles[k].size[0] for k in order])
    a, b, T, s0 = 1.4, 2.0, 1.3, 2.2
    obey = np.zeros(n, bool)
    if stop_p is not None:
        obey = (p + L / 2 + v ** 2 / (2 * 5.0) < stop_p)
    dt = (times[1] - times[0]) / substeps if len(times) > 1 else 0.05
    P = np.zeros((len(times), n))
    Vs = np.zeros((len(times), n))
    for fi, t_frame in enumerate(times):
        P[fi], Vs[fi] = p, v
        for k in range(substeps):
            t = t_frame + k * dt
            vd = np.maximum(v_des_fn(t, order), 0.1)
            gap = np.full(n, 1e4)
            vl = v.copy()
            gap[1:] = p[:-1] - p[1:] - (L[:-1] + L[1:]) / 2
            vl[1:] = v[:-1]
            if stop_p is not None and t < red_until:
                g_light = stop_p - (p + L / 2)
                use = obey & (g_light < gap)
                gap = np.where(use, g_light, gap)
                vl = np.where(use, 0.0, vl)
            gap = np.maximum(gap, 0.05)
            s_star = s0 + np.maximum(0.0, v * T + v * (v - vl) / (2 * np.sqrt(a * b)))
            acc = np.clip(a * (1 - (v / vd) ** 4 - (s_star / gap) ** 2), -9.0, a)
            v_new = np.maximum(v + acc * dt, 0.0)
            # stand still until there is room to pull away (no creeping at a stop)
            v_new = np.where(((v_new < 0.03) & (acc < 0)) | ((v == 0.0) & (acc < 0.3)), 0.0, v_new)
            p = p + (v + v_new) / 2 * dt
            v = v_new
    inv = np.argsort(order)
    return P[:, inv], Vs[:, inv]


def populate_lane(rng, p_lo: float, p_hi: float, mix: dict[str, float], v_lane: float, mean_gap: float,
                  queue: tuple[float, float] | None = None) -> list[LaneVehicle]:
    """Vehicles along a lane from the front ``p_hi`` back to ``p_lo`` with IDM-plausible gaps. Inside
    ``queue = (p_a, p_b)`` they stand in a tight queue (v = 0), waiting at a red light."""
    out = []
    cats, probs = list(mix), np.array(list(mix.values()))
    p = p_hi
    while True:
        cat = str(rng.choice(cats, p=probs / probs.sum()))
        size = draw_size(rng, cat)
        v_des = v_lane * rng.uniform(0.85, 1.08) * (0.9 if cat in ("truck", "bus") else 1.0)
        queued = queue is not None and queue[0] <= p <= queue[1]
        v0 = 0.0 if queued else v_des * rng.uniform(0.85, 1.0)
        gap = rng.uniform(2.3, 3.5) if queued else 2.5 + 1.3 * v0 + rng.exponential(mean_gap)
        p -= size[0] / 2
        if p < p_lo:
            break
        out.append(LaneVehicle(cat, size, p, v0, v_des))
        p -= size[0] / 2 + gap
    return out


def motion_yaw(x: np.ndarray, y: np.ndarray, still_yaw: np.ndarray) -> np.ndarray:
    """Heading of a trajectory from its finite differences; ``still_yaw`` where it does not move."""
    if len(x) < 2:
        return np.asarray(still_yaw, dtype=np.float64) * np.ones(len(x))
    dx, dy = np.gradient(x), np.gradient(y)
    moving = np.hypot(dx, dy) > 1e-3
    return np.where(moving, np.arctan2(dy, dx), still_yaw)


# ------------------------------------------------------------------------------------------- the scenario
@dataclass
class CornerPlan:
    """Injected corner cases. Frame-indexed effects; ``tracks``: track id -> kind (rare_class / odd_size)."""

    kinds: set[str] = field(default_factory=set)
    sector: dict[int, tuple[float, float]] = field(default_factory=dict)  # frame -> (start, width) azimuth deg
    camera: dict[int, tuple[str, str]] = field(default_factory=dict)  # frame -> (camera, "black"|"overexposed")
    stationary: set[int] = field(default_factory=set)  # frames where the ego stands still
    tracks: dict[str, str] = field(default_factory=dict)


@dataclass
class Scenario:
    """Everything about one simulated log that does not depend on the sensors' random noise."""

    times_s: np.ndarray  # (F,) seconds since log start
    road: Road
    static: Mesh
    actors: list[Actor]
    ego_pose: np.ndarray  # (F, 4) [x, y, z, yaw] world_from_ego
    ego_speed: np.ndarray  # (F,) m/s
    sun_dir: np.ndarray  # (3,) unit vector towards the sun, world
    corner: CornerPlan

    def __post_init__(self):
        self._poses = np.stack([a.pose for a in self.actors], axis=1) if self.actors else np.zeros((len(self.times_s), 0, 4))
        self._sizes = np.array([a.size for a in self.actors]).reshape(-1, 3)

    def world_from_ego(self, i: int) -> np.ndarray:
        x, y, z, yaw = self.ego_pose[i]
        return pose_from_xyz_yaw(x, y, z, yaw)

    def ray_scene(self, i: int, radius: float = 170.0, threads: int = 0) -> "RayScene":
        """The triangle scene of frame ``i``: static world plus actors within ``radius`` m of the ego."""
        pose = self._poses[i]
        near = np.hypot(pose[:, 0] - self.ego_pose[i, 0], pose[:, 1] - self.ego_pose[i, 1]) < radius
        meshes = [self.static]
        for k in np.nonzero(near)[0]:
            m = self.actors[k].mesh
            x, y, z, yaw = pose[k]
            c, s = np.cos(yaw), np.sin(yaw)
            V = np.c_[x + c * m.V[:, 0] - s * m.V[:, 1], y + s * m.V[:, 0] + c * m.V[:, 1], z + m.V[:, 2]]
            meshes.append(Mesh(V, m.F, m.mat, m.color, m.refl, m.tex, m.uv, m.patch))
        return RayScene(concat_meshes(meshes), self.road, len(self.static.F), threads)

    def ground_truth(self, i: int, lidar_from_world: np.ndarray, max_range: float):
        """Boxes (M, 7) in the LiDAR frame, categories and track ids of actors whose centre lies within
        ``max_range`` (horizontal distance) of the LiDAR in frame ``i``."""
        pose = self._poses[i]
        if len(pose) == 0:
            return np.zeros((0, 7)), [], []
        world_boxes = np.c_[pose[:, :3], self._sizes, pose[:, 3]]
        boxes = transform_boxes(world_boxes, lidar_from_world)
        keep = np.hypot(boxes[:, 0], boxes[:, 1]) <= max_range
        idx = np.nonzero(keep)[0]
        return boxes[idx], [self.actors[k].category for k in idx], [self.actors[k].track_id for k in idx]


class RayScene:
    """One frame's world-frame triangle scene in Embree, with per-triangle surface attributes.

    Rays that miss every triangle but point downwards hit the analytic ground plane z = 0 (off-road texture);
    it is triangle index ``len(mesh.F)`` (a virtual triangle) in the attribute arrays.
    """

    def __init__(self, mesh: Mesh, road: Road, n_static: int, threads: int = 0):
        self.road, self.n_static, self.threads = road, n_static, threads
        self.plane = len(mesh.F)
        self.mat = np.r_[mesh.mat, MAT["ground"]]
        self.color = np.r_[mesh.color, [[90, 90, 90]]].astype(np.float32) * np.float32(1 / 255)
        self.refl = np.r_[mesh.refl, REFLECTIVITY[MAT["ground"]]].astype(np.float32)
        self.tex = np.r_[mesh.tex, TEX_GROUND].astype(np.uint8)
        self.uv = np.concatenate([mesh.uv[:n_static], np.zeros((len(mesh.F) - n_static, 3, 2), np.float32),
                                  np.array([[[0, 1e4]] * 3], np.float32)])
        self.patch = np.r_[mesh.patch, int(mesh.patch.max(initial=0)) + 1]
        tri = mesh.V[mesh.F]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        self.normals = np.r_[n, [[0.0, 0.0, 1.0]]].astype(np.float32)  # unit normal per triangle (any orientation)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(mesh.V.astype(np.float32)), o3d.core.Tensor(mesh.F.astype(np.uint32)))

    def cast(self, origin, dirs: np.ndarray) -> dict[str, np.ndarray]:
        """First hits of rays from ``origin`` (3,) along unit ``dirs`` (N, 3) float32 (world frame).

        Returns ``t`` (N,) range in m (inf: no hit, i.e. sky), ``prim`` (N,) triangle index and ``uv`` (N, 2)
        barycentric coordinates. The surface normal of a hit is ``normals[prim]``."""
        rays = np.empty((len(dirs), 6), np.float32)
        rays[:, :3] = origin
        rays[:, 3:] = dirs
        r = self.scene.cast_rays(o3d.core.Tensor.from_numpy(rays), nthreads=self.threads)
        t = r["t_hit"].numpy().copy()
        prim = r["primitive_ids"].numpy().astype(np.int64)
        uv = r["primitive_uvs"].numpy()
        miss = np.nonzero(~np.isfinite(t) & (dirs[:, 2] < -1e-4))[0]
        if len(miss):
            t[miss] = -float(origin[2]) / dirs[miss, 2]
            prim[miss] = self.plane
        return {"t": t, "prim": prim, "uv": uv}

    def texcoords(self, prim: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Texture coordinates (n, 2) (metres, see :class:`Mesh`) at hits with barycentric ``uv``; 0 if untextured."""
        tuv = self.uv[prim]
        return tuv[:, 0] + uv[:, 0:1] * (tuv[:, 1] - tuv[:, 0]) + uv[:, 1:2] * (tuv[:, 2] - tuv[:, 0])

    def surface(self, prim: np.ndarray, st: np.ndarray, with_color: bool = True):
        """Surface properties at hits on triangles ``prim`` with texture coordinates ``st`` (:meth:`texcoords`).

        Returns ``(rgb, None, None)`` with colours (n, 3) in [0, 1] when ``with_color`` (cameras), else
        ``(None, refl, retro)``: LiDAR reflectivity (n,) and a retro-reflective flag (n,)."""
        if with_color:
            rgb, refl = self.color[prim], None
        else:
            rgb, refl = None, self.refl[prim]
        tex = self.tex[prim]
        textured = np.nonzero(tex)[0]
        if len(textured):
            st = st[textured]
            tt = tex[textured]
            for kind in (TEX_GROUND, TEX_SIDEWALK, TEX_FACADE):
                sel = np.nonzero(tt == kind)[0]
                if not len(sel) or (kind == TEX_SIDEWALK and not with_color):
                    continue
                at = textured[sel]
                if kind == TEX_GROUND:
                    c, r = self.road.ground_texture(st[sel, 0], st[sel, 1])
                elif kind == TEX_SIDEWALK:
                    c, r = sidewalk_texture(st[sel, 0], st[sel, 1], rgb[at]), None
                else:
                    c, r = facade_texture(st[sel, 0], st[sel, 1], rgb[at] if with_color else None,
                                          None if with_color else refl[at])
                if with_color:
                    rgb[at] = c
                else:
                    refl[at] = r
        if with_color:
            return rgb, None, None
        return None, refl, RETRO[self.mat[prim]]


# ------------------------------------------------------------------------------------------ scenario builder
def choose_corner_kinds(rng: np.random.Generator, enabled: bool, duration_s: float, forced=()) -> set[str]:
    draws = {k: rng.random() for k in CORNER_KINDS}  # always drawn, so the rest of the log does not depend on it
    if not enabled:
        return set()
    kinds = {k for k in CORNER_KINDS if draws[k] < CORNER_PROB[k]} | set(forced)
    if duration_s < 5.0:
        kinds.discard("stationary")  # cannot stand still for >= 4 s
    return kinds


def _smooth_profile(rng, duration: float, lo: float, hi: float, knot_s: float = 4.0):
    kt = np.arange(0, duration + 2 * knot_s, knot_s)
    kv = rng.uniform(lo, hi, len(kt))

    def f(t):
        k = np.clip(np.floor(t / knot_s).astype(int), 0, len(kt) - 2)
        u = np.clip((t - kt[k]) / knot_s, 0, 1)
        w = (1 - np.cos(np.pi * u)) / 2
        return kv[k] * (1 - w) + kv[k + 1] * w

    return f


class _Builder:
    """State shared while one scenario is built: the random stream, road, frame times, accepted actors."""

    def __init__(self, rng: np.random.Generator, road: Road, times: np.ndarray, plan: CornerPlan):
        self.rng, self.road, self.times, self.plan = rng, road, times, plan
        self.F = len(times)
        self.dur = float(times[-1]) + (times[1] - times[0] if len(times) > 1 else 0.1)
        self.actors: list[Actor] = []
        self.occ = Occupancy()

    def add(self, category: str, size, pose: np.ndarray, role: str, variant: str = "", check: bool = True,
            corner: str | None = None) -> Actor | None:
        """Add an actor unless (``check``) it would overlap an accepted one in some frame."""
        if check and not self.occ.free(pose, size[0], size[1]):
            return None
        a = Actor(f"trk-{len(self.actors) + 1:04d}", category, tuple(size), actor_mesh(category, *size, self.rng, variant), pose, role)
        self.actors.append(a)
        self.occ.add(pose, size[0], size[1])
        if corner:
            self.plan.tracks[a.track_id] = corner
        return a

    def static_pose(self, s: float, d: float, z: float, yaw_off: float = 0.0) -> np.ndarray:
        """Pose (F, 4) of something standing still at road coordinates (s, d), heading along the road + yaw_off."""
        x, y, h = self.road.to_world(np.array([s]), np.array([d]))
        return np.tile([x[0], y[0], z, float(wrap_angle(h[0] + yaw_off))], (self.F, 1))

    def crossing(self, size, s_cross: float, t_start: float, speed: float, direction: float, wait_d: float = 0.5) -> np.ndarray:
        """Pose (F, 4) of a walker waiting on one curb, crossing the road at ``s_cross`` from ``t_start``
        (direction +1: right -> left side) and walking on along the far sidewalk."""
        road, times = self.road, self.times
        d_from = -(road.road_half(0) + wait_d) if direction > 0 else road.road_half(1) + wait_d
        d_to = road.road_half(1) + 1.8 if direction > 0 else -(road.road_half(0) + 1.8)
        T = abs(d_to - d_from) / speed
        d = d_from + (d_to - d_from) * np.clip((times - t_start) / T, 0, 1)
        s = s_cross + np.clip(times - t_start - T, 0, None) * speed * 0.9 * float(self.rng.choice([-1, 1]))
        x, y, h = road.to_world(s, d)
        yaw = motion_yaw(x, y, h + np.pi / 2 * direction)
        on_walk = np.abs(d) > np.where(d < 0, road.road_half(0), road.road_half(1))
        z = np.where(on_walk, CURB_H, 0.0) + size[2] / 2
        return np.c_[x, y, z, wrap_angle(yaw)]


def build_scenario(rng: np.random.Generator, duration_s: float, rate_hz: float, max_range_m: float,
                   cameras: tuple[str, ...], corner_cases: bool, forced_kinds=()) -> Scenario:
    """Road, static world, traffic, pedestrians, ego motion and corner cases of one log (deterministic in ``rng``)."""
    times = np.arange(max(1, int(round(duration_s * rate_hz)))) / rate_hz
    dur = float(times[-1]) + 1.0 / rate_hz
    kinds = choose_corner_kinds(rng, corner_cases, duration_s, forced_kinds)
    plan = CornerPlan(kinds=set(kinds))
    v_max, view = 15.0, max_range_m + 60.0
    roi = (-view - 20.0, v_max * dur + view + 20.0)  # arc lengths anything can be seen from the ego
    span = v_max * dur + 60.0
    road = Road(rng, roi[0] - span - 80, roi[1] + span + 80)
    ego_lane = int(rng.integers(road.n_lanes))
    stop_mode = s_line = None
    if "stationary" in kinds:  # a red light: the ego waits at the stop line from the start, or stops on the way
        stop_mode = "mid" if dur >= 15 and rng.random() < 0.6 else "start"
        s_line = EGO_SIZE[0] / 2 + rng.uniform(1.8, 2.6) if stop_mode == "start" else rng.uniform(35, 70)
        road.crosswalks.append(float(s_line + 1.0))
    elif rng.random() < 0.5:
        road.crosswalks.append(float(rng.uniform(10, max(12.0, 10 * dur))))
    static = build_static(road, rng, *roi)
    b = _Builder(rng, road, times, plan)
    ego_pose, ego_v, ego_s, red_until = _traffic(b, roi, span, ego_lane, stop_mode, s_line, "odd_size" in kinds)
    _parked(b, roi)
    _cones(b, ego_s)
    _walkers(b, roi)
    _crossers(b, stop_mode, red_until, ego_s)
    if "rare_class" in kinds:
        _animal(b, ego_s)
    _sensor_corner_cases(b, kinds, cameras, ego_v, rate_hz)
    elev, azim = rng.uniform(np.deg2rad(25), np.deg2rad(65)), rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    return Scenario(times, road, static, b.actors, ego_pose, ego_v, sun, plan)


def _traffic(b: _Builder, roi, span: float, ego_lane: int, stop_mode, s_line, odd_size: bool):
    """IDM traffic in every lane (cars/trucks/buses, cyclists in the bike lanes), the ego in forward lane
    ``ego_lane``, an optional red light at ``s_line`` and an optional odd-size vehicle. Returns the ego pose
    (F, 4), speed (F,) and arc length (F,), and the time the light turns green."""
    rng, road, times, dur = b.rng, b.road, b.times, b.dur
    mix = {"car": 0.8, "truck": 0.12, "bus": 0.08}
    density = rng.uniform(12, 45)
    ego_prof = _smooth_profile(rng, dur, 6.5, 14.0)
    odd = None
    if odd_size:
        odd = "articulated" if rng.random() < 0.55 else "microcar"
    lane_specs = [(side, k, False) for side in (0, 1) for k in range(road.n_lanes)]
    lane_specs = lane_specs[:road.n_lanes] + [(0, -1, True)] + lane_specs[road.n_lanes:] + [(1, -1, True)]
    odd_lane = None
    if odd is not None and (odd == "articulated" or rng.random() < 0.5):
        cands = [i for i, (sd, k, bike) in enumerate(lane_specs) if not bike and not (sd == 0 and k == ego_lane)]
        odd_lane = cands[rng.integers(len(cands))]
    lanes = []
    for li, (side, k, bike) in enumerate(lane_specs):
        sign = 1.0 if side == 0 else -1.0  # lane progress p = sign * s
        p_lo = roi[0] if side == 0 else -roi[1] - span
        p_hi = roi[1] if side == 0 else -roi[0]
        p_line = None if s_line is None else (s_line if side == 0 else -(s_line + 6.0))
        queue = (p_line - 60.0, p_line) if (stop_mode == "start" and side == 0) else None
        if bike:
            vs = populate_lane(rng, p_lo, p_hi, {"cyclist": 1.0}, rng.uniform(4.0, 6.5), rng.uniform(60, 160), queue)
        else:
            vs = populate_lane(rng, p_lo, p_hi, mix, rng.uniform(9.0, 14.0), density, queue)
        if side == 0 and k == ego_lane and not bike:
            clear = 25.0 if stop_mode != "start" else 4.0
            vs = [v for v in vs if abs(v.p0) > clear + v.size[0] / 2 + EGO_SIZE[0] / 2]
            if stop_mode == "start":
                vs = [v for v in vs if v.p0 < 0 or v.p0 > s_line + 5]
            ego_v0 = 0.0 if stop_mode == "start" else float(ego_prof(0.0)) * 0.9
            vs.append(LaneVehicle("car", EGO_SIZE, 0.0, ego_v0, 0.0, is_ego=True))
        if li == odd_lane:
            l = rng.uniform(16.0, 19.5) if odd == "articulated" else rng.uniform(2.3, 2.6)
            size = (l, 2.55, rng.uniform(3.8, 4.1)) if odd == "articulated" else (l, rng.uniform(1.4, 1.5), rng.uniform(1.45, 1.55))
            p_odd = rng.uniform(10, 40) if side == 0 else -rng.uniform(60, 60 + 12 * dur)
            vs = [v for v in vs if v.is_ego or abs(v.p0 - p_odd) > l / 2 + v.size[0] / 2 + 20]
            vs.append(LaneVehicle("truck" if odd == "articulated" else "car", size, p_odd, rng.uniform(8, 11),
                                  rng.uniform(9, 12), variant=odd))
        vdes = np.array([v.v_des for v in vs])
        phase = rng.uniform(0, 2 * np.pi, len(vs))
        ego_idx = [i for i, v in enumerate(vs) if v.is_ego]

        def v_des_fn(t, order, vdes=vdes, phase=phase, ego_idx=ego_idx):
            out = vdes * (1 + 0.08 * np.sin(2 * np.pi * t / 11.0 + phase))
            for e in ego_idx:
                out[e] = ego_prof(t)
            return out[order]

        lanes.append((side, k, bike, vs, v_des_fn, p_line, rng.uniform(0, 2 * np.pi, len(vs))))

    red_until = rng.uniform(4.6, 7.5) if stop_mode == "start" else 1e9
    if stop_mode == "mid":  # find when the ego stands at the red light, then let it wait 4.6 - 7.5 s
        li = next(i for i, (sd, k, bike, *_) in enumerate(lanes) if sd == 0 and k == ego_lane and not bike)
        _, V = idm(lanes[li][3], times, lanes[li][4], lanes[li][5], 1e9)
        e = next(i for i, v in enumerate(lanes[li][3]) if v.is_ego)
        stopped = np.nonzero(V[:, e] == 0.0)[0]
        if len(stopped) and times[stopped[0]] + 4.6 <= dur - 0.3:
            red_until = float(times[stopped[0]] + rng.uniform(4.6, 7.5))
        else:
            red_until = float(dur + 1.0)  # stays red to the end of the log
    if s_line is None:
        red_until = 0.0

    ego = None
    for side, k, bike, vs, fn, p_line, wob in lanes:
        P, V = idm(vs, times, fn, p_line, red_until)
        sign = 1.0 if side == 0 else -1.0
        for j, veh in enumerate(vs):
            s = sign * P[:, j]
            amp = 0.06 if bike else 0.12  # slow lateral wander inside the lane
            d = (road.bike_d(side) if bike else road.lane_d(side, k)) + amp * np.sin(s / 23.0 + wob[j])
            x, y, h = road.to_world(s, d)
            yaw = wrap_angle(h + np.arctan(amp / 23.0 * np.cos(s / 23.0 + wob[j])) + (0.0 if side == 0 else np.pi))
            if veh.is_ego:
                ego = (np.c_[x, y, np.zeros_like(x), yaw], V[:, j], s)
                b.occ.add(ego[0], EGO_SIZE[0], EGO_SIZE[1])
            else:
                b.add(veh.category, veh.size, np.c_[x, y, np.full_like(x, veh.size[2] / 2), yaw], "lane", veh.variant,
                      check=False, corner="odd_size" if veh.variant else None)
    if odd == "microcar" and odd_lane is None:  # parked instead
        _parked_microcar(b, ego[2])
    return ego[0], ego[1], ego[2], red_until


def _parked_microcar(b: _Builder, s_ego: np.ndarray) -> None:
    """Corner case ``odd_size`` as a ~2.5 m microcar parked ahead of the ego."""
    road, rng = b.road, b.rng
    side = int(np.argmax(road.park_w)) if max(road.park_w) > 0 else None
    size = (rng.uniform(2.3, 2.6), rng.uniform(1.4, 1.5), rng.uniform(1.45, 1.55))
    for _try in range(40):
        s = rng.uniform(s_ego[0] + 8, s_ego[-1] + 40)
        if side is not None:  # in the parking lane
            pose = b.static_pose(s, road.park_d(side) - np.sign(road.park_d(side)) * 0.1, size[2] / 2, 0.0 if side == 0 else np.pi)
        else:  # no parking lane: half up on the sidewalk
            pose = b.static_pose(s, -(road.road_half(0) + 1.0), CURB_H + size[2] / 2)
        if b.add("car", size, pose, "parked", corner="odd_size"):
            return


def _parked(b: _Builder, roi) -> None:
    """Cars (and a few vans) parked along the parking lanes, none near a crosswalk."""
    road, rng = b.road, b.rng
    cws = np.array(road.crosswalks)
    for side in (0, 1):
        if road.park_w[side] <= 0:
            continue
        s = roi[0]
        while s < roi[1]:
            if rng.random() < 0.25:
                s += rng.uniform(5, 20)
                continue
            cat = "truck" if rng.random() < 0.08 else "car"
            size = draw_size(rng, cat)
            if cat == "truck":
                size = (min(size[0], 7.0), size[1], size[2])
            sc = s + size[0] / 2
            s += size[0] + rng.uniform(0.8, 3.0)
            if len(cws) and np.any((sc > cws - 12) & (sc < cws + 12)):
                continue
            dpark = road.park_d(side) + (-1 if side == 0 else 1) * rng.uniform(0.0, 0.2)
            b.add(cat, size, b.static_pose(sc, dpark, size[2] / 2, (0.0 if side == 0 else np.pi) + rng.normal(0, 0.02)), "parked")


def _cones(b: _Builder, ego_s: np.ndarray) -> None:
    """1-2 groups of traffic cones: a line along a lane edge or a cluster in a parking lane."""
    road, rng = b.road, b.rng
    for _ in range(int(rng.integers(1, 3))):
        side = int(rng.integers(2))
        sign = -1.0 if side == 0 else 1.0
        s = rng.uniform(ego_s[0] - 20, ego_s[-1] + 60)
        on_edge = rng.random() < 0.5 or road.park_w[side] == 0
        edge = road.n_lanes * road.lane_w
        d = sign * (edge - 0.05 if on_edge else edge + road.bike_w + road.park_w[side] / 2)
        for c in range(int(rng.integers(3, 8))):
            size = draw_size(rng, "traffic_cone")
            pose = b.static_pose(s + c * rng.uniform(1.5, 3.0), d + rng.normal(0, 0.03), size[2] / 2, rng.uniform(0, np.pi))
            b.add("traffic_cone", size, pose, "cone")


def _walkers(b: _Builder, roi) -> None:
    """Pedestrians walking along or standing on both sidewalks."""
    road, rng, times = b.road, b.rng, b.times
    for side in (0, 1):
        sign = -1.0 if side == 0 else 1.0
        band = (road.road_half(side) + 1.4, road.road_half(side) + road.walk_w[side] - 0.45)
        for _ in range(int(rng.poisson((roi[1] - roi[0]) / 22.0))):
            size = draw_size(rng, "pedestrian")
            standing = rng.random() < 0.25
            v = 0.0 if standing else rng.uniform(0.9, 1.7) * rng.choice([-1, 1])
            s0 = rng.uniform(roi[0] - abs(v) * b.dur / 2, roi[1] + abs(v) * b.dur / 2)
            d = sign * rng.uniform(*band)
            x, y, h = road.to_world(s0 + v * times, np.full(b.F, d))
            yaw = h + (np.pi if v < 0 else 0.0) + (rng.uniform(-np.pi, np.pi) if standing else 0.0)
            b.add("pedestrian", size, np.c_[x, y, np.full(b.F, CURB_H + size[2] / 2), wrap_angle(yaw)], "walker")


def _crossers(b: _Builder, stop_mode, red_until: float, ego_s: np.ndarray) -> None:
    """Pedestrians crossing at the crosswalk while the light is red, or (without a light) maybe a jaywalker."""
    road, rng = b.road, b.rng
    width = road.road_half(0) + road.road_half(1) + 1.0
    for _ in range(int(rng.integers(2, 7)) if stop_mode else int(rng.random() < 0.4)):
        size = draw_size(rng, "pedestrian")
        speed = rng.uniform(1.1, 1.7)
        direction = float(rng.choice([-1, 1]))
        for _try in range(12):
            if stop_mode:
                s_c = road.crosswalks[-1] + rng.uniform(0.5, 3.5)
                t0 = red_until - width / speed - rng.uniform(0.5, 4.0)
            else:
                s_c = rng.uniform(ego_s[0] - 20, ego_s[-1] + 80)
                t0 = rng.uniform(-5, b.dur)
            if b.add("pedestrian", size, b.crossing(size, s_c, t0, speed, direction), "crossing"):
                break


def _animal(b: _Builder, ego_s: np.ndarray) -> None:
    """Corner case ``rare_class``: an animal crossing the road ahead of the ego (else: on a sidewalk)."""
    road, rng, times = b.road, b.rng, b.times
    size = draw_size(rng, "animal")
    width = road.road_half(0) + road.road_half(1)
    for _try in range(80):
        tc = rng.uniform(0.1, 0.8) * b.dur
        s_c = ego_s[min(b.F - 1, int(np.searchsorted(times, tc)))] + rng.uniform(12, 45)
        speed = rng.uniform(1.0, 3.0)
        pose = b.crossing(size, s_c, tc - width / speed * rng.uniform(0.2, 0.6), speed, float(rng.choice([-1, 1])), 0.8)
        if b.add("animal", size, pose, "animal", corner="rare_class"):
            return
    for _try in range(40):
        side = int(rng.integers(2))
        d = (-1.0 if side == 0 else 1.0) * (road.road_half(side) + road.walk_w[side] / 2)
        x, y, h = road.to_world(ego_s[0] + rng.uniform(5, 30) + rng.uniform(0.5, 1.2) * times, np.full(b.F, d))
        if b.add("animal", size, np.c_[x, y, np.full(b.F, CURB_H + size[2] / 2), wrap_angle(h)], "animal", corner="rare_class"):
            return


def stopped_runs(speed: np.ndarray, rate_hz: float, min_s: float = 4.0) -> list[range]:
    """Runs of consecutive frames with zero speed lasting at least ``min_s`` seconds."""
    out, start = [], None
    for i, still in enumerate(np.append(speed == 0.0, False)):
        if still and start is None:
            start = i
        elif not still and start is not None:
            if (i - start) / rate_hz >= min_s:
                out.append(range(start, i))
            start = None
    return out


def _sensor_corner_cases(b: _Builder, kinds: set[str], cameras, ego_v: np.ndarray, rate_hz: float) -> None:
    """Frames of the sensor corner cases; drops kinds that could not be realised in this log."""
    rng, plan, F = b.rng, b.plan, b.F
    if "lidar_sector_dropout" in kinds:
        n = int(rng.integers(3, 7))
        f0 = int(rng.integers(0, max(1, F - n)))
        start, width = float(rng.uniform(-180, 180)), float(rng.uniform(45, 100))
        for f in range(f0, min(F, f0 + n)):
            plan.sector[f] = (start, width)
    used: set[int] = set()
    for kind in ("camera_black", "camera_overexposed"):
        if kind in kinds:
            n = int(rng.integers(1, 4))
            cam = str(cameras[int(rng.integers(len(cameras)))])
            for _try in range(50):
                f0 = int(rng.integers(0, max(1, F - n)))
                fr = set(range(f0, min(F, f0 + n)))
                if not fr & used:
                    break
            used |= fr
            for f in sorted(fr):
                plan.camera[f] = (cam, kind.split("_")[1])
    if "stationary" in kinds:
        plan.stationary = {i for r in stopped_runs(ego_v, rate_hz) for i in r}
    for kind in ("stationary", "rare_class", "odd_size"):
        realised = bool(plan.stationary) if kind == "stationary" else kind in plan.tracks.values()
        if kind in plan.kinds and not realised:
            plan.kinds.discard(kind)


def corner_detail(**kw) -> str:
    """Machine-readable detail string of a corner-case record (JSON)."""
    return json.dumps(kw, sort_keys=True)


def lidar_from_world(world_from_ego: np.ndarray, ego_from_lidar: np.ndarray) -> np.ndarray:
    return invert(world_from_ego @ ego_from_lidar)
