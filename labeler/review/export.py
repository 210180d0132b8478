"""Export final labels: KITTI ``label_2`` text files and a nuScenes-style detection results JSON.

Layout under ``<run>/labels/``:

* ``kitti/<log_id>/label_2/<timestamp_ns>.txt``: one line per box, KITTI object format
  ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y``. With a calibration for the log's reference
  camera (``front`` if present, else the first camera by name) the box is in that camera's frame as KITTI wants
  (location = bottom centre, rotation_y about the camera's y axis, 2D box projected and clipped to the image,
  ``calib/<timestamp_ns>.txt`` written with ``P2``, ``R0_rect`` = I, ``Tr_velo_to_cam``); a box outside the image gets
  bbox ``-1 -1 -1 -1`` and truncated 1. Without a calibration the LiDAR-frame convention is used: location = the
  bottom centre in the LiDAR frame (x forward, y left, z up), rotation_y = our yaw, alpha = -10, bbox 0 0 0 0.
  ``kitti/manifest.json`` says per frame which convention its file uses.
* ``nuscenes_results.json``: ``{"meta": ..., "results": {frame_key: [box, ...]}}`` with nuScenes detection result
  keys (``sample_token`` = frame_key, ``translation``, ``size`` = [w, l, h], ``rotation`` = [w, x, y, z] quaternion,
  ``velocity``, ``detection_name``, ``detection_score``, ``attribute_name``), all in the LiDAR frame (not global).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from labeler.geometry.boxes import wrap_angle
from labeler.geometry.camera import boxes_to_2d
from labeler.geometry.transforms import yaw_to_quat

log = logging.getLogger(__name__)

KITTI_TYPES = {"car": "Car", "truck": "Truck", "bus": "Bus", "pedestrian": "Pedestrian", "cyclist": "Cyclist",
               "traffic_cone": "Traffic_cone"}
NUSCENES_NAMES = {"car": "car", "truck": "truck", "bus": "bus", "pedestrian": "pedestrian", "cyclist": "bicycle",
                  "traffic_cone": "traffic_cone"}


def reference_camera(cameras: dict):
    """The calibration used for KITTI files: ``front`` if present, else the first camera by name; None if none."""
    if not cameras:
        return None
    return cameras.get("front") or cameras[sorted(cameras)[0]]


def kitti_lines(boxes: np.ndarray, categories: list[str], calib=None) -> list[str]:
    """KITTI label lines of (N, 7) LiDAR boxes; camera convention with ``calib``, else the LiDAR convention."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    out = []
    if calib is None:
        for (x, y, z, l, w, h, yaw), c in zip(b, categories):
            t = KITTI_TYPES.get(c, str(c).capitalize())
            out.append(f"{t} 0.00 3 -10.00 0.00 0.00 0.00 0.00 {h:.4f} {w:.4f} {l:.4f} "
                       f"{x:.4f} {y:.4f} {z - h / 2:.4f} {float(wrap_angle(yaw)):.6f}")
        return out
    R, tr = calib.cam_from_lidar[:3, :3], calib.cam_from_lidar[:3, 3]
    xy, visible, trunc, _ = boxes_to_2d(calib, b) if len(b) else (np.zeros((0, 4)), [], [], None)
    for i, ((x, y, z, l, w, h, yaw), c) in enumerate(zip(b, categories)):
        t = KITTI_TYPES.get(c, str(c).capitalize())
        bottom = R @ np.array([x, y, z - h / 2]) + tr
        d = R @ np.array([math.cos(yaw), math.sin(yaw), 0.0])  # heading in the camera frame
        ry = float(wrap_angle(math.atan2(-d[2], d[0])))
        alpha = float(wrap_angle(ry - math.atan2(bottom[0], bottom[2])))
        if visible[i]:
            x1, y1, x2, y2 = xy[i]
            tc = float(np.clip(trunc[i], 0, 1))
        else:
            x1 = y1 = x2 = y2 = -1.0
            tc = 1.0
        out.append(f"{t} {tc:.2f} 3 {alpha:.6f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {h:.4f} {w:.4f} {l:.4f} "
                   f"{bottom[0]:.4f} {bottom[1]:.4f} {bottom[2]:.4f} {ry:.6f}")
    return out


