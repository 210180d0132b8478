"""Pure conversions between our boxes and Label Studio result items (no I/O).

Label Studio rectangle semantics (checked in its front-end and UI): ``x, y`` are the top-left corner BEFORE
rotation in % of image width / height; ``width, height`` the unrotated size in % of image width / height;
``rotation`` degrees CLOCKWISE on screen (image v down) about the (x, y) corner, applied in PIXEL space.
BEV images are non-square in general, so every rotation is done in pixels.

A BEV box maps its length ``l`` to the rect width (along the heading) and its width ``w`` to the rect height.
With the BEV convention (+x up, +y left, see :mod:`labeler.geometry.bev`) the heading (cos yaw, sin yaw) in metres
is (-sin yaw, -cos yaw) in pixels (u right, v down), so ``rotation = atan2(-cos yaw, -sin yaw)`` in degrees,
normalised to [0, 360): a yaw=0 box (pointing forward, up the image) has rotation 270.

z and height of a BEV box travel as per-region ``Number`` items (``z_m``, ``height_m``) with the rectangle's id.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np

from labeler.geometry.bev import BevGrid
from labeler.geometry.boxes import wrap_angle
from labeler.studio.labeling_config import BEV_BOX, BEV_IMAGE, HEIGHT_NUMBER, VERDICT, Z_NUMBER, camera_box_name, camera_image_name

_ID_OK = re.compile(r"^[A-Za-z0-9_]+$")
_MAX_ID = 20


def bev_box_to_rect(box7, grid: BevGrid) -> dict:
    """Box ``[x, y, z, l, w, h, yaw]`` (LiDAR frame) -> LS rect value ``{x, y, width, height, rotation}`` (%, degrees)."""
    x, y, _z, l, w, _h, yaw = (float(v) for v in np.asarray(box7, dtype=np.float64).reshape(7))
    W_img, H_img = grid.width_px, grid.height_px
    cu, cv = grid.to_pixels([x, y])
    W, H = l / grid.m_per_px, w / grid.m_per_px
    theta = math.degrees(math.atan2(-math.cos(yaw), -math.sin(yaw))) % 360.0
    if theta >= 360.0:  # -tiny % 360 == 360.0 in floating point
        theta = 0.0
    t = math.radians(theta)
    c, s = math.cos(t), math.sin(t)
    x0 = cu - (W * c - H * s) / 2
    y0 = cv - (W * s + H * c) / 2
    return {
        "x": x0 / W_img * 100.0,
        "y": y0 / H_img * 100.0,
        "width": W / W_img * 100.0,
        "height": H / H_img * 100.0,
        "rotation": theta,
    }


def rect_to_bev_box(value: dict, grid: BevGrid, z: float, h: float) -> np.ndarray:
    """LS rect value (%, degrees) + centre z and height (m) -> box ``[x, y, z, l, w, h, yaw]``, yaw in [-pi, pi)."""
    W_img, H_img = grid.width_px, grid.height_px
    x0 = float(value["x"]) / 100.0 * W_img
    y0 = float(value["y"]) / 100.0 * H_img
    W = float(value["width"]) / 100.0 * W_img
    H = float(value["height"]) / 100.0 * H_img
    t = math.radians(float(value.get("rotation", 0.0) or 0.0))
    c, s = math.cos(t), math.sin(t)
    cu = x0 + (W * c - H * s) / 2
    cv = y0 + (W * s + H * c) / 2
    x, y = grid.to_metres([cu, cv])
    yaw = float(wrap_angle(math.atan2(-c, -s)))
    return np.array([x, y, float(z), W * grid.m_per_px, H * grid.m_per_px, float(h), yaw], dtype=np.float64)


def camera_box_to_rect(x1: float, y1: float, x2: float, y2: float, img_w: int, img_h: int) -> dict:
    """Pixel box corners -> LS rect value (%), rotation 0."""
    return {
        "x": float(x1) / img_w * 100.0,
        "y": float(y1) / img_h * 100.0,
        "width": (float(x2) - float(x1)) / img_w * 100.0,
        "height": (float(y2) - float(y1)) / img_h * 100.0,
        "rotation": 0.0,
    }


def rect_to_camera_box(value: dict, img_w: int, img_h: int) -> tuple[float, float, float, float]:
    """LS rect value (%) -> pixel ``(x1, y1, x2, y2)``; a rotated rect gives its axis-aligned bounding box."""
    x0 = float(value["x"]) / 100.0 * img_w
    y0 = float(value["y"]) / 100.0 * img_h
    W = float(value["width"]) / 100.0 * img_w
    H = float(value["height"]) / 100.0 * img_h
    t = math.radians(float(value.get("rotation", 0.0) or 0.0))
    if t == 0.0:
        return (x0, y0, x0 + W, y0 + H)
    c, s = math.cos(t), math.sin(t)
    us = [x0, x0 + W * c, x0 + W * c - H * s, x0 - H * s]
    vs = [y0, y0 + W * s, y0 + W * s + H * c, y0 + H * c]
    return (min(us), min(vs), max(us), max(vs))


def region_id(object_id: str, view: str = "bev") -> str:
    """Deterministic LS region id of an object in a view (``"bev"`` or a camera name), unique per task.

    ``<object_id>`` (BEV) or ``<camera>-<object_id>`` when that is at most 20 chars of ``[A-Za-z0-9_]``;
    otherwise a readable sanitised prefix + ``--`` + 8 hex digits of a hash of (view, object_id).
    """
    oid = str(object_id)
    cand = oid if view == "bev" else f"{view}-{oid}"
    if _ID_OK.match(oid) and _ID_OK.match(view) and len(cand) <= _MAX_ID:
        return cand
    digest = hashlib.sha1(f"{view}\x00{oid}".encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_]", "_", cand)[: _MAX_ID - 10] + "--" + digest


def _rect_item(rid, from_name, to_name, img_w, img_h, value, label, score) -> dict:
    item = {
        "id": rid,
        "from_name": from_name,
        "to_name": to_name,
        "type": "rectanglelabels",
        "original_width": int(img_w),
        "original_height": int(img_h),
        "image_rotation": 0,
        "value": {**value, "rectanglelabels": [str(label)]},
    }
    if score is not None:
        item["score"] = float(score)
    return item


def _number_item(rid, name, to_name, number) -> dict:
    return {"id": rid, "from_name": name, "to_name": to_name, "type": "number", "value": {"number": float(number)}}


def bev_result_items(box7, category: str, object_id: str, grid: BevGrid, score: float | None = None) -> list[dict]:
    """The three LS result items of one BEV box: rotated rectangle, ``z_m`` and ``height_m`` (same region id)."""
    b = np.asarray(box7, dtype=np.float64).reshape(7)
    rid = region_id(object_id)
    return [
        _rect_item(rid, BEV_BOX, BEV_IMAGE, grid.width_px, grid.height_px, bev_box_to_rect(b, grid), category, score),
        _number_item(rid, Z_NUMBER, BEV_IMAGE, b[2]),
        _number_item(rid, HEIGHT_NUMBER, BEV_IMAGE, b[5]),
    ]


def camera_result_item(camera: str, object_id: str, x1, y1, x2, y2, category: str, img_w: int, img_h: int, score=None) -> dict:
    """The LS result item of one camera box (pixels) on image ``cam_<camera>``."""
    return _rect_item(
        region_id(object_id, camera),
        camera_box_name(camera),
        camera_image_name(camera),
        img_w,
        img_h,
        camera_box_to_rect(x1, y1, x2, y2, img_w, img_h),
        category,
        score,
    )


def prediction_result(boxes, categories, object_ids, grid: BevGrid, scores=None, cameras=()) -> list[dict]:
    """Full LS prediction ``result`` of a frame.

    Args:
        boxes: (N, 7) BEV boxes, LiDAR frame; categories, object_ids (and optional scores): length N.
        cameras: objects with ``name``, ``width``, ``height`` and ``boxes`` =
            [(object_id, x1, y1, x2, y2, category, score), ...] (:class:`labeler.studio.tasks.CameraView`).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    if not (len(b) == len(categories) == len(object_ids)) or (scores is not None and len(scores) != len(b)):
        raise ValueError(f"boxes ({len(b)}), categories ({len(categories)}), object_ids ({len(object_ids)}) and scores differ in length")
    out: list[dict] = []
    for i in range(len(b)):
        out += bev_result_items(b[i], categories[i], object_ids[i], grid, None if scores is None else scores[i])
    for cam in cameras:
        for oid, x1, y1, x2, y2, cat, sc in cam.boxes:
            out.append(camera_result_item(cam.name, oid, x1, y1, x2, y2, cat, cam.width, cam.height, sc))
    return out


