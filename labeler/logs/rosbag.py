"""ROS bags as logs: ROS 1 ``.bag``, ROS 2 ``.mcap`` / ``.db3`` files and rosbag2 folders (``metadata.yaml``),
read with the pure-Python ``rosbags`` package.

* LiDAR: one ``sensor_msgs/PointCloud2`` topic, ``lidar_topic=`` or auto-picked (the PointCloud2 topic with the
  most messages; ties by name). Frames are its messages, keyed by ``header.stamp`` (the bag's record time when
  the stamp is zero), sorted. Points: fields x, y, z (any numeric type, converted to float32; float32 is kept
  bit-exact) and intensity (``intensity`` / ``i`` / ``reflectance``; uint8 or values above 1 are divided by
  255, others kept), in the cloud's own frame (``header.frame_id``, ROS REP-103: x forward, y left, z up);
  non-finite points are dropped.
* Cameras: every ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, mono16) and ``CompressedImage`` (JPEG,
  PNG) topic. Camera name = the last topic component that is not ``image_raw``, ``image_color``, ``compressed``,
  ... (``/cam/front/image_raw/compressed`` -> ``front``). Each sweep gets the image with the nearest
  ``header.stamp`` per camera, within ``max_image_gap_ns`` (default 100 ms); ``camera_timestamps_ns`` are those
  stamps.
* Calibration, per camera: a sidecar ``calibration.json`` in the native format (``{"ego_from_lidar": 4x4,
  "cameras": {name: {"K", "cam_from_lidar", "width", "height"}}}``) next to the bag file (for a rosbag2 folder:
  inside it, or next to it) wins; else ``sensor_msgs/CameraInfo`` on the camera's ``.../camera_info`` topic gives
  K and the size, and ``/tf_static`` the extrinsic from the cloud's ``frame_id`` to the image's ``frame_id``
  (which must be the optical frame: OpenCV axes, as ROS requires for images). A camera with neither raises
  :class:`InputError` ``missing_calibration``.
* Poses are not read: ``world_from_ego`` is the identity; ``ego_from_lidar`` comes from the sidecar, else identity.
* Remote URLs (``s3://``, ``memory://``) are copied to a local temporary folder once per process (rosbags reads
  local files only).

``lidar_file(i)`` is ``"<bag>#<topic>@<stamp_ns>"`` (the bag and the message), also used in InputError.
"""

from __future__ import annotations

import io
import json
import posixpath
import struct
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
from PIL import Image, UnidentifiedImageError

from labeler.errors import InputError
from labeler.geometry.camera import CameraCalib
from labeler.geometry.transforms import invert, quat_to_matrix, se3
from labeler.logs.frame import Frame
from labeler.logs.pcd import pcd_points

FORMAT = "rosbag"
PC2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF = "tf2_msgs/msg/TFMessage"
MAX_IMAGE_GAP_NS = 100_000_000
BAG_SUFFIXES = (".bag", ".mcap", ".db3")
TOPIC_NOISE = {"image_raw", "image_color", "image_rect", "image_rect_color", "image_mono", "image", "compressed",
               "image_raw_compressed", "image_rect_compressed", "camera_info", "raw"}
_PC2_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_LOCAL_COPIES: dict[str, Path] = {}


def camera_name(topic: str) -> str:
    """Camera name from an image / camera_info topic (see module docstring)."""
    parts = [p for p in topic.split("/") if p]
    keep = [p for p in parts if p not in TOPIC_NOISE]
    return (keep or parts or ["camera"])[-1]


def is_rosbag(path: str) -> bool:
    """A ``.bag`` / ``.mcap`` / ``.db3`` file or a folder with ``metadata.yaml``."""
    fs, p = fsspec.core.url_to_fs(str(path))
    if p.endswith(BAG_SUFFIXES):
        return fs.isfile(p)
    return fs.isdir(p) and fs.isfile(posixpath.join(p, "metadata.yaml"))


