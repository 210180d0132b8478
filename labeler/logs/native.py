"""The native road-test log format (version 1), written by ``labeler simulate`` and read by the pipeline.

Layout of one log (a folder named after the log id)::

    <log_id>/
      log.json              {"format": "labeler-native", "version": 1, "log_id": ..., "lidar": {...}, "cameras": [...]}
      calibration.json      {"ego_from_lidar": 4x4, "cameras": {name: {"K": 3x3, "cam_from_lidar": 4x4, "width", "height"}}}
      frames.parquet        timestamp_ns, lidar_file                         (one row per LiDAR sweep, 10 Hz)
      camera_frames.parquet timestamp_ns, camera, image_file, image_timestamp_ns
      poses.parquet         timestamp_ns, tx_m, ty_m, tz_m, qw, qx, qy, qz  (world_from_ego)
      lidar/<timestamp_ns>.bin            float32 N x 4: x, y, z (m, LiDAR frame), intensity in [0, 1]
      camera/<name>/<timestamp_ns>.jpg    RGB image
      annotations.parquet   (optional ground truth) timestamp_ns, track_id, category, x, y, z, l, w, h, yaw
      corner_cases.parquet  (optional, simulator only) timestamp_ns, kind, track_id, detail

File paths inside tables are relative to the log folder. Paths may be any fsspec URL.

Row order and timestamps: the order of the rows in the tables carries no meaning. :func:`read_log_index`
orders frames by ``timestamp_ns`` (stable sort, so rows written out of order are read in time order and are
not an error). A timestamp that appears more than once is kept in the index: the first row in file order owns
the timestamp (its camera rows and pose), every later row with the same timestamp is quarantined by the pipeline
(``duplicate_timestamp``, naming that row's point file).
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from labeler.errors import InputError
from labeler.geometry.camera import CameraCalib
from labeler.geometry.transforms import quat_to_matrix, se3
from labeler.logs.frame import Frame
from labeler.logs.images import EncodedImage, LazyImages, open_image

FORMAT_NAME = "labeler-native"
FORMAT_VERSION = 1
POINT_DIM = 4


def is_native_log(path: str) -> bool:
    fs, p = fsspec.core.url_to_fs(str(path))
    return fs.exists(posixpath.join(p, "log.json"))


def find_native_logs(root: str) -> list[str]:
    """Native log folders directly under ``root`` (or ``root`` itself when it is a log), sorted by name."""
    root = str(root)
    if is_native_log(root):
        return [root]
    fs, p = fsspec.core.url_to_fs(root)
    if not fs.exists(p):
        raise InputError(root, "missing_input", "input folder does not exist; check `input.logs` in the pipeline YAML")
    out = []
    for entry in sorted(fs.ls(p, detail=False)):
        if fs.isdir(entry):
            out.append(_join_url(root, posixpath.basename(entry.rstrip("/"))))
    return out


def _join_url(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


@dataclass
class LogIndex:
    """What a log holds, read once per log: calibration, per-frame file names, poses, ground truth."""

    path: str
    log_id: str
    cameras: dict[str, CameraCalib]
    ego_from_lidar: np.ndarray
    timestamps_ns: np.ndarray  # (F,) int64, sorted (stable); duplicates kept, the first row owns the timestamp
    lidar_files: list[str]
    camera_files: dict[str, list[str | None]]  # camera -> per-frame relative file
    camera_timestamps_ns: dict[str, np.ndarray]
    world_from_ego: np.ndarray  # (F, 4, 4)
    annotations: pa.Table | None
    corner_cases: pa.Table | None
    format: str = "native"
    _gt: tuple | None = field(default=None, init=False, repr=False, compare=False)  # annotations grouped by time

    def __len__(self) -> int:
        return len(self.timestamps_ns)

    def load_frame(self, i: int, with_images: bool = True) -> Frame:
        return load_frame(self, i, with_images)

    def lidar_file(self, i: int) -> str:
        return posixpath.join(self.path, self.lidar_files[i])

    def ground_truth(self, timestamp_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(M, 7) boxes, (M,) categories, (M,) track ids of one sweep (annotation file order); needs annotations.

        The annotations are grouped by timestamp once per index, so a frame's lookup is a slice, not a scan.
        """
        if self._gt is None:
            a = self.annotations
            ts = a.column("timestamp_ns").to_numpy().astype(np.int64)
            order = np.argsort(ts, kind="stable")
            boxes = np.stack([a.column(c).to_numpy().astype(np.float64) for c in ("x", "y", "z", "l", "w", "h", "yaw")], axis=1)
            self._gt = (ts[order], boxes[order].reshape(-1, 7),
                        np.array(a.column("category").to_pylist(), dtype=object)[order],
                        np.array(a.column("track_id").to_pylist(), dtype=object)[order])
        ts, boxes, cats, tids = self._gt
        lo, hi = np.searchsorted(ts, timestamp_ns, "left"), np.searchsorted(ts, timestamp_ns, "right")
        return boxes[lo:hi].copy(), cats[lo:hi].copy(), tids[lo:hi].copy()