def kitti_calib_text(calib) -> str:
    P2 = np.hstack([calib.K, np.zeros((3, 1))])
    fmt = lambda a: " ".join(f"{v:.12e}" for v in np.asarray(a).reshape(-1))  # noqa: E731
    return (f"P0: {fmt(P2)}\nP1: {fmt(P2)}\nP2: {fmt(P2)}\nP3: {fmt(P2)}\nR0_rect: {fmt(np.eye(3))}\n"
            f"Tr_velo_to_cam: {fmt(calib.cam_from_lidar[:3])}\nTr_imu_to_velo: {fmt(np.eye(4)[:3])}\n")


def nuscenes_box(frame_key: str, r: dict) -> dict:
    q = yaw_to_quat(r["yaw"])
    score = r.get("score")
    return {
        "sample_token": frame_key,
        "translation": [float(r["x"]), float(r["y"]), float(r["z"])],
        "size": [float(r["w"]), float(r["l"]), float(r["h"])],
        "rotation": [float(v) for v in q],
        "velocity": [0.0, 0.0],
        "detection_name": NUSCENES_NAMES.get(r["category"], r["category"]),
        "detection_score": float(score) if score is not None else 1.0,
        "attribute_name": "",
    }


def log_calibrations(record: dict) -> dict[str, dict]:
    """``log_id -> {camera: CameraCalib}`` of the run's input logs (empty for a log that cannot be opened)."""
    from labeler.logs.registry import open_log

    out = {}
    for inp in record.get("inputs") or []:
        try:
            src = open_log(inp["path"], inp.get("format"))
            out[src.log_id] = dict(src.cameras or {})
        except Exception as e:  # a moved / deleted log: LiDAR convention for its frames
            log.warning("no calibration from %s (%s): its KITTI files use the LiDAR-frame convention", inp.get("path"), e)
    return out


def export_labels(run_dir: str, labels: list[dict], record: dict | None = None, frames=None, calibrations=None) -> dict:
    """Write KITTI files and the nuScenes-style JSON of ``labels`` (rows of the LABELS table). ``frames``: every
    (log_id, timestamp_ns) to write a (possibly empty) KITTI file for (default: the frames with labels).
    ``calibrations``: ``log_id -> {camera: CameraCalib}`` (default: read from the run's input logs)."""
    root = Path(run_dir) / "labels"
    kroot = root / "kitti"
    kroot.mkdir(parents=True, exist_ok=True)
    if calibrations is None:
        calibrations = log_calibrations(record or {})
    by_frame: dict[tuple[str, int], list[dict]] = {}
    for k in frames or ():
        by_frame.setdefault((str(k[0]), int(k[1])), [])
    for r in labels:
        by_frame.setdefault((r["log_id"], int(r["timestamp_ns"])), []).append(r)
    manifest, results = {}, {}
    for (log_id, ts), rows in sorted(by_frame.items()):
        key = f"{log_id}/{ts}"
        calib = reference_camera(calibrations.get(log_id) or {})
        boxes = np.array([[r[c] for c in ("x", "y", "z", "l", "w", "h", "yaw")] for r in rows]).reshape(-1, 7)
        d = kroot / log_id / "label_2"
        d.mkdir(parents=True, exist_ok=True)
        lines = kitti_lines(boxes, [r["category"] for r in rows], calib)
        (d / f"{ts}.txt").write_text("".join(line + "\n" for line in lines))
        if calib is not None:
            c = kroot / log_id / "calib"
            c.mkdir(parents=True, exist_ok=True)
            (c / f"{ts}.txt").write_text(kitti_calib_text(calib))
        manifest[key] = f"camera:{calib.name}" if calib is not None else "lidar"
        results[key] = [nuscenes_box(key, r) for r in rows]
    (kroot / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    meta = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False,
            "frame": "lidar", "run_id": (record or {}).get("run_id")}
    nus = root / "nuscenes_results.json"
    nus.write_text(json.dumps({"meta": meta, "results": results}))
    return {"kitti": str(kroot), "nuscenes": str(nus)}
