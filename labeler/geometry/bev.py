"""The bird's-eye-view (BEV) image grid used for review renders and Label Studio rectangles.

The BEV image looks down on the LiDAR frame with the vehicle's forward (+x) pointing UP the image and
its left (+y) pointing LEFT::

      v=0 ┌──────────────┐   x = x_max_m
          │      ^ +x    │
          │ +y <-o       │   (o = LiDAR origin)
          │              │
    v=H-1 └──────────────┘   x = x_min_m
         u=0            u=W-1
       y = y_max_m    y = y_min_m

Pixel (u, v) (u right, v down, continuous, 0 at the top-left image corner) maps to
``x = x_max_m - v * m_per_px``, ``y = y_max_m - u * m_per_px``. Image size:
``W = (y_max_m - y_min_m) / m_per_px``, ``H = (x_max_m - x_min_m) / m_per_px``. The grid need not be square.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BevGrid:
    """Extent (metres, LiDAR frame) and resolution (metres per pixel) of a BEV image."""

    x_min_m: float = -40.0
    x_max_m: float = 60.0
    y_min_m: float = -40.0
    y_max_m: float = 40.0
    m_per_px: float = 0.1

    def __post_init__(self):
        if not (self.x_max_m > self.x_min_m and self.y_max_m > self.y_min_m and self.m_per_px > 0):
            raise ValueError(f"invalid BEV grid {self}: need x_max > x_min, y_max > y_min, m_per_px > 0")

    @property
    def width_px(self) -> int:
        return int(round((self.y_max_m - self.y_min_m) / self.m_per_px))

    @property
    def height_px(self) -> int:
        return int(round((self.x_max_m - self.x_min_m) / self.m_per_px))

    def to_pixels(self, xy) -> np.ndarray:
        """LiDAR (x, y) metres -> BEV (u, v) pixels, shape (..., 2)."""
        xy = np.asarray(xy, dtype=np.float64)
        u = (self.y_max_m - xy[..., 1]) / self.m_per_px
        v = (self.x_max_m - xy[..., 0]) / self.m_per_px
        return np.stack([u, v], axis=-1)

    def to_metres(self, uv) -> np.ndarray:
        """BEV (u, v) pixels -> LiDAR (x, y) metres, shape (..., 2)."""
        uv = np.asarray(uv, dtype=np.float64)
        x = self.x_max_m - uv[..., 1] * self.m_per_px
        y = self.y_max_m - uv[..., 0] * self.m_per_px
        return np.stack([x, y], axis=-1)

    def contains(self, xy) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return (xy[..., 0] >= self.x_min_m) & (xy[..., 0] < self.x_max_m) & (xy[..., 1] >= self.y_min_m) & (xy[..., 1] < self.y_max_m)

    def to_dict(self) -> dict:
        return asdict(self)