def _read_json(fs, path: str, log: str) -> dict:
    try:
        with fs.open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing_file", f"log {log} lacks {posixpath.basename(path)}; re-export the log") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, "corrupt_json", f"cannot parse JSON ({e}); re-export the log") from None
    if not isinstance(data, dict):
        raise InputError(path, "corrupt_json", f"expected a JSON object, got {type(data).__name__}; re-export the log")
    return data


def _read_table(fs, path: str, required: tuple[str, ...], optional: bool = False) -> pa.Table | None:
    if not fs.exists(path):
        if optional:
            return None
        raise InputError(path, "missing_file", "required table is missing; re-export the log")
    try:
        with fs.open(path, "rb") as f:
            t = pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, "corrupt_table", f"cannot read Parquet ({e})") from None
    missing = [c for c in required if c not in t.column_names]
    if missing:
        raise InputError(path, "bad_schema", f"columns {missing} are missing (have {t.column_names})")
    return t


def open_native_log(path: str) -> LogIndex:
    """Open a native log (a :class:`labeler.logs.base.LogSource`)."""
    return read_log_index(path)


def read_log_index(path: str) -> LogIndex:
    """Read a native log's metadata. Raises :class:`InputError` (whole log unusable) naming the file and cause."""
    path = str(path)
    fs, root = fsspec.core.url_to_fs(path)
    meta = _read_json(fs, posixpath.join(root, "log.json"), path)
    if meta.get("format") != FORMAT_NAME:
        raise InputError(posixpath.join(path, "log.json"), "wrong_format", f"format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    if int(meta.get("version", -1)) > FORMAT_VERSION:
        raise InputError(posixpath.join(path, "log.json"), "unsupported_version", f"version {meta.get('version')} is newer than this labeler ({FORMAT_VERSION}); upgrade labeler")
    if not meta.get("log_id"):
        raise InputError(posixpath.join(path, "log.json"), "bad_log_json", "log.json has no log_id; re-export the log")
    log_id = str(meta["log_id"])
    cal_path = posixpath.join(root, "calibration.json")
    cal = _read_json(fs, cal_path, path)
    try:
        cameras = {n: CameraCalib.from_dict(n, d) for n, d in cal.get("cameras", {}).items()}
        ego_from_lidar = np.asarray(cal.get("ego_from_lidar", np.eye(4)), dtype=np.float64)
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(cal_path, "bad_calibration", f"{e}; each camera needs K (3x3), cam_from_lidar (4x4), width, height") from None
    frames = _read_table(fs, posixpath.join(root, "frames.parquet"), ("timestamp_ns", "lidar_file"))
    poses = _read_table(fs, posixpath.join(root, "poses.parquet"), ("timestamp_ns", "tx_m", "ty_m", "tz_m", "qw", "qx", "qy", "qz"))
    cams = _read_table(fs, posixpath.join(root, "camera_frames.parquet"), ("timestamp_ns", "camera", "image_file", "image_timestamp_ns"), optional=True)
    ts = frames.column("timestamp_ns").to_numpy().astype(np.int64)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    lidar_files = [frames.column("lidar_file").to_pylist()[i] for i in order]
    # poses: nearest pose per frame (exact match expected for native logs)
    pts = poses.column("timestamp_ns").to_numpy().astype(np.int64)
    if len(pts) == 0:
        raise InputError(posixpath.join(path, "poses.parquet"), "missing_poses", "no ego poses; the log cannot be placed in the world")
    porder = np.argsort(pts)
    pts = pts[porder]
    cols = {c: poses.column(c).to_numpy()[porder] for c in ("tx_m", "ty_m", "tz_m", "qw", "qx", "qy", "qz")}
    idx = np.clip(np.searchsorted(pts, ts), 0, len(pts) - 1)
    prev = np.clip(idx - 1, 0, len(pts) - 1)
    idx = np.where(np.abs(pts[prev] - ts) < np.abs(pts[idx] - ts), prev, idx)
    world_from_ego = np.stack(
        [se3(quat_to_matrix(cols["qw"][i], cols["qx"][i], cols["qy"][i], cols["qz"][i]), [cols["tx_m"][i], cols["ty_m"][i], cols["tz_m"][i]]) for i in idx]
    ) if len(ts) else np.zeros((0, 4, 4))
    camera_files: dict[str, list[str | None]] = {n: [None] * len(ts) for n in cameras}
    camera_ts: dict[str, np.ndarray] = {n: np.full(len(ts), -1, dtype=np.int64) for n in cameras}
    if cams is not None:
        pos: dict[int, int] = {}
        for i, t in enumerate(ts):
            pos.setdefault(int(t), i)  # a duplicated timestamp's camera rows belong to its first frame
        for t, cam, f, it in zip(*(cams.column(c).to_pylist() for c in ("timestamp_ns", "camera", "image_file", "image_timestamp_ns"))):
            i = pos.get(int(t))
            if i is not None and cam in camera_files:
                camera_files[cam][i] = f
                camera_ts[cam][i] = int(it)
    ann = _read_table(fs, posixpath.join(root, "annotations.parquet"), ("timestamp_ns", "track_id", "category", "x", "y", "z", "l", "w", "h", "yaw"), optional=True)
    cc = _read_table(fs, posixpath.join(root, "corner_cases.parquet"), ("timestamp_ns", "kind"), optional=True)
    return LogIndex(path, log_id, cameras, ego_from_lidar, ts, lidar_files, camera_files, camera_ts, world_from_ego, ann, cc)


def read_points(fs, path: str, display: str, frame: int | None, dims: int = POINT_DIM) -> np.ndarray:
    """Read a float32 N x ``dims`` point file, with clear errors for missing, truncated or mis-shaped files."""
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(display, "missing_point_file", "point file is missing", frame) from None
    if len(raw) == 0:
        raise InputError(display, "empty_point_file", "point file is empty (0 bytes)", frame)
    if len(raw) % (4 * dims) != 0:
        raise InputError(
            display, "truncated_point_file",
            f"{len(raw)} bytes is not a whole number of {dims} x float32 points; the file is truncated or has another layout",
            frame,
        )
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, dims).copy()


