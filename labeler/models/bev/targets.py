"""Training targets from ground-truth boxes (CenterPoint style) and the loss.

For each GT box of a model class whose centre lies in the grid, at output resolution (cell ``cfg.out_cell_m``):

* ``heatmap[k]`` (K, h, w): a Gaussian around the box centre's cell ``(i, j) = floor(centre / cell)`` of class k,
  radius from CenterPoint's rule (:func:`gaussian_radius` of the box's BEV size in cells, ``min_overlap`` 0.1,
  at least ``min_radius`` cells), ``sigma = (2 r + 1) / 6``; overlapping Gaussians take the max.
* one regression row ``[dx, dy, z, log l, log w, log h, sin yaw, cos yaw]`` at flat index ``i * w + j``, with
  ``(dx, dy) = centre / cell - (i, j)`` in [0, 1) the sub-cell offset; box z (m, LiDAR frame); size in metres.

Rows are padded to ``max_objects`` with ``mask`` False.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MIN_OVERLAP = 0.1
MIN_RADIUS = 2


@dataclass
class Targets:
    """Targets of a batch. heatmap (B, K, h, w) float32; index (B, M) int64 flat cell ``i * w + j``;
    mask (B, M) bool; reg (B, M, 8) float32."""

    heatmap: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor
    reg: torch.Tensor

    @classmethod
    def stack(cls, items: list["Targets"]) -> "Targets":
        return cls(*(torch.stack([getattr(t, f) for t in items]) for f in ("heatmap", "index", "mask", "reg")))


def gaussian_radius(height: float, width: float, min_overlap: float = MIN_OVERLAP) -> float:
    """CenterNet / CenterPoint radius (cells) within which a corner shift keeps IoU >= ``min_overlap``."""
    a1, b1 = 1, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _draw_gaussian(hm: np.ndarray, i: int, j: int, radius: int) -> None:
    d = 2 * radius + 1
    sigma = d / 6
    ax = np.arange(-radius, radius + 1)
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma * sigma))
    H, W = hm.shape
    i0, i1 = max(0, i - radius), min(H, i + radius + 1)
    j0, j1 = max(0, j - radius), min(W, j + radius + 1)
    sub = g[i0 - i + radius : i1 - i + radius, j0 - j + radius : j1 - j + radius]
    np.maximum(hm[i0:i1, j0:j1], sub, out=hm[i0:i1, j0:j1])


def build_targets(boxes: np.ndarray, labels: np.ndarray, cfg, max_objects: int = 256) -> Targets:
    """Targets of one frame.

    Args:
        boxes: (M, 7) GT ``[x, y, z, l, w, h, yaw]`` (LiDAR frame, z geometric centre).
        labels: (M,) int class index into ``cfg.classes``; negative = not a model class (skipped).
        cfg: :class:`~labeler.models.bev.network.BevConfig`.
    """
    from labeler.models.bev.raster import grid_shape

    H, W = (s // cfg.out_stride for s in grid_shape(cfg))
    K = len(cfg.classes)
    cell = cfg.out_cell_m
    hm = np.zeros((K, H, W), np.float32)
    index = np.zeros(max_objects, np.int64)
    mask = np.zeros(max_objects, bool)
    reg = np.zeros((max_objects, 8), np.float32)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    n = 0
    for b, k in zip(boxes, np.asarray(labels).reshape(-1)):
        if k < 0 or n >= max_objects:
            continue
        u = (b[0] - cfg.x_range[0]) / cell
        v = (b[1] - cfg.y_range[0]) / cell
        i, j = int(math.floor(u)), int(math.floor(v))
        if not (0 <= i < H and 0 <= j < W):
            continue
        r = max(MIN_RADIUS, int(gaussian_radius(b[3] / cell, b[4] / cell)))
        _draw_gaussian(hm[int(k)], i, j, r)
        index[n] = i * W + j
        mask[n] = True
        reg[n] = (u - i, v - j, b[2], math.log(max(b[3], 0.05)), math.log(max(b[4], 0.05)), math.log(max(b[5], 0.05)),
                  math.sin(b[6]), math.cos(b[6]))
        n += 1
    return Targets(torch.from_numpy(hm), torch.from_numpy(index), torch.from_numpy(mask), torch.from_numpy(reg))


def relative_z_targets(t: Targets, ground: torch.Tensor | None, cfg) -> Targets:
    """Box z targets made relative to the ground map (``height_ref="ground"`` models; ``ground`` None: unchanged).

    The ground is read at each box's centre, ``x = x_min + (i + dx) * cell`` (the cell of the same map the detector
    reads when it adds the ground back, :func:`labeler.models.bev.raster.ground_at`).
    """
    if ground is None:
        return t
    from labeler.models.bev.raster import grid_shape

    W = grid_shape(cfg)[1] // cfg.out_stride
    Hg, Wg = ground.shape[1:]
    i = torch.div(t.index, W, rounding_mode="floor").float()
    j = (t.index % W).float()
    x = cfg.x_range[0] + (i + t.reg[..., 0]) * cfg.out_cell_m
    y = cfg.y_range[0] + (j + t.reg[..., 1]) * cfg.out_cell_m
    gi = torch.floor((x - cfg.x_range[0]) / cfg.ground_cell_m).long().clamp(0, Hg - 1)
    gj = torch.floor((y - cfg.y_range[0]) / cfg.ground_cell_m).long().clamp(0, Wg - 1)
    g = ground.reshape(ground.shape[0], -1).gather(1, gi * Wg + gj)
    reg = t.reg.clone()
    reg[..., 2] = torch.where(t.mask, reg[..., 2] - g, reg[..., 2])
    return Targets(t.heatmap, t.index, t.mask, reg)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of peaks (cells with target 1)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1.0 - pos
    pos_loss = torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = torch.log(1 - p) * p**alpha * (1 - target) ** beta * neg
    num = pos.sum().clamp(min=1.0)
    return -(pos_loss.sum() + neg_loss.sum()) / num


REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5)


def gather(feat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) features at flat cells (B, M) -> (B, M, C)."""
    B, C = feat.shape[:2]
    flat = feat.view(B, C, -1)
    return flat.gather(2, index[:, None, :].expand(B, C, index.shape[1])).permute(0, 2, 1)


def bev_loss(out: dict[str, torch.Tensor], t: Targets, reg_weight: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal heatmap loss + ``reg_weight`` x masked L1 regression (mean over objects). Returns (loss, parts)."""
    hm = focal_loss(out["heatmap"], t.heatmap)
    pred = gather(out["reg"], t.index)
    w = torch.tensor(REG_WEIGHTS, dtype=pred.dtype, device=pred.device)
    m = t.mask.unsqueeze(-1).float()
    reg = (F.l1_loss(pred, t.reg, reduction="none") * w * m).sum() / m.sum().clamp(min=1.0)
    loss = hm + reg_weight * reg
    return loss, {"loss": float(loss.detach()), "heatmap": float(hm.detach()), "reg": float(reg.detach())}
