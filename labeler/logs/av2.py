"""Argoverse 2 sensor-dataset logs (one log = one ``<log_id>/`` folder).

Layout (any fsspec URL)::

    <log_id>/sensors/lidar/<timestamp_ns>.feather   x, y, z (float16, m, EGO frame), intensity (u8 0-255),
                                                     laser_number (u8), offset_ns (i32)
    <log_id>/sensors/cameras/<name>/<timestamp_ns>.jpg   (optional) RGB images
    <log_id>/city_SE3_egovehicle.feather             timestamp_ns, qw, qx, qy, qz, tx_m, ty_m, tz_m
    <log_id>/calibration/intrinsics.feather          sensor_name, fx_px, fy_px, cx_px, cy_px, k1-k3, width_px, height_px
    <log_id>/calibration/egovehicle_SE3_sensor.feather   sensor_name, qw..qz, tx_m..tz_m
    <log_id>/annotations.feather                     (optional) timestamp_ns, track_uuid, category, length_m,
                                                     width_m, height_m, qw..qz, tx_m..tz_m (centre), num_interior_pts

**AV2 sweeps are already merged (two roof LiDARs) and expressed in the ego frame, so for AV2 "the LiDAR
frame" is the ego frame** (x forward, y left, z up, origin at the rear axle on the ground): ``ego_from_lidar``
is the identity and points and boxes are in that frame. float16 coordinates are widened to float32 exactly
(no rounding), so ``num_interior_pts`` reproduces with :func:`labeler.geometry.boxes.count_points_in_boxes`.

Cameras: ``K`` from fx, fy, cx, cy (radial distortion k1-k3 is ignored), ``cam_from_lidar =
inv(egovehicle_SE3_camera)`` (AV2 camera frames use OpenCV axes). Images, when present, are the nearest in
time per camera (within ``max_image_gap_ns``); the public sample has calibration but no images.
Boxes: cuboid yaw about +z from the quaternion (cuboid roll/pitch are zero in AV2); category lower-cased;
``gt_track_ids`` = ``track_uuid``. Poses: the city pose nearest in time to each sweep.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from labeler.errors import InputError
from labeler.geometry.camera import CameraCalib
from labeler.geometry.transforms import invert, quat_to_matrix, se3
from labeler.logs.frame import Frame
from labeler.logs.images import LazyImages
from labeler.logs.native import open_image_file

FORMAT = "av2"
LIDAR_DIR = "sensors/lidar"
CAMERA_DIR = "sensors/cameras"
MAX_IMAGE_GAP_NS = 50_000_000


def _url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def is_av2_log(path: str) -> bool:
    """A folder with ``sensors/lidar/`` and ``city_SE3_egovehicle.feather``."""
    fs, p = fsspec.core.url_to_fs(str(path))
    return fs.isdir(posixpath.join(p, LIDAR_DIR)) and fs.isfile(posixpath.join(p, "city_SE3_egovehicle.feather"))


def find_av2_logs(root: str) -> list[str]:
    """AV2 log folders at ``root`` or up to two levels below it (e.g. ``sensor/val/<log_id>``)."""
    root = str(root).rstrip("/")
    if is_av2_log(root):
        return [root]
    fs, p = fsspec.core.url_to_fs(root)
    out = []
    for d, _dirs, files in fs.walk(p, maxdepth=3) if fs.isdir(p) else []:
        if "city_SE3_egovehicle.feather" in files and fs.isdir(posixpath.join(d, LIDAR_DIR)):
            out.append(_url(root, d[len(p.rstrip("/")):].strip("/")))
    return sorted(out)


def _read_feather(fs, path: str, display: str, required: tuple[str, ...], frame: int | None = None,
                  what: str = "missing_file", hint: str = "required table is missing; re-download the log",
                  corrupt: str = "corrupt_table") -> pa.Table:
    try:
        with fs.open(path, "rb") as f:
            t = feather.read_table(f)
    except FileNotFoundError:
        raise InputError(display, what, hint, frame) from None
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(display, corrupt, f"cannot read Feather ({e}); the file is truncated or corrupt, re-download it", frame) from None
    missing = [c for c in required if c not in t.column_names]
    if missing:
        raise InputError(display, "bad_schema", f"columns {missing} are missing (have {t.column_names})", frame)
    return t


def _col(t: pa.Table, c: str) -> np.ndarray:
    return t.column(c).to_numpy()


def _poses(t: pa.Table) -> list[np.ndarray]:
    q = [_col(t, c) for c in ("qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")]
    return [se3(quat_to_matrix(q[0][i], q[1][i], q[2][i], q[3][i]), [q[4][i], q[5][i], q[6][i]]) for i in range(t.num_rows)]


def _nearest(sorted_ts: np.ndarray, t: np.ndarray) -> np.ndarray:
    idx = np.clip(np.searchsorted(sorted_ts, t), 0, len(sorted_ts) - 1)
    prev = np.clip(idx - 1, 0, len(sorted_ts) - 1)
    return np.where(np.abs(sorted_ts[prev] - t) < np.abs(sorted_ts[idx] - t), prev, idx)


def yaw_from_quat(qw, qx, qy, qz) -> np.ndarray:
    """Heading (rotation about +z, radians) of unit quaternions."""
    return np.arctan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))


@dataclass
class Av2SensorLog:
    """One AV2 sensor log as a :class:`labeler.logs.base.LogSource` (see module docstring: LiDAR frame = ego frame)."""

    path: str
    log_id: str
    timestamps_ns: np.ndarray
    world_from_ego: np.ndarray
    ego_from_lidar: np.ndarray
    cameras: dict[str, CameraCalib]
    camera_images: dict[str, np.ndarray]  # camera -> sorted image timestamps (ns)
    annotations: pa.Table | None
    max_image_gap_ns: int = MAX_IMAGE_GAP_NS
    format: str = FORMAT

    def __len__(self) -> int:
        return len(self.timestamps_ns)

    def lidar_file(self, i: int) -> str:
        return _url(self.path, LIDAR_DIR, f"{int(self.timestamps_ns[i])}.feather")

    def load_frame(self, i: int, with_images: bool = True) -> Frame:
        fs, root = fsspec.core.url_to_fs(self.path)
        ts = int(self.timestamps_ns[i])
        pts = read_sweep(fs, posixpath.join(root, LIDAR_DIR, f"{ts}.feather"), self.lidar_file(i), ts)
        images, files, cts = {}, {}, {}
        for cam, its in self.camera_images.items():
            if not len(its):
                continue
            t = int(its[_nearest(its, np.array([ts]))[0]])
            if abs(t - ts) > self.max_image_gap_ns:
                continue
            files[cam], cts[cam] = _url(self.path, CAMERA_DIR, cam, f"{t}.jpg"), t
            if with_images:
                images[cam] = open_image_file(fs, posixpath.join(root, CAMERA_DIR, cam, f"{t}.jpg"), files[cam], ts)
        gt = cats = tids = None
        if self.annotations is not None:
            gt, cats, tids = self.boxes_at(ts)
        return Frame(
            log_id=self.log_id, timestamp_ns=ts, frame_index=i, points=pts, lidar_file=self.lidar_file(i),
            world_from_ego=self.world_from_ego[i], ego_from_lidar=self.ego_from_lidar, images=LazyImages(images) if with_images else {},
            image_files=files, camera_timestamps_ns=cts, cameras=self.cameras,
            gt_boxes=gt, gt_categories=cats, gt_track_ids=tids,
        )

    def boxes_at(self, ts: int):
        """(boxes (M, 7), categories, track ids, num_interior_pts) annotated at sweep time ``ts``."""
        a = self.annotations
        sub = a.filter(pa.array(_col(a, "timestamp_ns") == ts))
        keys = ("tx_m", "ty_m", "tz_m", "length_m", "width_m", "height_m", "qw", "qx", "qy", "qz")
        c = {k: _col(sub, k).astype(np.float64) for k in keys}
        yaw = yaw_from_quat(c["qw"], c["qx"], c["qy"], c["qz"])
        boxes = np.stack([c["tx_m"], c["ty_m"], c["tz_m"], c["length_m"], c["width_m"], c["height_m"], yaw], axis=1).reshape(-1, 7)
        cats = np.array([str(x).lower() for x in sub.column("category").to_pylist()], dtype=object)
        tids = np.array([str(x) for x in sub.column("track_uuid").to_pylist()], dtype=object)
        return boxes, cats, tids

    def num_interior_pts(self, ts: int) -> np.ndarray:
        """The annotation file's own point count per box at ``ts`` (same order as :meth:`boxes_at`)."""
        a = self.annotations
        return _col(a.filter(pa.array(_col(a, "timestamp_ns") == ts)), "num_interior_pts").astype(np.int64)


