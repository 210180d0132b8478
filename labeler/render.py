"""Review assets: the bird's-eye-view render of a sweep (pure; returns an RGB array).

The image follows :class:`labeler.geometry.bev.BevGrid` (forward = up, left = left, known metres/pixel), so
Label Studio rectangles drawn on it convert back to metres exactly. It shows the points coloured by height or
intensity, range rings every 10 m, the ego vehicle and a scale bar.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from labeler.geometry.bev import BevGrid

BACKGROUND = (18, 18, 24)
RING_COLOR = (70, 70, 90)


def render_bev(points: np.ndarray, grid: BevGrid, color_by: str = "height", ground_z_m: float = -1.8,
               ring_step_m: float = 10.0) -> np.ndarray:
    """Render (N, 4) LiDAR points [x, y, z, intensity] to an (H, W, 3) uint8 BEV image."""
    W, H = grid.width_px, grid.height_px
    img = np.zeros((H, W, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    # range rings around the LiDAR origin
    o = grid.to_pixels(np.array([0.0, 0.0]))
    rmax = max(abs(grid.x_min_m), abs(grid.x_max_m), abs(grid.y_min_m), abs(grid.y_max_m)) * 1.5
    r = ring_step_m
    while r <= rmax:
        rp = r / grid.m_per_px
        draw.ellipse([o[0] - rp, o[1] - rp, o[0] + rp, o[1] + rp], outline=RING_COLOR, width=1)
        draw.text((o[0] + 3, o[1] - rp + 2), f"{int(r)} m", fill=RING_COLOR)
        r += ring_step_m
    img = np.asarray(pil).copy()
    # points, far-to-near does not matter in BEV; draw higher points last
    p = np.asarray(points, dtype=np.float64)
    p = p[np.isfinite(p[:, :3]).all(axis=1)]
    p = p[grid.contains(p[:, :2])]
    if len(p):
        if color_by == "intensity":
            val = np.clip(p[:, 3] if p[:, 3].max() <= 1.0 else p[:, 3] / 255.0, 0, 1)
            cmap = colormaps["viridis"]
        else:
            val = np.clip((p[:, 2] - ground_z_m) / 3.0, 0, 1)
            cmap = colormaps["turbo"]
        order = np.argsort(val)
        p, val = p[order], val[order]
        uv = grid.to_pixels(p[:, :2]).astype(int)
        uv[:, 0] = uv[:, 0].clip(0, W - 1)
        uv[:, 1] = uv[:, 1].clip(0, H - 1)
        colors = (cmap(val)[:, :3] * 255).astype(np.uint8)
        # 2x2 px per point so sparse far returns stay visible
        for du in (0, 1):
            for dv in (0, 1):
                img[(uv[:, 1] + dv).clip(0, H - 1), (uv[:, 0] + du).clip(0, W - 1)] = colors
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    # ego marker: a 4.5 x 1.9 m triangle-nosed outline at the origin pointing forward (up)
    ego = np.array([[2.5, 0.0], [1.2, 0.95], [-2.0, 0.95], [-2.0, -0.95], [1.2, -0.95]])
    draw.polygon([tuple(q) for q in grid.to_pixels(ego)], outline=(255, 255, 255), width=2)
    # scale bar: 10 m, bottom-left
    bar_px = 10.0 / grid.m_per_px
    x0, y0 = 12, H - 16
    draw.line([x0, y0, x0 + bar_px, y0], fill=(255, 255, 255), width=3)
    draw.text((x0, y0 - 14), f"10 m  ({grid.m_per_px:g} m/px)", fill=(255, 255, 255))
    return np.asarray(pil)
