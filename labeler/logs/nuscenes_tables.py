"""nuScenes scenes from the dataset's own JSON tables (``<dataroot>/v1.0-*/sample.json`` ...), one log per scene.

A log path is ``<dataroot>#<scene name>`` (``find_nuscenes_table_logs(dataroot)`` lists them); the frames are the
scene's samples (keyframes), in time order. Files named in ``sample_data.filename`` are read under the dataroot.

* LiDAR frame: LIDAR_TOP turned to x forward exactly as :mod:`labeler.logs.nuscenes` does (quarter turns about z).
* Poses: ``world_from_ego`` from the LIDAR_TOP sample_data's ``ego_pose``; ``ego_from_lidar`` from its
  ``calibrated_sensor``. Cameras: ``K = camera_intrinsic``, ``cam_from_lidar = inv(ego_from_cam) @
  inv(ego_pose_cam) @ ego_pose_lidar @ ego_from_lidar`` (each camera's own capture pose).
* Ground truth: ``sample_annotation`` boxes (global frame, size w, l, h) moved into the LiDAR frame with the yaw of
  the full rotation (boxes stay level; see the tilt note in :mod:`labeler.logs.nuscenes`); category from
  ``instance`` -> ``category``; ``gt_track_ids`` are the instance tokens; ``num_lidar_pts`` is kept by
  :func:`labeler.eval.groundtruth.gt_table` through the count of the loaded points.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import fsspec
import numpy as np

from labeler.errors import InputError
from labeler.geometry.boxes import wrap_angle
from labeler.geometry.camera import CameraCalib
from labeler.geometry.transforms import invert, quat_to_matrix, se3
from labeler.logs.frame import Frame
from labeler.logs.images import LazyImages
from labeler.logs.native import open_image_file
from labeler.logs.nuscenes import NUSCENES_IMAGE_SIZE, read_bin_points
from labeler.logs.pcd import quarter_turn_z, turn_for_forward, turn_points

FORMAT = "nuscenes_tables"
TABLES = ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "sample_annotation",
          "instance", "category")


def _split(path: str) -> tuple[str, str | None]:
    root, _, scene = str(path).partition("#")
    return root.rstrip("/"), (scene or None)


def _version_dir(fs, root: str) -> str | None:
    if not fs.isdir(root):
        return None
    for d in sorted(fs.ls(root, detail=False)):
        if posixpath.basename(d.rstrip("/")).startswith("v1.0") and fs.exists(posixpath.join(d, "sample.json")):
            return d
    return None


def is_nuscenes_tables(path: str) -> bool:
    root, _ = _split(path)
    fs, p = fsspec.core.url_to_fs(root)
    return _version_dir(fs, p) is not None


def _load_tables(fs, vdir: str, display: str) -> dict[str, list[dict]]:
    out = {}
    for t in TABLES:
        p = posixpath.join(vdir, f"{t}.json")
        try:
            with fs.open(p, "rb") as f:
                out[t] = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            raise InputError(f"{display}/{posixpath.basename(vdir)}/{t}.json", "missing_file",
                             f"nuScenes table {t}.json is missing; copy the whole v1.0-* folder") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{display}/{posixpath.basename(vdir)}/{t}.json", "corrupt_json", f"cannot parse ({e})") from None
    return out


def find_nuscenes_table_logs(root: str) -> list[str]:
    r, _ = _split(root)
    fs, p = fsspec.core.url_to_fs(r)
    vdir = _version_dir(fs, p)
    if vdir is None:
        return []
    with fs.open(posixpath.join(vdir, "scene.json"), "rb") as f:
        scenes = json.loads(f.read().decode("utf-8"))
    return [f"{r}#{s['name']}" for s in sorted(scenes, key=lambda s: s["name"])]


def _pose(rec: dict) -> np.ndarray:
    return se3(quat_to_matrix(*rec["rotation"]), rec["translation"])


@dataclass
class NuScenesTablesLog:
    """One nuScenes scene read from the JSON tables, as a :class:`labeler.logs.base.LogSource`."""

    path: str
    log_id: str
    root: str
    lidar_sd: list[dict]          # LIDAR_TOP keyframe sample_data per frame
    cam_sd: list[dict]            # per frame: camera channel -> keyframe sample_data
    t: dict                       # token-indexed tables
    timestamps_ns: np.ndarray
    world_from_ego: np.ndarray
    ego_from_lidar: np.ndarray
    cameras: dict[str, CameraCalib]
    turn: int = 0
    format: str = FORMAT

    def __len__(self) -> int:
        return len(self.lidar_sd)

    def lidar_file(self, i: int) -> str:
        return f"{self.root}/{self.lidar_sd[i]['filename']}"

    def _camera(self, sd: dict, i: int, w: int, h: int) -> CameraCalib:
        cs = self.t["calibrated_sensor"][sd["calibrated_sensor_token"]]
        ch = self.t["sensor"][cs["sensor_token"]]["channel"]
        global_from_cam_ego = _pose(self.t["ego_pose"][sd["ego_pose_token"]])
        cam_from_lidar = (invert(_pose(cs)) @ invert(global_from_cam_ego) @ self.world_from_ego[i] @ self.ego_from_lidar)
        return CameraCalib(ch, np.asarray(cs["camera_intrinsic"], dtype=np.float64), cam_from_lidar, w, h)

    def load_frame(self, i: int, with_images: bool = True) -> Frame:
        fs, root = fsspec.core.url_to_fs(self.root)
        ts = int(self.timestamps_ns[i])
        sd = self.lidar_sd[i]
        pts = turn_points(read_bin_points(fs, posixpath.join(root, sd["filename"]), self.lidar_file(i), ts, 5), self.turn)
        images, files, cts, cams = {}, {}, {}, {}
        for ch, csd in self.cam_sd[i].items():
            files[ch] = f"{self.root}/{csd['filename']}"
            cts[ch] = int(csd["timestamp"]) * 1000
            w, h = int(csd.get("width") or NUSCENES_IMAGE_SIZE[0]), int(csd.get("height") or NUSCENES_IMAGE_SIZE[1])
            if with_images:
                images[ch] = open_image_file(fs, posixpath.join(root, csd["filename"]), files[ch], ts)
                h, w = images[ch].shape[:2]
            cams[ch] = self._camera(csd, i, w, h)
        lidar_from_world = invert(self.world_from_ego[i] @ self.ego_from_lidar)
        anns = [a for a in self.t["sample_annotation"].values() if a["sample_token"] == sd["sample_token"]]
        boxes, cats, tids = [], [], []
        for a in anns:
            T = lidar_from_world @ _pose(a)
            w_, l_, h_ = a["size"]
            boxes.append([*T[:3, 3], l_, w_, h_, float(np.arctan2(T[1, 0], T[0, 0]))])
            inst = self.t["instance"][a["instance_token"]]
            cats.append(self.t["category"][inst["category_token"]]["name"].lower())
            tids.append(a["instance_token"])
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        b[:, 6] = wrap_angle(b[:, 6])
        return Frame(log_id=self.log_id, timestamp_ns=ts, frame_index=i, points=pts, lidar_file=self.lidar_file(i),
                     world_from_ego=self.world_from_ego[i], ego_from_lidar=self.ego_from_lidar, images=LazyImages(images) if with_images else {},
                     image_files=files, camera_timestamps_ns=cts, cameras=cams, gt_boxes=b,
                     gt_categories=np.array(cats, dtype=object), gt_track_ids=np.array(tids, dtype=object))


def open_nuscenes_tables_log(path: str) -> NuScenesTablesLog:
    """Open one scene (``<dataroot>#<scene name>``; a dataroot alone opens its only scene)."""
    root, scene = _split(path)
    fs, p = fsspec.core.url_to_fs(root)
    vdir = _version_dir(fs, p)
    if vdir is None:
        raise InputError(root, "wrong_format", "no v1.0-*/sample.json under this folder; pass a nuScenes dataroot")
    raw = _load_tables(fs, vdir, root)
    t = {k: {r["token"]: r for r in v} for k, v in raw.items()}
    scenes = {s["name"]: s for s in raw["scene"]}
    if scene is None:
        if len(scenes) != 1:
            raise InputError(root, "ambiguous_log", f"{len(scenes)} scenes: open '<dataroot>#<scene name>' (one of {sorted(scenes)[:5]})")
        scene = next(iter(scenes))
    if scene not in scenes:
        raise InputError(path, "missing_scene", f"no scene named {scene!r}; known: {sorted(scenes)[:5]}")
    stoken = scenes[scene]["token"]
    samples = sorted((s for s in raw["sample"] if s["scene_token"] == stoken), key=lambda s: s["timestamp"])
    by_sample: dict[str, dict[str, dict]] = {}
    for sd in raw["sample_data"]:
        if not sd.get("is_key_frame", True):
            continue
        ch = t["sensor"][t["calibrated_sensor"][sd["calibrated_sensor_token"]]["sensor_token"]]["channel"]
        by_sample.setdefault(sd["sample_token"], {})[ch] = sd
    lidar_sd, cam_sd = [], []
    for s in samples:
        chans = by_sample.get(s["token"], {})
        if "LIDAR_TOP" not in chans:
            continue
        lidar_sd.append(chans["LIDAR_TOP"])
        cam_sd.append({ch: sd for ch, sd in sorted(chans.items()) if ch.startswith("CAM_")})
    if not lidar_sd:
        raise InputError(path, "empty_log", "the scene has no LIDAR_TOP keyframes")
    ts = np.array([int(sd["timestamp"]) * 1000 for sd in lidar_sd], dtype=np.int64)
    poses = np.stack([_pose(t["ego_pose"][sd["ego_pose_token"]]) for sd in lidar_sd])
    lidar2ego = _pose(t["calibrated_sensor"][lidar_sd[0]["calibrated_sensor_token"]])
    turn = turn_for_forward(lidar2ego[0, :2])
    log = NuScenesTablesLog(f"{root}#{scene}", scene, root, lidar_sd, cam_sd, t, ts, poses,
                            lidar2ego @ quarter_turn_z(-turn), {}, turn)
    log.cameras = {ch: log._camera(sd, 0, int(sd.get("width") or 1600), int(sd.get("height") or 900)) for ch, sd in cam_sd[0].items()}
    return log