def parse_result(result: list[dict], grid: BevGrid) -> dict:
    """Read an LS result (prediction or annotation) back.

    Returns ``{"bev": [{"id", "label", "box" (7,), "score"}], "cameras": {camera: [{"id", "label", "xyxy", "score"}]},
    "verdict": str | None}``. A BEV box without a ``z_m`` / ``height_m`` item gets NaN there. Only the keys needed are
    read (the UI adds x/y/... to per-region items and an ``origin`` key).
    """
    numbers: dict[tuple[str, str], float] = {}
    for it in result:
        if it.get("type") == "number" and "number" in it.get("value", {}):
            numbers[(it["id"], it["from_name"])] = float(it["value"]["number"])
    bev, cams, verdict = [], {}, None
    for it in result:
        v, t, fn = it.get("value", {}), it.get("type"), it.get("from_name", "")
        if t == "choices" and fn == VERDICT and v.get("choices"):
            verdict = v["choices"][0]
        if t != "rectanglelabels":
            continue
        label = (v.get("rectanglelabels") or [None])[0]
        if fn == BEV_BOX:
            z = numbers.get((it["id"], Z_NUMBER), math.nan)
            h = numbers.get((it["id"], HEIGHT_NUMBER), math.nan)
            bev.append({"id": it["id"], "label": label, "box": rect_to_bev_box(v, grid, z, h), "score": it.get("score")})
        elif fn.startswith("box_"):
            w, hh = it.get("original_width"), it.get("original_height")
            xyxy = rect_to_camera_box(v, w, hh) if w and hh else None
            cams.setdefault(fn[len("box_") :], []).append({"id": it["id"], "label": label, "xyxy": xyxy, "score": it.get("score")})
    return {"bev": bev, "cameras": cams, "verdict": verdict}