def read_image_bytes(fs, path: str, display: str, frame: int | None) -> bytes:
    """The encoded bytes of an image file (``InputError`` ``missing_image`` when it is not there)."""
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(display, "missing_image", "camera image is missing", frame) from None


def open_image_file(fs, path: str, display: str, frame: int | None) -> EncodedImage:
    """Read an image file, decode its health view (the decodability check) and keep the bytes for a full decode."""
    return open_image(read_image_bytes(fs, path, display, frame), display, frame)


def read_image(fs, path: str, display: str, frame: int | None) -> np.ndarray:
    """Read and decode an image file in full: (H, W, 3) uint8 RGB."""
    raw = read_image_bytes(fs, path, display, frame)
    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(display, "corrupt_image", f"cannot decode image ({e})", frame) from None
    return np.asarray(img.convert("RGB"))


def load_frame(index: LogIndex, i: int, with_images: bool = True) -> Frame:
    """Load frame ``i`` of a log. Raises :class:`InputError` naming the file and frame on bad data."""
    fs, root = fsspec.core.url_to_fs(index.path)
    ts = int(index.timestamps_ns[i])
    lidar_rel = index.lidar_files[i]
    pts = read_points(fs, posixpath.join(root, lidar_rel), posixpath.join(index.path, lidar_rel), ts)
    encoded, files, cts = {}, {}, {}
    for cam, flist in index.camera_files.items():
        rel = flist[i]
        if rel is None:
            continue
        files[cam] = posixpath.join(index.path, rel)
        cts[cam] = int(index.camera_timestamps_ns[cam][i])
        if with_images:
            encoded[cam] = open_image_file(fs, posixpath.join(root, rel), files[cam], ts)
    images = LazyImages(encoded) if with_images else {}
    gt = cats = tids = None
    if index.annotations is not None:
        gt, cats, tids = index.ground_truth(ts)
    return Frame(
        log_id=index.log_id, timestamp_ns=ts, frame_index=i, points=pts,
        lidar_file=posixpath.join(index.path, lidar_rel), world_from_ego=index.world_from_ego[i],
        ego_from_lidar=index.ego_from_lidar, images=images, image_files=files, camera_timestamps_ns=cts,
        cameras=index.cameras, gt_boxes=gt, gt_categories=cats, gt_track_ids=tids,
    )