def read_sweep(fs, path: str, display: str, frame: int | None) -> np.ndarray:
    """AV2 sweep Feather -> (N, 4) float32 [x, y, z (ego frame, m), intensity / 255]."""
    t = _read_feather(fs, path, display, ("x", "y", "z", "intensity"), frame, "missing_point_file", "point file is missing",
                      "corrupt_point_file")
    out = np.empty((t.num_rows, 4), dtype=np.float32)
    for k, c in enumerate(("x", "y", "z")):
        out[:, k] = _col(t, c).astype(np.float32)
    inten = _col(t, "intensity")
    out[:, 3] = inten.astype(np.float32) / np.float32(255) if inten.dtype == np.uint8 else np.clip(inten.astype(np.float32), 0, 1)
    return out


def _cameras(fs, root: str, path: str) -> dict[str, CameraCalib]:
    ipath, epath = posixpath.join(root, "calibration/intrinsics.feather"), posixpath.join(root, "calibration/egovehicle_SE3_sensor.feather")
    hint = "camera calibration is missing; AV2 logs need calibration/intrinsics.feather and egovehicle_SE3_sensor.feather"
    intr = _read_feather(fs, ipath, _url(path, "calibration/intrinsics.feather"),
                         ("sensor_name", "fx_px", "fy_px", "cx_px", "cy_px", "width_px", "height_px"),
                         what="missing_calibration", hint=hint)
    extr = _read_feather(fs, epath, _url(path, "calibration/egovehicle_SE3_sensor.feather"),
                         ("sensor_name", "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m"), what="missing_calibration", hint=hint)
    ego_from_sensor = dict(zip(extr.column("sensor_name").to_pylist(), _poses(extr)))
    cams = {}
    for r in intr.to_pylist():
        name = r["sensor_name"]
        if name not in ego_from_sensor:
            raise InputError(_url(path, "calibration/egovehicle_SE3_sensor.feather"), "missing_calibration",
                             f"camera {name!r} has intrinsics but no extrinsics; re-download the calibration")
        K = np.array([[r["fx_px"], 0, r["cx_px"]], [0, r["fy_px"], r["cy_px"]], [0, 0, 1.0]])
        cams[name] = CameraCalib(name, K, invert(ego_from_sensor[name]), int(r["width_px"]), int(r["height_px"]))
    return cams


