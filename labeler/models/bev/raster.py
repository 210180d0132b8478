"""Points -> bird's-eye-view raster features, with torch scatter ops (no Python loop over points).

Grid convention (LiDAR frame, metres)::

        +x (forward)  -> raster rows (dim -2), row i covers x in [x_min + i*cell, x_min + (i+1)*cell)
        +y (left)     -> raster cols (dim -1), col j covers y in [y_min + j*cell, y_min + (j+1)*cell)

          row 0 = x_min (behind)            The grid is symmetric about the sensor (x_min = -x_max,
          ...                               y_min = -y_max), so mirroring the points in x (or y) is
          row H-1 = x_max (ahead)           exactly flipping the raster along rows (or columns).

Feature channels (:data:`FEATURES`), all in [0, 1] and 0 in empty cells:

0. ``z_max``: highest point's height, ``(z - z_min) / (z_max - z_min)``
1. ``z_mean``: mean height, same scaling
2. ``log_density``: ``log1p(count) / log(1 + density_norm)``, clipped to 1
3. ``i_max``: highest intensity
4. ``i_mean``: mean intensity
5. ``occupied``: 1 where the cell holds a point

Two normalisations make the features sensor-independent (``BevConfig.height_ref`` / ``intensity_norm``; checkpoints
from before they existed use ``"sensor"`` / ``"none"``):

* **Heights above the local ground** (``height_ref="ground"``): real LiDAR frames put the road anywhere (nuScenes
  and KITTI ~1.8 m below the sensor, Argoverse 2 sweeps ~0.4 m below the ego origin) and real roads slope.
  :func:`ground_height` estimates a coarse ground height map per sweep (lowest point per ``ground_cell_m`` cell,
  a morphological opening over +-2 cells so cells under a vehicle take the road beside it, holes filled from
  their neighbours) and ``z_range`` is then relative to it. The network's box ``z`` is relative to the same map
  (:func:`ground_at` adds it back).
* **Intensity as a within-sweep rank** (``intensity_norm="rank"``): sensors report intensity on different scales
  (KITTI reflectance 0-1, nuScenes / AV2 0-255); the empirical CDF of the sweep's intensities (1024 bins) maps
  every sensor to a uniform [0, 1].
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

FEATURES: tuple[str, ...] = ("z_max", "z_mean", "log_density", "i_max", "i_mean", "occupied")


def grid_shape(cfg) -> tuple[int, int]:
    """(H, W) = (cells along x, cells along y) of the input raster for a :class:`~labeler.models.bev.network.BevConfig`."""
    return (int(round((cfg.x_range[1] - cfg.x_range[0]) / cfg.cell_m)), int(round((cfg.y_range[1] - cfg.y_range[0]) / cfg.cell_m)))


GROUND_RANGE_M = (-10.0, 10.0)  # points outside this z band (LiDAR frame) never count as ground
GROUND_MIN_FILTER = 2           # cells each side of the min filter
GROUND_OPEN_CAP_M = 0.5         # the opening lifts the min filter by at most this much
GROUND_OUTLIER_M = 1.5          # a cell's lowest point this far below its neighbourhood's median is noise


def ground_shape(cfg) -> tuple[int, int]:
    """(Hg, Wg) cells of the ground height map (``cfg.ground_cell_m`` cells over the raster's extent)."""
    return (int(round((cfg.x_range[1] - cfg.x_range[0]) / cfg.ground_cell_m)),
            int(round((cfg.y_range[1] - cfg.y_range[0]) / cfg.ground_cell_m)))


def ground_height(P: torch.Tensor, B: int, cfg) -> torch.Tensor:
    """Coarse ground height map of a batch.

    Args:
        P: (N, 5) ``[x, y, z, intensity, batch index]`` points of the whole batch, LiDAR frame.
        B: batch size.

    Returns:
        (B, Hg, Wg) float32 ground height (m, LiDAR frame) per ``ground_cell_m`` cell: the lowest point of the cell
        (cells whose lowest point is more than ``GROUND_OUTLIER_M`` below the mean of the +-2-cell
        neighbourhood are below-ground noise and dropped), then a morphological opening over +-``GROUND_MIN_FILTER``
        cells (minimum, then maximum: a cell under a vehicle takes the road beside it, a sloped road stays
        unbiased); cells with no point in that window take the mean of
        the known cells of the smallest enclosing 2^k block, and a sweep with no points at all gets 0.
    """
    Hg, Wg = ground_shape(cfg)
    dev = P.device
    x, y, z, _, bi = P.unbind(1)
    gx = torch.floor((x - cfg.x_range[0]) / cfg.ground_cell_m)
    gy = torch.floor((y - cfg.y_range[0]) / cfg.ground_cell_m)
    ok = (gx >= 0) & (gx < Hg) & (gy >= 0) & (gy < Wg) & (z >= GROUND_RANGE_M[0]) & (z < GROUND_RANGE_M[1])
    flat = ((bi[ok].long() * Hg + gx[ok].long()) * Wg + gy[ok].long())
    big = 1e3
    g = torch.full((B * Hg * Wg,), big, device=dev).scatter_reduce_(0, flat, z[ok], reduce="amin", include_self=True)
    g = g.view(B, 1, Hg, Wg)
    known = g < big / 2
    kf = known.float()
    ref = F.avg_pool2d(torch.where(known, g, torch.zeros_like(g)), 5, 1, 2) / F.avg_pool2d(kf, 5, 1, 2).clamp(min=1e-9)
    g = torch.where(known & (g < ref - GROUND_OUTLIER_M), torch.full_like(g, big), g)
    # morphological opening (min filter, then max filter over the same window): removes anything narrower than
    # the window that stands on the road (vehicles, people, poles) and keeps a planar road, slope included
    # (capped at GROUND_OPEN_CAP_M above the min filter: where the window holds no road, e.g. along walls, the
    # maximum would pick up object heights)
    k = 2 * GROUND_MIN_FILTER + 1
    low = -F.max_pool2d(-g, k, 1, GROUND_MIN_FILTER)
    g = F.max_pool2d(torch.where(low < big / 2, low, torch.full_like(low, -big)), k, 1, GROUND_MIN_FILTER)
    g = torch.where(low < big / 2, torch.minimum(g, low + GROUND_OPEN_CAP_M), torch.full_like(g, -big))
    known = (g > -big / 2).float()
    g = g * known
    s = 2
    while s < 2 * max(Hg, Wg) and not bool(known.all()):
        num = F.avg_pool2d(g * known, s, s, ceil_mode=True)
        den = F.avg_pool2d(known, s, s, ceil_mode=True)
        coarse = F.interpolate(num / den.clamp(min=1e-9), scale_factor=s, mode="nearest")[..., :Hg, :Wg]
        have = F.interpolate((den > 0).float(), scale_factor=s, mode="nearest")[..., :Hg, :Wg]
        fill = (known == 0) & (have > 0)
        g = torch.where(fill, coarse, g)
        known = torch.where(fill, torch.ones_like(known), known)
        s *= 2
    return g[:, 0]


def ground_at(ground: torch.Tensor | np.ndarray, b: int, xy: np.ndarray, cfg) -> np.ndarray:
    """Ground height (m) under LiDAR-frame points ``xy`` (N, 2) of batch item ``b`` (nearest map cell, clamped)."""
    g = ground[b].detach().cpu().numpy() if torch.is_tensor(ground) else np.asarray(ground)[b]
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    i = np.clip(np.floor((xy[:, 0] - cfg.x_range[0]) / cfg.ground_cell_m).astype(np.int64), 0, g.shape[0] - 1)
    j = np.clip(np.floor((xy[:, 1] - cfg.y_range[0]) / cfg.ground_cell_m).astype(np.int64), 0, g.shape[1] - 1)
    return g[i, j].astype(np.float64)


def intensity_rank(inten: torch.Tensor, bi: torch.Tensor, B: int, bins: int = 1024) -> torch.Tensor:
    """Within-sweep empirical CDF of intensities (mid-rank of ties, ``bins`` levels over [0, 1]) -> [0, 1]."""
    q = (inten.clamp(0.0, 1.0) * (bins - 1)).round().long()
    flat = bi * bins + q
    hist = torch.zeros(B * bins, device=inten.device).index_add_(0, flat, torch.ones_like(inten)).view(B, bins)
    n = hist.sum(dim=1, keepdim=True).clamp(min=1.0)
    below = torch.cumsum(hist, dim=1) - hist
    cdf = ((below + 0.5 * hist) / n).view(-1)
    return cdf[flat]


def rasterize(points: Sequence[torch.Tensor | np.ndarray], cfg, device: str | torch.device = "cpu",
              return_ground: bool = False):
    """BEV features of a batch of sweeps.

    Args:
        points: B arrays (N_b, >=4) ``[x, y, z, intensity]``, LiDAR frame, metres; intensity in [0, 1].
            Points outside the grid or the z range, and non-finite points, are ignored.
        cfg: a :class:`~labeler.models.bev.network.BevConfig` (uses x_range, y_range, z_range, cell_m, density_norm).

        return_ground: also return the ground height map (None when ``cfg.height_ref`` is ``"sensor"``).

    Returns:
        (B, 6, H, W) float32 features (see the module docstring), H along x, W along y; with ``return_ground``
        a tuple (features, (B, Hg, Wg) ground map or None).
    """
    H, W = grid_shape(cfg)
    B = len(points)
    C = len(FEATURES)
    tens = []
    for b, p in enumerate(points):
        t = torch.as_tensor(np.asarray(p, dtype=np.float32) if not torch.is_tensor(p) else p, dtype=torch.float32, device=device)
        if t.ndim != 2 or t.shape[1] < 4:
            raise ValueError(f"points must have shape (N, >=4) [x, y, z, intensity], got {tuple(t.shape)}")
        tens.append(torch.cat([t[:, :4], torch.full((len(t), 1), float(b), device=device)], dim=1))
    if not tens:
        empty = torch.zeros((0, C, H, W), device=device)
        return (empty, None) if return_ground else empty
    P = torch.cat(tens, dim=0)
    P = P[torch.isfinite(P).all(dim=1)]
    x, y, z, inten, bi = P.unbind(1)
    ground = None
    if cfg.height_ref == "ground":
        ground = ground_height(P, B, cfg)
        Hg, Wg = ground.shape[1:]
        gx = torch.floor((x - cfg.x_range[0]) / cfg.ground_cell_m).long().clamp(0, Hg - 1)
        gy = torch.floor((y - cfg.y_range[0]) / cfg.ground_cell_m).long().clamp(0, Wg - 1)
        z = z - ground.reshape(-1)[(bi.long() * Hg + gx) * Wg + gy]
    elif cfg.height_ref != "sensor":
        raise ValueError(f"BevConfig.height_ref must be 'sensor' or 'ground', got {cfg.height_ref!r}")
    if cfg.intensity_norm == "rank":
        inten = intensity_rank(inten, bi.long(), B)
    elif cfg.intensity_norm != "none":
        raise ValueError(f"BevConfig.intensity_norm must be 'none' or 'rank', got {cfg.intensity_norm!r}")
    ix = torch.floor((x - cfg.x_range[0]) / cfg.cell_m)
    iy = torch.floor((y - cfg.y_range[0]) / cfg.cell_m)
    z0, z1 = cfg.z_range
    keep = (ix >= 0) & (ix < H) & (iy >= 0) & (iy < W) & (z >= z0) & (z < z1) & torch.isfinite(inten)
    ix, iy, bi = ix[keep].long(), iy[keep].long(), bi[keep].long()
    zn = (z[keep] - z0) / (z1 - z0)
    it = inten[keep].clamp(0.0, 1.0)
    flat = (bi * H + ix) * W + iy
    n = B * H * W
    count = torch.zeros(n, device=device).index_add_(0, flat, torch.ones_like(zn))
    zmax = torch.zeros(n, device=device).scatter_reduce_(0, flat, zn, reduce="amax", include_self=True)
    zsum = torch.zeros(n, device=device).index_add_(0, flat, zn)
    imax = torch.zeros(n, device=device).scatter_reduce_(0, flat, it, reduce="amax", include_self=True)
    isum = torch.zeros(n, device=device).index_add_(0, flat, it)
    denom = count.clamp(min=1.0)
    feats = torch.stack([
        zmax,
        zsum / denom,
        (torch.log1p(count) / math.log1p(cfg.density_norm)).clamp(max=1.0),
        imax,
        isum / denom,
        (count > 0).float(),
    ], dim=0)  # (C, B*H*W)
    feats = feats.view(C, B, H, W).permute(1, 0, 2, 3).contiguous()
    return (feats, ground) if return_ground else feats