class NativeLogWriter:
    """Writes one native log. Call :meth:`add_frame` per sweep, then :meth:`close`."""

    def __init__(self, root: str, log_id: str, cameras: dict[str, CameraCalib], ego_from_lidar=None,
                 lidar_meta: dict | None = None, jpeg_quality: int = 90):
        self.url = _join_url(str(root), log_id)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.log_id = log_id
        self.cameras = cameras
        self.ego_from_lidar = np.eye(4) if ego_from_lidar is None else np.asarray(ego_from_lidar)
        self.lidar_meta = lidar_meta or {}
        self.jpeg_quality = jpeg_quality
        self.frames: list[dict] = []
        self.cams: list[dict] = []
        self.poses: list[dict] = []
        self.ann: list[dict] = []
        self.cc: list[dict] = []
        self.fs.makedirs(posixpath.join(self.root, "lidar"), exist_ok=True)
        for n in cameras:
            self.fs.makedirs(posixpath.join(self.root, "camera", n), exist_ok=True)

    def add_frame(self, timestamp_ns: int, points: np.ndarray, world_from_ego: np.ndarray,
                  images: dict[str, np.ndarray] | None = None, camera_timestamps_ns: dict[str, int] | None = None) -> None:
        ts = int(timestamp_ns)
        rel = f"lidar/{ts}.bin"
        with self.fs.open(posixpath.join(self.root, rel), "wb") as f:
            f.write(np.ascontiguousarray(points, dtype=np.float32).reshape(-1, POINT_DIM).tobytes())
        self.frames.append({"timestamp_ns": ts, "lidar_file": rel})
        R = np.asarray(world_from_ego)[:3, :3]
        q = _matrix_to_quat(R)
        t = np.asarray(world_from_ego)[:3, 3]
        self.poses.append({"timestamp_ns": ts, "tx_m": t[0], "ty_m": t[1], "tz_m": t[2], "qw": q[0], "qx": q[1], "qy": q[2], "qz": q[3]})
        for cam, img in (images or {}).items():
            crel = f"camera/{cam}/{ts}.jpg"
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=self.jpeg_quality)
            with self.fs.open(posixpath.join(self.root, crel), "wb") as f:
                f.write(buf.getvalue())
            cts = int((camera_timestamps_ns or {}).get(cam, ts))
            self.cams.append({"timestamp_ns": ts, "camera": cam, "image_file": crel, "image_timestamp_ns": cts})

    def add_annotations(self, timestamp_ns: int, boxes: np.ndarray, categories, track_ids, num_points=None) -> None:
        for k, b in enumerate(np.asarray(boxes).reshape(-1, 7)):
            self.ann.append({"timestamp_ns": int(timestamp_ns), "track_id": str(track_ids[k]), "category": str(categories[k]),
                             **{c: float(v) for c, v in zip(("x", "y", "z", "l", "w", "h", "yaw"), b)},
                             "num_lidar_pts": int(num_points[k]) if num_points is not None else -1})

    def add_corner_case(self, timestamp_ns: int, kind: str, track_id: str | None = None, detail: str = "") -> None:
        self.cc.append({"timestamp_ns": int(timestamp_ns), "kind": kind, "track_id": track_id, "detail": detail})

    def close(self) -> str:
        cal = {"ego_from_lidar": self.ego_from_lidar.tolist(), "cameras": {n: c.to_dict() for n, c in self.cameras.items()}}
        with self.fs.open(posixpath.join(self.root, "calibration.json"), "w") as f:
            f.write(json.dumps(cal, indent=2))
        self._write("frames.parquet", self.frames, pa.schema([("timestamp_ns", pa.int64()), ("lidar_file", pa.string())]))
        self._write("poses.parquet", self.poses, pa.schema([("timestamp_ns", pa.int64())] + [(c, pa.float64()) for c in ("tx_m", "ty_m", "tz_m", "qw", "qx", "qy", "qz")]))
        self._write("camera_frames.parquet", self.cams, pa.schema([("timestamp_ns", pa.int64()), ("camera", pa.string()), ("image_file", pa.string()), ("image_timestamp_ns", pa.int64())]))
        self._write("annotations.parquet", self.ann, pa.schema([("timestamp_ns", pa.int64()), ("track_id", pa.string()), ("category", pa.string())]
                    + [(c, pa.float64()) for c in ("x", "y", "z", "l", "w", "h", "yaw")] + [("num_lidar_pts", pa.int64())]))
        self._write("corner_cases.parquet", self.cc, pa.schema([("timestamp_ns", pa.int64()), ("kind", pa.string()), ("track_id", pa.string()), ("detail", pa.string())]))
        # log.json last: its presence marks a complete log
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "log_id": self.log_id, "lidar": self.lidar_meta,
                "cameras": sorted(self.cameras)}
        with self.fs.open(posixpath.join(self.root, "log.json"), "w") as f:
            f.write(json.dumps(meta, indent=2))
        return self.url

    def _write(self, name: str, rows: list[dict], schema: pa.Schema) -> None:
        t = pa.Table.from_pylist(rows, schema=schema)
        with self.fs.open(posixpath.join(self.root, name), "wb") as f:
            pq.write_table(t, f)


def _matrix_to_quat(R: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method)."""
    tr = np.trace(R)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        w, x, y, z = (R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        w, x, y, z = (R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        w, x, y, z = (R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s
    return float(w), float(x), float(y), float(z)
