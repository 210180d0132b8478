"""nuScenes keyframes from an mmdetection3d (v1.x) info file (``*.info.json`` or ``*.pkl``), read as one log.

One info file = one log (``log_id`` = file name without ``.info.json`` / ``.pkl``); its ``data_list`` entries
are the frames, sorted by LiDAR time. Paths inside the info file (``lidar_points.lidar_path``,
``images[CAM].img_path``) are looked up next to the info file, then under ``samples/<SENSOR>/``.

* LiDAR frame: nuScenes LIDAR_TOP has x right, y forward; this package's LiDAR frame is x forward, y left
  (docs/conventions.md), so points and boxes are turned by -90 deg about z: ``(x, y) -> (y, -x)`` (bit-exact
  axis swap; the number of quarter turns is derived from ``lidar2ego``). ``sensor_from_lidar`` is that turn;
  every transform below is composed with it.
* Points: ``.pcd.bin`` float32 x ``num_pts_feats`` (5: x, y, z, intensity 0-255, ring), metres; intensity is
  divided by 255, ring dropped.
* Poses: ``world_from_ego = ego2global``, ``ego_from_lidar = lidar2ego @ sensor_from_lidar``.
* Cameras (6, 1600 x 900): ``K = cam2img[:3, :3]``, ``cam_from_lidar = lidar2cam @ sensor_from_lidar``; image
  size read from the first frame's images. Camera timestamps from ``images[CAM].timestamp`` (s -> ns, us exact).
* Ground truth: ``instances[i].bbox_3d = [x, y, z (gravity centre), l, w, h, yaw]`` in LIDAR_TOP, which is
  this package's box convention once turned like the points. Category from ``metainfo.categories`` (label -1 -> ``"ignore"``).
  The info file has no instance tokens, so ``gt_track_ids`` is None.
  Note: nuScenes boxes are level in the world (yaw only), the LiDAR is tilted (~2 deg on the sample log),
  and ``bbox_3d`` drops that tilt; counting points in the yaw-only LiDAR-frame box therefore differs from
  the file's ``num_lidar_pts`` for a few boxes by a few points on their faces (exact in a level frame).

The ``.pkl`` is loaded with a restricted unpickler (builtins and numpy arrays only).
"""

from __future__ import annotations

import io
import json
import pickle
import posixpath
from dataclasses import dataclass

import fsspec
import numpy as np
from PIL import Image

from labeler.errors import InputError
from labeler.geometry.camera import CameraCalib
from labeler.logs.frame import Frame
from labeler.logs.images import LazyImages
from labeler.logs.native import open_image_file, read_points
from labeler.logs.pcd import quarter_turn_z, turn_boxes, turn_for_forward, turn_points

FORMAT = "nuscenes"
INFO_SUFFIXES = (".info.json", ".pkl")
NUSCENES_IMAGE_SIZE = (1600, 900)


def _url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _is_info_name(name: str) -> bool:
    return name.endswith(INFO_SUFFIXES)


def _info_files_in(fs, p: str) -> list[str]:
    return sorted(f for f in fs.ls(p, detail=False) if _is_info_name(f) and fs.isfile(f))


def is_nuscenes_info(path: str) -> bool:
    """An mmdet3d info file, or a folder holding exactly one (a ``.info.json`` preferred over a ``.pkl``)."""
    fs, p = fsspec.core.url_to_fs(str(path))
    if _is_info_name(p):
        return fs.isfile(p)
    if not fs.isdir(p):
        return False
    return _pick_info(_info_files_in(fs, p)) is not None


def _pick_info(files: list[str]) -> str | None:
    js = [f for f in files if f.endswith(".info.json")]
    if len(js) == 1:
        return js[0]
    pk = [f for f in files if f.endswith(".pkl")]
    return pk[0] if not js and len(pk) == 1 else None


def find_nuscenes_logs(root: str) -> list[str]:
    """Info files at or up to two folder levels below ``root`` (a ``.pkl`` with a same-named ``.info.json`` is skipped)."""
    root = str(root).rstrip("/")
    fs, p = fsspec.core.url_to_fs(root)
    if _is_info_name(p):
        return [root] if fs.isfile(p) else []
    out = []
    base = p.rstrip("/")
    for d, _dirs, files in fs.walk(p, maxdepth=3) if fs.isdir(p) else []:
        names = set(files)
        for n in sorted(names):
            if n.endswith(".info.json") or (n.endswith(".pkl") and n[:-4] + ".info.json" not in names):
                rel = posixpath.join(d, n)[len(base):].lstrip("/")
                out.append(_url(root, rel))
    return sorted(out)


