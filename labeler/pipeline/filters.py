"""Frame filters: pure functions that say why a frame is broken, redundant or suspicious.

* :func:`lidar_health` and :func:`camera_health` look at one frame's data.
* :func:`pose_decisions` looks at a whole log's ego poses (no point data needed) and marks stationary
  duplicates and non-keyframes.

Reasons are short strings (``lidar_too_few_points``, ``stationary_duplicate`` ...) stored in the frames table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from labeler.logs.images import HEALTH_WIDTH, LazyImages, health_view
from labeler.pipeline.config import FilterCfg

# frame-level reasons that DROP a frame (the frame is unusable or redundant)
DROP_LIDAR_TOO_FEW = "lidar_too_few_points"
DROP_LIDAR_NONFINITE = "lidar_nonfinite_values"
DROP_STATIONARY = "stationary_duplicate"
DROP_NOT_KEYFRAME = "not_keyframe"
DROP_CAMERA_BROKEN = "camera_broken"
# sensor-health reasons that FLAG a kept frame as a corner case
FLAG_SECTOR_DROPOUT = "lidar_sector_dropout"
FLAG_CAMERA_BLACK = "camera_black"
FLAG_CAMERA_OVEREXPOSED = "camera_overexposed"
FLAG_CAMERA_SKEW = "camera_time_skew"
FLAG_CAMERA_BLURRED = "camera_blurred"


def lidar_health(points: np.ndarray, cfg: FilterCfg) -> tuple[str | None, list[str]]:
    """Return (drop reason or None, corner-case flags) for one sweep of (N, 4) points in the LiDAR frame."""
    n = len(points)
    if n == 0:
        return DROP_LIDAR_TOO_FEW, []
    if np.isfinite(points).all():  # the usual case, one contiguous pass: every point is finite
        finite, n_finite = slice(None), n
    else:  # per point, on x, y, z only (a NaN intensity does not break a point)
        finite = np.isfinite(points[:, :3]).all(axis=1)
        n_finite = int(finite.sum())
    if (1.0 - n_finite / n) > cfg.max_nonfinite_fraction:
        return DROP_LIDAR_NONFINITE, []
    if n_finite < cfg.min_points:
        return DROP_LIDAR_TOO_FEW, []
    flags = []
    if largest_empty_sector_deg(points[finite], cfg.sector_bins * 4, cfg.sector_min_range_m) > cfg.max_empty_sector_deg:
        flags.append(FLAG_SECTOR_DROPOUT)
    return None, flags


def largest_empty_sector_deg(points: np.ndarray, bins: int = 144, min_range_m: float = 1.0,
                             max_points: int = 8192) -> float:
    """Widest contiguous azimuth gap (degrees) without returns beyond ``min_range_m`` (wraps around 360).

    A dead sector returns nothing at any range; a sector a vehicle blocks from 2 m away returns only from that
    vehicle, so returns close to the sensor count (``min_range_m`` only skips returns from the sensor housing).

    At most ``max_points`` evenly strided points are used (a 35k-point sweep still puts ~50 in every 2.5 deg bin).
    """
    step = max(1, len(points) // max_points)
    xy = points[::step, :2]
    far = (xy[:, 0] ** 2 + xy[:, 1] ** 2) > min_range_m ** 2
    az = np.degrees(np.arctan2(xy[far, 1], xy[far, 0])) % 360.0
    if len(az) == 0:
        return 360.0
    occ = np.bincount((az / (360.0 / bins)).astype(int).clip(0, bins - 1), minlength=bins) > 0
    if occ.all():
        return 0.0
    # longest run of empty bins in a circular array: gaps between consecutive occupied bins
    idx = np.flatnonzero(occ)
    gaps = np.diff(np.concatenate([idx, idx[:1] + bins])) - 1
    return float(gaps.max()) * 360.0 / bins


def health_views(images: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The images the camera checks look at: the reduced views of a :class:`LazyImages` (no full decode), else
    the images themselves (:func:`sharpness` reduces them to the same scale)."""
    return images.health_views() if isinstance(images, LazyImages) else images


def camera_health(images: Mapping[str, np.ndarray], lidar_ts_ns: int, camera_ts_ns: dict[str, int],
                  cfg: FilterCfg, means: dict[str, float] | None = None) -> list[str]:
    """Corner-case flags per camera, e.g. ``camera_black:front`` or ``camera_time_skew:back``.

    ``means``: per-camera mean brightness when already computed (see :func:`image_means`).
    """
    flags = []
    views = health_views(images)
    greys = images.health_greys() if isinstance(images, LazyImages) else views
    means = means if means is not None else image_means(views)
    for cam in sorted(views):
        m = means[cam]
        if m < cfg.camera_black_mean:
            flags.append(f"{FLAG_CAMERA_BLACK}:{cam}")
        elif m > cfg.camera_overexposed_mean:
            flags.append(f"{FLAG_CAMERA_OVEREXPOSED}:{cam}")
        elif sharpness(greys[cam]) < cfg.camera_blur_var:
            flags.append(f"{FLAG_CAMERA_BLURRED}:{cam}")
        ct = camera_ts_ns.get(cam, -1)
        if ct >= 0 and abs(ct - lidar_ts_ns) / 1e6 > cfg.max_camera_skew_ms:
            flags.append(f"{FLAG_CAMERA_SKEW}:{cam}")
    return flags