def open_av2_log(path: str, max_image_gap_ns: int = MAX_IMAGE_GAP_NS) -> Av2SensorLog:
    """Open one AV2 sensor log folder."""
    path = str(path).rstrip("/")
    fs, root = fsspec.core.url_to_fs(path)
    if not is_av2_log(path):
        raise InputError(path, "wrong_format", "not an AV2 sensor log: needs sensors/lidar/ and city_SE3_egovehicle.feather")
    files = [posixpath.basename(f) for f in fs.ls(posixpath.join(root, LIDAR_DIR), detail=False) if f.endswith(".feather")]
    try:
        ts = np.array(sorted(int(f[: -len(".feather")]) for f in files), dtype=np.int64)
    except ValueError:
        raise InputError(_url(path, LIDAR_DIR), "bad_file_name", "sweep files must be named <timestamp_ns>.feather") from None
    if not len(ts):
        raise InputError(_url(path, LIDAR_DIR), "empty_log", "no .feather sweeps")
    pt = _read_feather(fs, posixpath.join(root, "city_SE3_egovehicle.feather"), _url(path, "city_SE3_egovehicle.feather"),
                       ("timestamp_ns", "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m"))
    if pt.num_rows == 0:
        raise InputError(_url(path, "city_SE3_egovehicle.feather"), "missing_poses", "no ego poses; the log cannot be placed in the world")
    pt = pt.sort_by("timestamp_ns")
    poses = _poses(pt.take(pa.array(_nearest(_col(pt, "timestamp_ns"), ts))))
    cams = _cameras(fs, root, path)
    cam_ts = {}
    for cam in cams:
        d = posixpath.join(root, CAMERA_DIR, cam)
        names = [posixpath.basename(f) for f in fs.ls(d, detail=False)] if fs.isdir(d) else []
        cam_ts[cam] = np.array(sorted(int(n[:-4]) for n in names if n.endswith(".jpg") and n[:-4].isdigit()), dtype=np.int64)
    ann = None
    apath = posixpath.join(root, "annotations.feather")
    if fs.exists(apath):
        ann = _read_feather(fs, apath, _url(path, "annotations.feather"),
                            ("timestamp_ns", "track_uuid", "category", "length_m", "width_m", "height_m",
                             "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m"))
    return Av2SensorLog(path, posixpath.basename(root.rstrip("/")), ts, np.stack(poses), np.eye(4), cams, cam_ts, ann, max_image_gap_ns)
