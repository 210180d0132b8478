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
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

FEATURES: tuple[str, ...] = ("z_max", "z_mean", "log_density", "i_max", "i_mean", "occupied")


def grid_shape(cfg) -> tuple[int, int]:
    """(H, W) = (cells along x, cells along y) of the input raster for a :class:`~labeler.models.bev.network.BevConfig`."""
    return (int(round((cfg.x_range[1] - cfg.x_range[0]) / cfg.cell_m)), int(round((cfg.y_range[1] - cfg.y_range[0]) / cfg.cell_m)))


def rasterize(points: Sequence[torch.Tensor | np.ndarray], cfg, device: str | torch.device = "cpu") -> torch.Tensor:
    """BEV features of a batch of sweeps.

    Args:
        points: B arrays (N_b, >=4) ``[x, y, z, intensity]``, LiDAR frame, metres; intensity in [0, 1].
            Points outside the grid or the z range, and non-finite points, are ignored.
        cfg: a :class:`~labeler.models.bev.network.BevConfig` (uses x_range, y_range, z_range, cell_m, density_norm).

    Returns:
        (B, 6, H, W) float32 features (see the module docstring), H along x, W along y.
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
        return torch.zeros((0, C, H, W), device=device)
    P = torch.cat(tens, dim=0)
    x, y, z, inten, bi = P.unbind(1)
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
    return feats.view(C, B, H, W).permute(1, 0, 2, 3).contiguous()
