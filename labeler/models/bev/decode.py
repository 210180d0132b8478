"""Network outputs -> boxes: heatmap peaks by 3x3 max pooling (no NMS needed), optional rotated-BEV NMS.

A peak is a cell whose sigmoid score equals the max of its 3x3 neighbourhood (in its class channel); the top
``max_detections`` peaks over all classes above ``score_threshold`` become boxes, decoded from the regression
channels at that cell (inverse of :func:`labeler.models.bev.targets.build_targets`)::

    x = x_min + (i + dx) * cell,  y = y_min + (j + dy) * cell,  z,  (l, w, h) = exp(log size),  yaw = atan2(sin, cos)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class RawDetections:
    """Boxes of one frame before class names: boxes (N, 7) float64, labels (N,) int64, scores (N,) float64."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def decode(heatmap: torch.Tensor, reg: torch.Tensor, cfg, score_threshold: float = 0.1,
           max_detections: int = 200) -> list[RawDetections]:
    """Decode a batch.

    Args:
        heatmap: (B, K, h, w) logits. reg: (B, 8, h, w).
        cfg: :class:`~labeler.models.bev.network.BevConfig`.

    Returns:
        B :class:`RawDetections`, scores descending.
    """
    B, K, h, w = heatmap.shape
    score = torch.sigmoid(heatmap.float()).contiguous()
    peak = F.max_pool2d(score, 3, 1, 1)
    score = torch.where(peak == score, score, torch.zeros_like(score))
    top = min(max_detections, K * h * w)
    vals, idx = score.view(B, -1).topk(top, dim=1)
    cell = cfg.out_cell_m
    out = []
    for b in range(B):
        keep = vals[b] >= score_threshold
        s, ind = vals[b][keep], idx[b][keep]
        k = ind // (h * w)
        cellidx = ind % (h * w)
        i, j = cellidx // w, cellidx % w
        r = reg[b].float().reshape(reg.shape[1], -1)[:, cellidx]  # (8, N)
        x = cfg.x_range[0] + (i.float() + r[0]) * cell
        y = cfg.y_range[0] + (j.float() + r[1]) * cell
        size = torch.exp(r[3:6].clamp(max=4.0))
        yaw = torch.atan2(r[6], r[7])
        boxes = torch.stack([x, y, r[2], size[0], size[1], size[2], yaw], dim=1)
        out.append(RawDetections(boxes.cpu().double().numpy(), k.cpu().numpy().astype(np.int64), s.cpu().double().numpy()))
    return out


def rotated_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.2) -> np.ndarray:
    """Greedy NMS on exact rotated BEV IoU (labeler.geometry.boxes.bev_iou). Returns kept indices, scores descending."""
    from labeler.geometry.boxes import bev_iou

    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    iou = bev_iou(boxes[order], boxes[order])
    keep = []
    suppressed = np.zeros(len(order), bool)
    for a in range(len(order)):
        if suppressed[a]:
            continue
        keep.append(order[a])
        suppressed |= iou[a] > iou_threshold
    return np.asarray(keep, dtype=np.int64)