def find_rosbags(root: str) -> list[str]:
    """Bags at ``root`` or up to two levels below it (files inside a rosbag2 folder are not listed separately)."""
    root = str(root).rstrip("/")
    if is_rosbag(root):
        return [root]
    fs, p = fsspec.core.url_to_fs(root)
    base, out, bag_dirs = p.rstrip("/"), [], set()
    for d, _dirs, files in fs.walk(p, maxdepth=3) if fs.isdir(p) else []:
        rel = d[len(base):].strip("/")
        if "metadata.yaml" in files and rel:
            bag_dirs.add(d)
            out.append(root + "/" + rel)
    for d, _dirs, files in fs.walk(p, maxdepth=3) if fs.isdir(p) else []:
        if d in bag_dirs or any(d.startswith(b + "/") for b in bag_dirs):
            continue
        for n in files:
            if n.endswith(BAG_SUFFIXES):
                out.append(root + "/" + posixpath.join(d, n)[len(base):].lstrip("/"))
    return sorted(out)


def _local(path: str) -> Path:
    fs, p = fsspec.core.url_to_fs(path)
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return Path(p)
    if path not in _LOCAL_COPIES:
        dst = Path(tempfile.mkdtemp(prefix="labeler-bag-")) / posixpath.basename(p.rstrip("/"))
        if fs.isdir(p):
            dst.mkdir()
            for f in fs.find(p):
                out = dst / f[len(p.rstrip("/")):].lstrip("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(fs.cat_file(f))
        else:
            dst.write_bytes(fs.cat_file(p))
        _LOCAL_COPIES[path] = dst
    return _LOCAL_COPIES[path]


def _open_reader(local: Path, display: str):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    try:
        r = AnyReader([local], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        r.open()
        return r
    except Exception as e:  # noqa: BLE001 - rosbags raises many types for unreadable bags
        raise InputError(display, "corrupt_bag",
                         f"cannot open the bag ({type(e).__name__}: {e}); check that the recording finished and is not truncated") from None


def header_of(raw: bytes, ros2: bool) -> tuple[int, str]:
    """(stamp_ns, frame_id) of a serialised message whose first field is std_msgs/Header (no full decode).

    Raises ValueError when the bytes are too short to hold a header.
    """
    if len(raw) < 16:
        raise ValueError(f"{len(raw)} bytes cannot hold a std_msgs/Header")
    if ros2:
        fmt = "<" if raw[1] == 1 else ">"
        sec, nsec, n = struct.unpack_from(fmt + "iII", raw, 4)
        frame = raw[16 : 16 + max(n - 1, 0)]
    else:
        _seq, sec, nsec, n = struct.unpack_from("<IIII", raw, 0)
        frame = raw[16 : 16 + n]
    return int(sec) * 1_000_000_000 + int(nsec), bytes(frame).decode("utf-8", "replace")


def pointcloud2_points(msg, display: str, frame: int | None, intensity_max: float | None = None) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> (N, 4) float32 [x, y, z, intensity 0..1] (non-finite points dropped)."""
    fields = {f.name: f for f in msg.fields}
    missing = [c for c in ("x", "y", "z") if c not in fields]
    if missing:
        raise InputError(display, "unknown_fields", f"PointCloud2 lacks {missing} (has {sorted(fields)})", frame)
    step, n = int(msg.point_step), int(msg.width) * int(msg.height)
    end = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for name in ("x", "y", "z", "intensity", "i", "reflectance"):
        f = fields.get(name)
        if f is None:
            continue
        if f.datatype not in _PC2_TYPES:
            raise InputError(display, "unknown_fields", f"field {name!r} has unknown datatype {f.datatype}", frame)
        dt = np.dtype(end + _PC2_TYPES[f.datatype])
        if f.offset + dt.itemsize > step:
            raise InputError(display, "unknown_fields", f"field {name!r} at offset {f.offset} does not fit point_step {step}", frame)
        names.append(name), formats.append(dt), offsets.append(int(f.offset))
    data = np.asarray(msg.data, dtype=np.uint8)
    row = int(msg.row_step)
    if row < int(msg.width) * step or len(data) < row * int(msg.height):
        raise InputError(display, "truncated_point_file",
                         f"PointCloud2 data has {len(data)} bytes, width {msg.width} x height {msg.height} x point_step {step} "
                         f"(row_step {row}) need {row * int(msg.height)}; the message is truncated", frame)
    rows = data[: row * int(msg.height)].reshape(int(msg.height), row)[:, : int(msg.width) * step]
    arr = np.frombuffer(np.ascontiguousarray(rows).tobytes(), dtype=np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": step}), count=n)
    return pcd_points(arr, intensity_max)


def image_to_rgb(msg, compressed: bool, display: str, frame: int | None) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> (H, W, 3) uint8 RGB."""
    data = np.asarray(msg.data, dtype=np.uint8)
    if compressed:
        try:
            img = Image.open(io.BytesIO(data.tobytes()))
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise InputError(display, "corrupt_image", f"cannot decode {msg.format!r} image ({e})", frame) from None
        return np.asarray(img.convert("RGB"))
    enc = msg.encoding.lower()
    ch = {"rgb8": 3, "bgr8": 3, "8uc3": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "mono16": 2, "16uc1": 2}.get(enc)
    if ch is None:
        raise InputError(display, "unknown_fields",
                         f"image encoding {msg.encoding!r} is not supported (rgb8, bgr8, rgba8, bgra8, mono8, mono16)", frame)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if step < w * ch or len(data) < step * h:
        raise InputError(display, "corrupt_image", f"image data has {len(data)} bytes, {h} rows x step {step} needed", frame)
    px = data[: step * h].reshape(h, step)[:, : w * ch]
    if ch == 2:
        dt = ">u2" if msg.is_bigendian else "<u2"
        g = (np.frombuffer(px.tobytes(), dtype=dt).reshape(h, w) >> 8).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    px = px.reshape(h, w, ch)
    if ch == 1:
        return np.repeat(px, 3, axis=2).copy()
    rgb = px[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if enc.startswith("bgr") or enc == "8uc3" else rgb)


def _tf_lookup(edges: dict[tuple[str, str], np.ndarray], dst: str, src: str) -> np.ndarray | None:
    """dst_from_src through a chain of static transforms (edges: (parent, child) -> parent_from_child)."""
    graph: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (parent, child), T in edges.items():
        graph.setdefault(child, []).append((parent, T))  # child -> parent: parent_from_child
        graph.setdefault(parent, []).append((child, invert(T)))
    seen, todo = {src}, deque([(src, np.eye(4))])
    while todo:
        node, node_from_src = todo.popleft()  # noqa: F841 - name documents the frame
        if node == dst:
            return node_from_src
        for nxt, nxt_from_node in graph.get(node, []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append((nxt, nxt_from_node @ node_from_src))
    return None


def _sidecar(path: str) -> tuple[dict | None, str]:
    fs, p = fsspec.core.url_to_fs(path)
    p = p.rstrip("/")
    cands = ([posixpath.join(p, "calibration.json")] if fs.isdir(p) else []) + [posixpath.join(posixpath.dirname(p), "calibration.json")]
    for c in cands:
        if fs.isfile(c):
            base = path.rstrip("/") if c.startswith(p + "/") else path.rstrip("/").rsplit("/", 1)[0]
            disp = base + "/calibration.json"
            try:
                return json.loads(fs.cat_file(c).decode("utf-8")), disp
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(disp, "bad_calibration", f"cannot parse JSON ({e})") from None
    return None, ""


@dataclass
class RosbagLog:
    """A ROS 1 / ROS 2 bag as a :class:`labeler.logs.base.LogSource` (see module docstring)."""

    has_poses = False     # no ego poses in this format: the stationary filter cannot apply
    sequential = True     # frames form a time sequence (keyframe subsampling applies)

    path: str
    log_id: str
    lidar_topic: str
    timestamps_ns: np.ndarray
    record_ns: np.ndarray  # bag record time of each sweep message (to fetch it again)
    world_from_ego: np.ndarray
    ego_from_lidar: np.ndarray
    cameras: dict[str, CameraCalib]
    camera_topics: dict[str, str]
    camera_stamps: dict[str, np.ndarray]  # camera -> (K,) header stamps, sorted
    camera_record_ns: dict[str, np.ndarray]
    max_image_gap_ns: int = MAX_IMAGE_GAP_NS
    intensity_max: float | None = None
    format: str = FORMAT
    _ros2: bool = field(default=True, repr=False)

    def __len__(self) -> int:
        return len(self.timestamps_ns)

    def lidar_file(self, i: int) -> str:
        return f"{self.path}#{self.lidar_topic}@{int(self.timestamps_ns[i])}"

    def image_pairing(self, i: int) -> dict[str, int]:
        """camera -> index of the image paired with sweep ``i`` (cameras without one within the gap left out)."""
        ts, out = int(self.timestamps_ns[i]), {}
        for cam, st in self.camera_stamps.items():
            if not len(st):
                continue
            k = int(np.clip(np.searchsorted(st, ts), 0, len(st) - 1))
            if k > 0 and abs(int(st[k - 1]) - ts) <= abs(int(st[k]) - ts):
                k -= 1
            if abs(int(st[k]) - ts) <= self.max_image_gap_ns:
                out[cam] = k
        return out

    def _fetch(self, reader, topic: str, record_ns: int, stamp: int):
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, _t, raw in reader.messages(connections=conns, start=record_ns, stop=record_ns + 1):
            try:
                if header_of(raw, self._ros2)[0] == stamp or stamp == record_ns:
                    return conn, raw
            except ValueError:
                continue
        return None, None

    def load_frame(self, i: int, with_images: bool = True) -> Frame:
        ts = int(self.timestamps_ns[i])
        disp = self.lidar_file(i)
        reader = _open_reader(_local(self.path), self.path)
        try:
            conn, raw = self._fetch(reader, self.lidar_topic, int(self.record_ns[i]), ts)
            if raw is None:
                raise InputError(disp, "missing_point_file", "the sweep message is no longer in the bag", ts)
            msg = self._deserialize(reader, raw, conn.msgtype, disp, ts)
            pts = pointcloud2_points(msg, disp, ts, self.intensity_max)
            images, files, cts = {}, {}, {}
            for cam, k in self.image_pairing(i).items():
                stamp, topic = int(self.camera_stamps[cam][k]), self.camera_topics[cam]
                files[cam], cts[cam] = f"{self.path}#{topic}@{stamp}", stamp
                if with_images:
                    c, r = self._fetch(reader, topic, int(self.camera_record_ns[cam][k]), stamp)
                    if r is None:
                        raise InputError(files[cam], "missing_image", "the image message is no longer in the bag", ts)
                    msg = self._deserialize(reader, r, c.msgtype, files[cam], ts)
                    images[cam] = image_to_rgb(msg, c.msgtype == COMPRESSED, files[cam], ts)
        finally:
            reader.close()
        return Frame(
            log_id=self.log_id, timestamp_ns=ts, frame_index=i, points=pts, lidar_file=disp,
            world_from_ego=self.world_from_ego[i], ego_from_lidar=self.ego_from_lidar, images=images, image_files=files,
            camera_timestamps_ns=cts, cameras=self.cameras,
        )

    @staticmethod
    def _deserialize(reader, raw: bytes, msgtype: str, disp: str, ts: int | None):
        try:
            return reader.deserialize(raw, msgtype)
        except Exception as e:  # noqa: BLE001 - a message that does not decode is corrupt input
            raise InputError(disp, "corrupt_message", f"cannot decode {msgtype} ({e}); the bag is damaged", ts) from None


def open_rosbag_log(path: str, lidar_topic: str | None = None, max_image_gap_ns: int = MAX_IMAGE_GAP_NS,
                    intensity_max: float | None = None) -> RosbagLog:
    """Index a bag: one pass over its PointCloud2, image, CameraInfo and /tf_static messages (headers only for data)."""
    path = str(path).rstrip("/")
    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        raise InputError(path, "missing_input", "no such bag file or folder")
    reader = _open_reader(_local(path), path)
    try:
        ros2 = bool(reader.is2)
        by_type: dict[str, dict[str, list]] = {}
        for c in reader.connections:
            by_type.setdefault(c.msgtype, {}).setdefault(c.topic, []).append(c)
        clouds = by_type.get(PC2, {})
        if not clouds:
            topics = sorted(f"{c.topic} ({c.msgtype})" for c in reader.connections)
            raise InputError(path, "no_lidar_topic", f"no sensor_msgs/PointCloud2 topic; topics: {topics}")
        if lidar_topic is None:
            lidar_topic = sorted(clouds, key=lambda t: (-sum(c.msgcount for c in clouds[t]), t))[0]
        elif lidar_topic not in clouds:
            raise InputError(path, "no_lidar_topic", f"lidar_topic {lidar_topic!r} is not a PointCloud2 topic; have {sorted(clouds)}")
        img_topics = {t: mt for mt in (IMAGE, COMPRESSED) for t in by_type.get(mt, {})}
        info_topics = list(by_type.get(CAMERA_INFO, {}))
        tf_topics = [t for t in by_type.get(TF, {}) if t.endswith("tf_static")]
        want = [c for c in reader.connections if c.topic in {lidar_topic, *img_topics, *info_topics, *tf_topics}]
        sweeps, imgs, frames_of, infos, tf = [], {}, {}, {}, {}
        for conn, t, raw in reader.messages(connections=want):
            if conn.topic in img_topics or conn.topic == lidar_topic:
                try:
                    stamp, frame_id = header_of(raw, ros2)
                except ValueError as e:
                    raise InputError(f"{path}#{conn.topic}@{t}", "corrupt_message", f"{e}; the bag is damaged", int(t)) from None
                stamp = stamp or int(t)
                if conn.topic == lidar_topic:
                    sweeps.append((stamp, int(t)))
                else:
                    imgs.setdefault(conn.topic, []).append((stamp, int(t)))
                frames_of.setdefault(conn.topic, frame_id)
            elif conn.topic in info_topics:
                infos.setdefault(camera_name(conn.topic), RosbagLog._deserialize(reader, raw, conn.msgtype, path, None))
            else:
                for tr in RosbagLog._deserialize(reader, raw, conn.msgtype, path, None).transforms:
                    q, v = tr.transform.rotation, tr.transform.translation
                    tf[(tr.header.frame_id, tr.child_frame_id)] = se3(quat_to_matrix(q.w, q.x, q.y, q.z), [v.x, v.y, v.z])
    finally:
        reader.close()
    if not sweeps:
        raise InputError(path, "empty_log", f"topic {lidar_topic} has no messages")
    sweeps.sort()
    side, side_disp = _sidecar(path)
    cam_topics = {}
    for topic in sorted(img_topics):
        name = camera_name(topic)
        if name in cam_topics:
            name = topic.strip("/").replace("/", "_")
        cam_topics[name] = topic
    cams = {n: _calibration(n, t, side, side_disp, infos.get(n), tf, frames_of[lidar_topic], frames_of.get(t, ""), path)
            for n, t in cam_topics.items()}
    try:
        ego_from_lidar = np.asarray((side or {}).get("ego_from_lidar", np.eye(4)), dtype=np.float64).reshape(4, 4)
    except ValueError:
        raise InputError(side_disp, "bad_calibration", "ego_from_lidar must be 4x4") from None
    cst, crec = {}, {}
    for n, t in cam_topics.items():
        a = np.array(sorted(imgs.get(t, [])), dtype=np.int64).reshape(-1, 2)
        cst[n], crec[n] = a[:, 0], a[:, 1]
    ts = np.array([s for s, _ in sweeps], dtype=np.int64)
    name = posixpath.basename(p.rstrip("/"))
    log_id = name[: -len(posixpath.splitext(name)[1])] if name.endswith(BAG_SUFFIXES) else name
    return RosbagLog(path, log_id, lidar_topic, ts, np.array([r for _, r in sweeps], dtype=np.int64), np.tile(np.eye(4), (len(ts), 1, 1)),
                     ego_from_lidar, cams, cam_topics, cst, crec, max_image_gap_ns, intensity_max, FORMAT, ros2)


def _calibration(name, topic, side, side_disp, info, tf, lidar_frame, cam_frame, path) -> CameraCalib:
    if side and name in side.get("cameras", {}):
        try:
            return CameraCalib.from_dict(name, side["cameras"][name])
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(side_disp, "bad_calibration",
                             f"camera {name!r}: {e}; needs K (3x3), cam_from_lidar (4x4), width, height") from None
    if info is not None:
        T = _tf_lookup(tf, cam_frame, lidar_frame)
        if T is None:
            raise InputError(path, "missing_calibration",
                             f"camera {name!r} ({topic}) has CameraInfo but no /tf_static path from {lidar_frame!r} to {cam_frame!r}; "
                             "record /tf_static or put calibration.json (native format) next to the bag")
        K = np.asarray(getattr(info, "k", getattr(info, "K", None)), dtype=np.float64).reshape(3, 3)
        return CameraCalib(name, K, T, int(info.width), int(info.height))
    raise InputError(path, "missing_calibration",
                     f"camera {name!r} ({topic}) has no calibration: put calibration.json (native format: cameras.{name}.K, "
                     "cam_from_lidar, width, height) next to the bag, or record its camera_info and /tf_static")