def sharpness(img: np.ndarray, width: int = HEALTH_WIDTH) -> float:
    """Variance of the Laplacian of the grey image at ``width`` px wide: low = blurred or featureless.

    ``img``: (H, W, 3) RGB or (H, W) grey uint8. A wider image is first reduced by an integer factor (box
    filter, like a JPEG's reduced decoding), then resized to ``width``; a narrower one is scaled up. The grey
    view of a :class:`LazyImages` image (``health_greys``) is used as it is.
    """
    from PIL import Image

    if img.ndim == 2 and img.shape[1] == width and img.dtype == np.uint8:  # already the grey view
        g = img.astype(np.float32)
        lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
        return float(lap.var())
    p = Image.fromarray(img)
    if p.width > width:
        p = Image.fromarray(health_view(p, width))
    p = p.convert("L")
    if p.width != width:
        p = p.resize((width, max(3, round(p.height * width / p.width))), Image.BILINEAR)
    g = np.asarray(p, dtype=np.float32)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def image_means(images: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean brightness (0-255) of each camera image (of its reduced view for a :class:`LazyImages`)."""
    return {cam: _mean(img) for cam, img in health_views(images).items()}


def _mean(img: np.ndarray) -> float:
    if not img.size:
        return 0.0
    if img.dtype == np.uint8 and img.size < 2 ** 24 and img.flags.c_contiguous:  # exact integer sum, one pass
        return int(np.add.reduce(img.reshape(-1), dtype=np.uint32)) / img.size
    return float(img.mean())


def scenario_tags(images: Mapping[str, np.ndarray], speed_mps: float, cfg: FilterCfg,
                  means: dict[str, float] | None = None) -> tuple[list[str], float]:
    """Scenario tags of a frame (``day``/``night`` from image brightness, ``speed:<bin>``) and its brightness."""
    tags = []
    means = means if means is not None else image_means(images)
    brightness = float(np.mean(list(means.values()))) if means else float("nan")
    if images:
        tags.append("night" if brightness < cfg.night_brightness else "day")
    names = ("stopped", "slow", "medium", "fast")
    if np.isfinite(speed_mps):
        k = int(np.searchsorted(np.asarray(cfg.speed_bins_mps), speed_mps, side="right"))
        tags.append(f"speed:{names[min(k, len(names) - 1)]}")
    else:
        tags.append("speed:unknown")
    return tags, brightness


MODEL_TAGS = ("crowded", "vru_near")
"""Model-derived tags besides ``obj:<class>`` (:func:`model_tags`)."""
VRU_CLASSES = ("pedestrian", "cyclist")


def is_model_tag(tag: str) -> bool:
    return tag.startswith("obj:") or tag in MODEL_TAGS


def model_tags(categories, scores, boxes, cfg: FilterCfg) -> list[str]:
    """Model-derived scenario tags of a kept frame from its detections (LiDAR frame): ``obj:<class>`` for every class
    with a box scoring >= ``model_tag_score`` (sorted), ``crowded`` with at least ``crowded_min_objects`` such boxes,
    ``vru_near`` when such a pedestrian or cyclist is closer than ``vru_near_m`` (BEV)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    ok = s >= cfg.model_tag_score
    cats = np.asarray(categories, dtype=object).reshape(-1)[ok]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)[ok]
    tags = [f"obj:{c}" for c in sorted({str(c) for c in cats})]
    if ok.sum() >= cfg.crowded_min_objects:
        tags.append("crowded")
    vru = np.isin(cats.astype(str), VRU_CLASSES) if len(cats) else np.zeros(0, dtype=bool)
    if vru.any() and (np.hypot(b[vru, 0], b[vru, 1]) < cfg.vru_near_m).any():
        tags.append("vru_near")
    return tags


def ego_speed_mps(timestamps_ns: np.ndarray, world_from_ego: np.ndarray) -> np.ndarray:
    """Ego speed per frame (m/s) by central differences of the pose positions."""
    t = np.asarray(timestamps_ns, dtype=np.float64) / 1e9
    p = np.asarray(world_from_ego)[:, :3, 3]
    if len(t) < 2:
        return np.zeros(len(t))
    v = np.gradient(p, t, axis=0)
    return np.linalg.norm(v[:, :2], axis=1)


def pose_decisions(timestamps_ns: np.ndarray, world_from_ego: np.ndarray, cfg: FilterCfg,
                   poses_known: bool = True, sequential: bool = True) -> list[str | None]:
    """Per frame: None (keep), ``stationary_duplicate`` or ``not_keyframe``, from the poses alone.

    While the ego is stationary (speed < ``stationary_speed_mps``) one frame per ``stationary_keep_every_s``
    is kept; otherwise at most ``keyframe_hz`` frames per second are kept (the first frame in each slot).
    Logs without poses skip the stationary test; frames that are not a time sequence (e.g. KITTI object
    samples) are all kept.
    """
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    if not sequential:
        return [None] * len(ts)
    speed = ego_speed_mps(ts, world_from_ego) if poses_known else np.full(len(ts), np.inf)
    out: list[str | None] = []
    period_ns = int(1e9 / cfg.keyframe_hz)
    still_period_ns = int(cfg.stationary_keep_every_s * 1e9)
    last_slot = None
    last_still_keep = None
    t0 = int(ts[0]) if len(ts) else 0
    for t, s in zip(ts, speed):
        if s < cfg.stationary_speed_mps:
            if last_still_keep is not None and t - last_still_keep < still_period_ns:
                out.append(DROP_STATIONARY)
                continue
            last_still_keep = int(t)
        else:
            last_still_keep = None
        slot = (int(t) - t0) // period_ns
        if slot == last_slot:
            out.append(DROP_NOT_KEYFRAME)
            continue
        last_slot = slot
        out.append(None)
    return out
