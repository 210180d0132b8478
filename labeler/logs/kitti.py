"""KITTI 3D-object folders (``training/`` or ``testing/``) read as one log.

Layout (any fsspec URL)::

    <split>/velodyne/<id>.bin   float32 N x 4: x, y, z (m, Velodyne frame), reflectance in [0, 1]
    <split>/image_2/<id>.png    left colour camera, RGB
    <split>/calib/<id>.txt      P0..P3 (3x4), R0_rect (3x3), Tr_velo_to_cam (3x4), Tr_imu_to_velo (3x4)
    <split>/label_2/<id>.txt    (optional) 15 columns: type, truncated, occluded, alpha, bbox(4),
                                h, w, l, x, y, z (bottom centre, rectified cam0, m), ry

Frames are the sample ids in sorted order. KITTI object samples are unrelated snapshots with no time
stamps and no poses, so **timestamps are synthesised as ``index * 100 ms``** and ``world_from_ego`` is the
identity; the LiDAR frame is the Velodyne frame and ``ego_from_lidar`` is the identity.

Calibration differs per sample (different drives): ``Frame.cameras`` holds the sample's own calibration,
``KittiObjectLog.cameras`` the calibration of the first sample. Camera ``image_2``: ``K = P2[:, :3]`` and
``cam_from_lidar = T(t2) @ R0_rect @ Tr_velo_to_cam`` with ``t2 = inv(K) @ P2[:, 3]`` (the stereo baseline
offset folded into the extrinsic), so ``K @ cam_from_lidar`` reproduces ``P2 @ R0_rect @ Tr_velo_to_cam``.

Ground truth (``label_2``, DontCare skipped): centre = ``inv(R0_rect @ Tr_velo_to_cam) @ bottom``, then
``z += h / 2``; ``l, w, h`` as labelled; ``yaw = -ry - pi/2``. No track ids (``gt_track_ids`` is None).
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

from labeler.errors import InputError
from labeler.geometry.boxes import wrap_angle
from labeler.geometry.camera import CameraCalib
from labeler.geometry.transforms import invert
from labeler.logs.frame import Frame
from labeler.logs.images import LazyImages
from labeler.logs.native import open_image_file

FORMAT = "kitti"
FRAME_PERIOD_NS = 100_000_000
CAMERA = "image_2"


def _url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def is_kitti_folder(path: str) -> bool:
    """A folder with ``velodyne/`` and ``calib/`` sub-folders."""
    fs, p = fsspec.core.url_to_fs(str(path))
    return fs.isdir(posixpath.join(p, "velodyne")) and fs.isdir(posixpath.join(p, "calib"))


def find_kitti_logs(root: str) -> list[str]:
    """KITTI object folders at ``root``, or up to two levels below it (e.g. ``kitti/training``)."""
    root = str(root).rstrip("/")
    if is_kitti_folder(root):
        return [root]
    fs, p = fsspec.core.url_to_fs(root)
    out = []
    for d, dirs, _files in fs.walk(p, maxdepth=3) if fs.isdir(p) else []:
        sub = d[len(p.rstrip("/")):].strip("/")
        if sub and "velodyne" in dirs and "calib" in dirs:
            out.append(_url(root, sub))
    return sorted(out)


def _read_bytes(fs, path: str, display: str, what: str, hint: str, frame: int | None) -> bytes:
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(display, what, hint, frame) from None


def parse_calib(text: str, display: str, frame: int | None) -> dict[str, np.ndarray]:
    """Parse a KITTI object calib file into matrices (P2 3x4, R0_rect 3x3, Tr_velo_to_cam 3x4, ...)."""
    shapes = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}
    out = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, vals = line.split(":", 1)
        key = key.strip()
        if key not in shapes:
            continue
        try:
            v = np.array([float(x) for x in vals.split()], dtype=np.float64)
            out[key] = v.reshape(shapes[key])
        except ValueError:
            raise InputError(display, "bad_calibration",
                             f"{key} must have {np.prod(shapes[key])} numbers; re-export the calib file", frame) from None
    missing = [k for k in ("P2", "R0_rect", "Tr_velo_to_cam") if k not in out]
    if missing:
        raise InputError(display, "missing_calibration",
                         f"calib file lacks {missing}; a KITTI object calib needs P2, R0_rect, Tr_velo_to_cam", frame)
    return out


def _h(M: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[: M.shape[0], : M.shape[1]] = M
    return T


def camera_from_calib(calib: dict[str, np.ndarray], width: int, height: int) -> CameraCalib:
    """``image_2`` calibration: K = P2[:, :3], cam_from_lidar = T(inv(K) P2[:, 3]) @ R0_rect @ Tr_velo_to_cam."""
    P2 = calib["P2"]
    K = P2[:, :3].copy()
    t = np.eye(4)
    t[:3, 3] = np.linalg.solve(K, P2[:, 3])
    return CameraCalib(CAMERA, K, t @ rect_from_velo(calib), int(width), int(height))


def rect_from_velo(calib: dict[str, np.ndarray]) -> np.ndarray:
    """4x4 Velodyne -> rectified cam0 frame (R0_rect @ Tr_velo_to_cam)."""
    return _h(calib["R0_rect"]) @ _h(calib["Tr_velo_to_cam"])


def parse_labels(text: str, calib: dict[str, np.ndarray], display: str, frame: int | None):
    """label_2 text -> (boxes (M, 7) LiDAR frame, categories (M,) lower-case); DontCare skipped."""
    velo_from_rect = invert(rect_from_velo(calib))
    rows, cats = [], []
    for k, line in enumerate(text.splitlines()):
        parts = line.split()
        if not parts or parts[0] == "DontCare":
            continue
        if len(parts) not in (15, 16):
            raise InputError(display, "bad_label", f"line {k + 1} has {len(parts)} columns, expected 15 (16 with score)", frame)
        try:
            h, w, l, x, y, z, ry = (float(v) for v in parts[8:15])
        except ValueError:
            raise InputError(display, "bad_label", f"line {k + 1} has non-numeric box values", frame) from None
        c = velo_from_rect @ np.array([x, y, z, 1.0])
        rows.append([c[0], c[1], c[2] + h / 2, l, w, h, float(wrap_angle(-ry - np.pi / 2))])
        cats.append(parts[0].lower())
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return boxes, np.array(cats, dtype=object)


def read_velodyne(fs, path: str, display: str, frame: int | None) -> np.ndarray:
    """float32 N x 4 Velodyne scan; InputError for missing, empty or truncated files."""
    raw = _read_bytes(fs, path, display, "missing_point_file", "point file is missing", frame)
    if len(raw) == 0:
        raise InputError(display, "empty_point_file", "point file is empty (0 bytes)", frame)
    if len(raw) % 16:
        raise InputError(display, "truncated_point_file",
                         f"{len(raw)} bytes is not a whole number of 4 x float32 points (16 bytes); the file is truncated", frame)
    pts = np.frombuffer(raw, dtype=np.float32).reshape(-1, 4).copy()
    if len(pts) and float(np.nanmax(pts[:, 3])) > 1.0:  # some exports store 0-255
        pts[:, 3] = np.clip(pts[:, 3] / np.float32(255), 0, 1)
    return pts


def _image_size(fs, path: str, display: str, frame: int | None) -> tuple[int, int]:
    try:
        with fs.open(path, "rb") as f:
            return Image.open(io.BytesIO(f.read())).size
    except FileNotFoundError:
        raise InputError(display, "missing_image", "camera image is missing", frame) from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(display, "corrupt_image", f"cannot decode image ({e})", frame) from None


@dataclass
class KittiObjectLog:
    """A KITTI object split folder as a :class:`labeler.logs.base.LogSource` (see module docstring)."""

    has_poses = False     # no ego poses in this format: the stationary filter cannot apply
    sequential = False     # frames form a time sequence (keyframe subsampling applies)

    path: str
    log_id: str
    ids: list[str]
    timestamps_ns: np.ndarray
    world_from_ego: np.ndarray
    ego_from_lidar: np.ndarray
    cameras: dict[str, CameraCalib]
    has_images: bool
    has_labels: bool
    format: str = FORMAT

    def __len__(self) -> int:
        return len(self.ids)

    def lidar_file(self, i: int) -> str:
        return _url(self.path, "velodyne", f"{self.ids[i]}.bin")

    def _fsroot(self):
        return fsspec.core.url_to_fs(self.path)

    def frame_cameras(self, i: int, width: int | None = None, height: int | None = None) -> dict[str, CameraCalib]:
        fs, root = self._fsroot()
        ts = int(self.timestamps_ns[i])
        calib = self._calib(fs, root, i)
        if width is None:
            if not self.has_images:
                return {}
            width, height = _image_size(fs, posixpath.join(root, "image_2", f"{self.ids[i]}.png"), self.image_file(i), ts)
        return {CAMERA: camera_from_calib(calib, width, height)}

    def image_file(self, i: int) -> str:
        return _url(self.path, "image_2", f"{self.ids[i]}.png")

    def _calib(self, fs, root: str, i: int) -> dict[str, np.ndarray]:
        ts = int(self.timestamps_ns[i])
        disp = _url(self.path, "calib", f"{self.ids[i]}.txt")
        raw = _read_bytes(fs, posixpath.join(root, "calib", f"{self.ids[i]}.txt"), disp, "missing_calibration",
                          "calib file is missing; every KITTI sample needs calib/<id>.txt", ts)
        return parse_calib(raw.decode("utf-8", "replace"), disp, ts)

    def load_frame(self, i: int, with_images: bool = True) -> Frame:
        fs, root = self._fsroot()
        sid, ts = self.ids[i], int(self.timestamps_ns[i])
        pts = read_velodyne(fs, posixpath.join(root, "velodyne", f"{sid}.bin"), self.lidar_file(i), ts)
        calib = self._calib(fs, root, i)
        images, files, cams = {}, {}, {}
        if self.has_images:
            ipath = posixpath.join(root, "image_2", f"{sid}.png")
            files[CAMERA] = self.image_file(i)
            if with_images:
                images[CAMERA] = open_image_file(fs, ipath, files[CAMERA], ts)
                h, w = images[CAMERA].shape[:2]
            else:
                w, h = _image_size(fs, ipath, files[CAMERA], ts)
            cams[CAMERA] = camera_from_calib(calib, w, h)
        gt = cats = None
        if self.has_labels:
            disp = _url(self.path, "label_2", f"{sid}.txt")
            raw = _read_bytes(fs, posixpath.join(root, "label_2", f"{sid}.txt"), disp, "missing_label",
                              "label file is missing while label_2/ exists; restore it or remove label_2/", ts)
            gt, cats = parse_labels(raw.decode("utf-8", "replace"), calib, disp, ts)
        return Frame(
            log_id=self.log_id, timestamp_ns=ts, frame_index=i, points=pts, lidar_file=self.lidar_file(i),
            world_from_ego=self.world_from_ego[i], ego_from_lidar=self.ego_from_lidar, images=LazyImages(images) if with_images else {},
            image_files=files, camera_timestamps_ns={c: ts for c in files}, cameras=cams,
            gt_boxes=gt, gt_categories=cats, gt_track_ids=None,
        )


def open_kitti_log(path: str) -> KittiObjectLog:
    """Open a KITTI object split folder (one log). InputError when it has no scans or no calibration."""
    path = str(path).rstrip("/")
    fs, root = fsspec.core.url_to_fs(path)
    if not is_kitti_folder(path):
        raise InputError(path, "wrong_format", "not a KITTI object folder: needs velodyne/ and calib/ sub-folders")
    ids = sorted(posixpath.basename(f)[:-4] for f in fs.ls(posixpath.join(root, "velodyne"), detail=False) if f.endswith(".bin"))
    if not ids:
        raise InputError(_url(path, "velodyne"), "empty_log", "no .bin scans in velodyne/")
    n = len(ids)
    ts = np.arange(n, dtype=np.int64) * FRAME_PERIOD_NS
    parent = posixpath.basename(posixpath.dirname(root.rstrip("/")))
    log_id = f"{parent}-{posixpath.basename(root.rstrip('/'))}" if parent else posixpath.basename(root.rstrip("/"))
    log = KittiObjectLog(
        path=path, log_id=log_id, ids=ids, timestamps_ns=ts, world_from_ego=np.tile(np.eye(4), (n, 1, 1)),
        ego_from_lidar=np.eye(4), cameras={}, has_images=fs.isdir(posixpath.join(root, "image_2")),
        has_labels=fs.isdir(posixpath.join(root, "label_2")),
    )
    err = None
    for i in range(min(n, 5)):  # log-level calibration: the first sample whose calib and image header read
        try:
            log.cameras = log.frame_cameras(i)
            return log
        except InputError as e:
            err = err or e
    raise err