class _SafeUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an info .pkl")


def _load_info(fs, p: str, display: str) -> dict:
    try:
        with fs.open(p, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(display, "missing_file", "info file is missing") from None
    try:
        d = _SafeUnpickler(io.BytesIO(raw)).load() if p.endswith(".pkl") else json.loads(raw.decode("utf-8"))
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt info file
        raise InputError(display, "corrupt_info", f"cannot parse the info file ({e}); regenerate it with mmdet3d's create_data") from None
    if not isinstance(d, dict) or "data_list" not in d:
        raise InputError(display, "unsupported_info",
                         "no `data_list`: only mmdet3d v1.x info files are supported (convert old ones with update_infos_to_v2.py)")
    return d


def _ns(t_s) -> int:
    return int(round(float(t_s) * 1e6)) * 1000


def _mat(x, shape, display, what, ts) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if shape == (3, 3) and a.shape == (4, 4):
        a = a[:3, :3]
    if a.shape != shape:
        raise InputError(display, "missing_calibration",
                         f"{what} must be {shape[0]}x{shape[1]}, got {a.shape}; regenerate the info file", ts)
    return a


@dataclass
class NuScenesInfoLog:
    """nuScenes keyframes of one mmdet3d info file as a :class:`labeler.logs.base.LogSource` (see module docstring)."""

    path: str
    log_id: str
    samples: list[dict]
    categories: dict[int, str]
    timestamps_ns: np.ndarray
    world_from_ego: np.ndarray
    ego_from_lidar: np.ndarray
    cameras: dict[str, CameraCalib]
    turn: int = 0  # quarter turns about +z: LIDAR_TOP -> LiDAR frame (x forward)
    format: str = FORMAT

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def sensor_from_lidar(self) -> np.ndarray:
        return quarter_turn_z(-self.turn)

    @property
    def folder(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[0]

    def _resolve(self, fs, rel: str, sensor: str) -> tuple[str, str]:
        """(fs path, display URL) of a file named in the info file; first candidate when none exists."""
        _, root = fsspec.core.url_to_fs(self.folder)
        cands = [rel, posixpath.join("samples", sensor, posixpath.basename(rel)), posixpath.basename(rel)]
        for c in cands:
            if fs.exists(posixpath.join(root, c)):
                return posixpath.join(root, c), _url(self.folder, c)
        return posixpath.join(root, rel), _url(self.folder, rel)

    def lidar_file(self, i: int) -> str:
        fs, _ = fsspec.core.url_to_fs(self.folder)
        return self._resolve(fs, self.samples[i]["lidar_points"]["lidar_path"], "LIDAR_TOP")[1]

    def load_frame(self, i: int, with_images: bool = True) -> Frame:
        fs, _ = fsspec.core.url_to_fs(self.folder)
        s, ts = self.samples[i], int(self.timestamps_ns[i])
        lp = s["lidar_points"]
        path, disp = self._resolve(fs, lp["lidar_path"], "LIDAR_TOP")
        pts = turn_points(read_bin_points(fs, path, disp, ts, int(lp.get("num_pts_feats", 5))), self.turn)
        cams, images, files, cts = {}, {}, {}, {}
        for cam, im in (s.get("images") or {}).items():
            if not im.get("img_path"):
                continue
            ipath, files[cam] = self._resolve(fs, im["img_path"], cam)
            cts[cam] = _ns(im["timestamp"]) if "timestamp" in im else ts
            base = self.cameras.get(cam)
            w, h = (base.width, base.height) if base else NUSCENES_IMAGE_SIZE
            if with_images:
                images[cam] = open_image_file(fs, ipath, files[cam], ts)
                h, w = images[cam].shape[:2]
            cams[cam] = _camera(cam, im, w, h, self.path, ts, self.sensor_from_lidar)
        boxes, cats = _instances(s.get("instances", []), self.categories, self.path, ts)
        boxes = turn_boxes(boxes, self.turn)
        return Frame(
            log_id=self.log_id, timestamp_ns=ts, frame_index=i, points=pts, lidar_file=disp,
            world_from_ego=self.world_from_ego[i],
            ego_from_lidar=_mat(lp.get("lidar2ego"), (4, 4), self.path, "lidar2ego", ts) @ self.sensor_from_lidar,
            images=LazyImages(images) if with_images else {}, image_files=files, camera_timestamps_ns=cts, cameras=cams,
            gt_boxes=boxes, gt_categories=cats, gt_track_ids=None,
        )


def read_bin_points(fs, path: str, display: str, frame: int | None, dims: int = 5) -> np.ndarray:
    """nuScenes ``.pcd.bin`` (float32 x dims) -> (N, 4) [x, y, z, intensity / 255]."""
    a = read_points(fs, path, display, frame, dims)
    out = np.empty((len(a), 4), dtype=np.float32)
    out[:, :3] = a[:, :3]
    out[:, 3] = np.clip(a[:, 3] / np.float32(255), 0, 1)
    return out


def _camera(name: str, im: dict, w: int, h: int, display: str, ts: int, sensor_from_lidar: np.ndarray) -> CameraCalib:
    K = _mat(im.get("cam2img"), (3, 3), display, f"images.{name}.cam2img", ts)
    T = _mat(im.get("lidar2cam"), (4, 4), display, f"images.{name}.lidar2cam", ts)
    return CameraCalib(name, K, T @ sensor_from_lidar, int(w), int(h))


def _instances(instances: list[dict], categories: dict[int, str], display: str, ts: int):
    try:
        boxes = np.array([np.asarray(x["bbox_3d"], dtype=np.float64)[:7] for x in instances], dtype=np.float64).reshape(-1, 7)
        labels = [int(x.get("bbox_label_3d", x.get("bbox_label", -1))) for x in instances]
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(display, "bad_annotation", f"instances need bbox_3d (7 numbers) and bbox_label_3d ({e})", ts) from None
    cats = np.array([categories.get(k, "ignore") for k in labels], dtype=object)
    return boxes, cats


def _image_size(fs, path: str) -> tuple[int, int] | None:
    try:
        with fs.open(path, "rb") as f:
            return Image.open(f).size
    except Exception:  # noqa: BLE001 - size is a hint only; bad images fail in load_frame with the frame named
        return None


def open_nuscenes_log(path: str) -> NuScenesInfoLog:
    """Open an mmdet3d nuScenes info file (or a folder holding exactly one)."""
    path = str(path).rstrip("/")
    fs, p = fsspec.core.url_to_fs(path)
    if not _is_info_name(p):
        if not fs.isdir(p):
            raise InputError(path, "missing_input", "no such file or folder")
        f = _pick_info(_info_files_in(fs, p))
        if f is None:
            raise InputError(path, "wrong_format", "need exactly one *.info.json (or *.pkl) info file in the folder; pass the file itself")
        path, p = _url(path, posixpath.basename(f)), f
    d = _load_info(fs, p, path)
    cats = {int(v): str(k).lower() for k, v in (d.get("metainfo", {}).get("categories") or {}).items()}
    samples = [s for s in d["data_list"] if s.get("lidar_points", {}).get("lidar_path")]
    if not samples:
        raise InputError(path, "empty_log", "data_list has no sample with lidar_points.lidar_path")
    samples.sort(key=lambda s: float(s["timestamp"]))
    ts = np.array([_ns(s["timestamp"]) for s in samples], dtype=np.int64)
    poses = np.stack([_mat(s.get("ego2global"), (4, 4), path, "ego2global", int(t)) for s, t in zip(samples, ts)])
    name = posixpath.basename(p)
    log_id = name[: -len(".info.json")] if name.endswith(".info.json") else name[: -len(".pkl")]
    lidar2ego = _mat(samples[0]["lidar_points"].get("lidar2ego"), (4, 4), path, "lidar2ego", int(ts[0]))
    turn = turn_for_forward(lidar2ego[0, :2])  # ego +x (forward) seen in LIDAR_TOP coordinates
    log = NuScenesInfoLog(path, log_id, samples, cats, ts, poses, lidar2ego @ quarter_turn_z(-turn), {}, turn)
    cams = {}
    for cam, im in (samples[0].get("images") or {}).items():
        if not im.get("img_path"):
            continue
        ipath, _ = log._resolve(fs, im["img_path"], cam)
        w, h = _image_size(fs, ipath) or NUSCENES_IMAGE_SIZE
        cams[cam] = _camera(cam, im, w, h, path, int(ts[0]), log.sensor_from_lidar)
    log.cameras = cams
    return log
