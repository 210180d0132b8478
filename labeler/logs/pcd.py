"""PCD point files (``DATA ascii | binary | binary_compressed``) with header checks, and the
SUSTechPOINTS sequence folder reader built on them.

PCD parsing never guesses silently. A binary header is trusted only when every field has a valid
SIZE/TYPE, COUNT >= 1 and the DATA section holds exactly ``POINTS x record size`` bytes. Otherwise:

* ``layout=`` (a numpy structured dtype, or a name of :data:`KNOWN_LAYOUTS`) is used when given;
* else a header whose FIELDS/SIZE/TYPE/COUNT match a known lying writer uses that writer's documented layout
  (:data:`KNOWN_SIGNATURES`; today only SUSTechPOINTS, see below);
* else :class:`InputError` ``untrusted_pcd_layout`` names the file and says how to override.
Values decoded with a non-header layout must look like a point cloud (finite, |xyz| < 10 km) or the read fails.

SUSTechPOINTS: the header says ``FIELDS x y z _ intensity _ timestamp _ ring _ / SIZE 4 4 4 1 4 1 8 1 2 1 /
COUNT 1 1 1 4 1 0 1 6 1 12`` (a COUNT of 0, offsets that do not match the data), and the DATA section has
trailing bytes after the N points. The true 48-byte record is x, y, z float32 @ 0, 4, 8; intensity float32 @ 16
(0-255); timestamp float64 @ 24 (seconds); ring uint16 @ 32. Trailing bytes after ``POINTS`` records are ignored.

Points returned by :func:`pcd_points` are (N, 4) float32 ``[x, y, z, intensity]`` in the file's frame (metres);
intensity is divided by 255 when the field is uint8 or exceeds 1 (0-255 sensors), else kept; non-finite xyz
points are dropped.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import fsspec
import numpy as np
from PIL import Image

from labeler.errors import InputError
from labeler.geometry.boxes import wrap_angle
from labeler.geometry.camera import CameraCalib
from labeler.logs.frame import Frame
from labeler.logs.images import LazyImages
from labeler.logs.native import open_image_file

FORMAT = "sustech"
SUSTECH_LAYOUT = np.dtype({"names": ["x", "y", "z", "intensity", "timestamp", "ring"],
                           "formats": ["<f4", "<f4", "<f4", "<f4", "<f8", "<u2"],
                           "offsets": [0, 4, 8, 16, 24, 32], "itemsize": 48})
KNOWN_LAYOUTS: dict[str, np.dtype] = {"sustechpoints": SUSTECH_LAYOUT}
# (FIELDS, SIZE, TYPE, COUNT) of headers known to lie -> name in KNOWN_LAYOUTS
KNOWN_SIGNATURES = {
    (("x", "y", "z", "_", "intensity", "_", "timestamp", "_", "ring", "_"), (4, 4, 4, 1, 4, 1, 8, 1, 2, 1),
     ("F", "F", "F", "U", "F", "U", "F", "U", "U", "U"), (1, 1, 1, 4, 1, 0, 1, 6, 1, 12)): "sustechpoints",
}
_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("U", 1): "<u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8",
          ("I", 1): "<i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8"}
INTENSITY_NAMES = ("intensity", "i", "reflectance", "remission")
MAX_ABS_COORD_M = 10_000.0


@dataclass
class PcdHeader:
    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    types: tuple[str, ...]
    counts: tuple[int, ...]
    width: int
    height: int
    points: int
    data: str
    header_len: int

    @property
    def signature(self):
        return (self.fields, self.sizes, self.types, self.counts)

    @property
    def record_size(self) -> int:
        return sum(s * c for s, c in zip(self.sizes, self.counts))

    def problems(self) -> list[str]:
        """Why this header cannot describe the data by itself (empty when it can)."""
        out = []
        if not (len(self.fields) == len(self.sizes) == len(self.types) == len(self.counts)):
            out.append("FIELDS, SIZE, TYPE and COUNT have different lengths")
        for f, s, t, c in zip(self.fields, self.sizes, self.types, self.counts):
            if (t, s) not in _TYPES:
                out.append(f"field {f!r} has TYPE {t} with SIZE {s}")
            if c < 1:
                out.append(f"field {f!r} has COUNT {c}")
        if self.width * self.height != self.points:
            out.append(f"WIDTH x HEIGHT = {self.width * self.height} != POINTS {self.points}")
        return out

    def dtype(self) -> np.dtype:
        names, formats, seen = [], [], {}
        for f, s, t, c in zip(self.fields, self.sizes, self.types, self.counts):
            seen[f] = seen.get(f, 0) + 1
            names.append(f if seen[f] == 1 else f"{f}__{seen[f]}")
            formats.append((_TYPES[(t, s)], (c,)) if c > 1 else _TYPES[(t, s)])
        return np.dtype({"names": names, "formats": formats})


def parse_header(raw: bytes, display: str, frame: int | None = None) -> PcdHeader:
    """Parse the text header of a PCD file (everything up to and including the DATA line)."""
    kv, pos = {}, 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise InputError(display, "bad_pcd_header", "no DATA line: not a PCD file or the header is truncated", frame)
        line = raw[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        kv[key.upper()] = rest.split()
        if key.upper() == "DATA":
            break
        if pos > 65536:
            raise InputError(display, "bad_pcd_header", "header longer than 64 KiB without a DATA line", frame)
    try:
        fields = tuple(kv["FIELDS"])
        n = len(fields)
        h = PcdHeader(fields, tuple(int(x) for x in kv.get("SIZE", [])), tuple(kv.get("TYPE", [])),
                      tuple(int(x) for x in kv.get("COUNT", ["1"] * n)), int(kv["WIDTH"][0]), int(kv.get("HEIGHT", ["1"])[0]),
                      int(kv["POINTS"][0]) if "POINTS" in kv else int(kv["WIDTH"][0]) * int(kv.get("HEIGHT", ["1"])[0]),
                      kv["DATA"][0].lower(), pos)
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(display, "bad_pcd_header",
                         f"missing or non-numeric header entry ({e}); expected FIELDS, SIZE, TYPE, WIDTH, POINTS", frame) from None
    if h.data not in ("ascii", "binary", "binary_compressed"):
        raise InputError(display, "bad_pcd_header", f"unknown DATA {h.data!r}; expected ascii, binary or binary_compressed", frame)
    return h


def lzf_decompress(data: bytes, out_len: int) -> bytes:
    """Decompress an LZF block (the codec of PCD ``binary_compressed``), pure Python."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            ln = ctrl + 1
            if i + ln > n:
                raise ValueError("literal run past the end of the input")
            out += data[i : i + ln]
            i += ln
        else:  # back reference
            ln = ctrl >> 5
            if i + (ln == 7) >= n:
                raise ValueError("back reference past the end of the input")
            if ln == 7:
                ln += data[i]
                i += 1
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            ln += 2
            if ref < 0:
                raise ValueError("back reference before the start of the output")
            if ref + ln <= len(out):
                out += out[ref : ref + ln]
            else:
                for k in range(ln):
                    out.append(out[ref + k])
    if len(out) != out_len:
        raise ValueError(f"decompressed {len(out)} bytes, header says {out_len}")
    return bytes(out)


def _resolve_layout(layout) -> np.dtype:
    if isinstance(layout, str):
        if layout not in KNOWN_LAYOUTS:
            raise ValueError(f"unknown PCD layout {layout!r}; known: {sorted(KNOWN_LAYOUTS)} (or pass a numpy structured dtype)")
        return KNOWN_LAYOUTS[layout]
    return np.dtype(layout)


def _check_plausible(arr: np.ndarray, display: str, frame: int | None, how: str) -> None:
    if not len(arr):
        return
    xyz = np.stack([arr[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)
    fin = np.isfinite(xyz).all(axis=1)
    if fin.mean() < 0.5 or (fin.any() and np.abs(xyz[fin]).max() > MAX_ABS_COORD_M):
        raise InputError(display, "untrusted_pcd_layout",
                         f"decoding with the {how} gives implausible coordinates (non-finite or beyond {MAX_ABS_COORD_M:g} m); "
                         "pass the true record layout with layout=", frame)


def choose_layout(h: PcdHeader, body_len: int, layout, display: str, frame: int | None = None) -> tuple[np.dtype, str]:
    """Record dtype of a binary PCD and where it came from ('header' | 'layout=' | known layout name); see module docstring."""
    problems = h.problems()
    if layout is not None:
        return _resolve_layout(layout), "layout="
    if not problems and body_len == h.points * h.record_size:
        return h.dtype(), "header"
    if h.signature in KNOWN_SIGNATURES:
        return KNOWN_LAYOUTS[KNOWN_SIGNATURES[h.signature]], KNOWN_SIGNATURES[h.signature]
    if not problems and body_len < h.points * h.record_size:
        raise InputError(display, "truncated_point_file",
                         f"DATA holds {body_len} bytes, POINTS {h.points} x {h.record_size}-byte records need {h.points * h.record_size}; "
                         "the file is truncated", frame)
    per = f"{body_len / h.points:.3f}" if h.points else "n/a"
    why = "; ".join(problems) or "DATA size does not match"
    raise InputError(display, "untrusted_pcd_layout",
                     f"header cannot be trusted ({why}): header record size {h.record_size} B, DATA {body_len} B for "
                     f"POINTS {h.points} ({per} B/point); pass layout= (a numpy structured dtype or one of {sorted(KNOWN_LAYOUTS)})",
                     frame)


def decode_pcd(raw: bytes, display: str, frame: int | None = None, layout=None) -> tuple[np.ndarray, PcdHeader, str]:
    """Decode PCD bytes. Returns (structured array of the N points, header, layout source: 'header' | 'layout=' | known name)."""
    h = parse_header(raw, display, frame)
    body = memoryview(raw)[h.header_len :]
    problems = h.problems()
    if h.data == "ascii":
        if problems:
            raise InputError(display, "untrusted_pcd_layout", "; ".join(problems), frame)
        return _decode_ascii(bytes(body), h, display, frame), h, "header"
    if h.data == "binary_compressed":
        if problems:
            raise InputError(display, "untrusted_pcd_layout", "; ".join(problems), frame)
        return _decode_compressed(bytes(body), h, display, frame), h, "header"
    dt, how = choose_layout(h, len(body), layout, display, frame)
    need = h.points * dt.itemsize
    if len(body) < need:
        raise InputError(display, "truncated_point_file",
                         f"DATA holds {len(body)} bytes, POINTS {h.points} x {dt.itemsize}-byte records ({how} layout) need {need}; "
                         "the file is truncated", frame)
    arr = np.frombuffer(body[:need], dtype=dt).copy()
    missing = [c for c in ("x", "y", "z") if c not in (dt.names or ())]
    if missing:
        raise InputError(display, "unknown_fields", f"no {missing} field(s) in {dt.names}; a point cloud needs x, y, z", frame)
    if how != "header":
        _check_plausible(arr, display, frame, f"{how} layout")
    return arr, h, how


def _decode_ascii(body: bytes, h: PcdHeader, display: str, frame: int | None) -> np.ndarray:
    dt = h.dtype()
    ncol = sum(h.counts)
    rows = [ln.split() for ln in body.decode("ascii", "replace").splitlines() if ln.strip()]
    if len(rows) < h.points or any(len(r) != ncol for r in rows[: h.points]):
        raise InputError(display, "truncated_point_file",
                         f"ASCII DATA has {len(rows)} rows (need {h.points}) or rows without {ncol} values; the file is truncated", frame)
    try:
        vals = np.array(rows[: h.points], dtype=np.float64).reshape(h.points, ncol)
    except ValueError as e:
        raise InputError(display, "bad_pcd_data", f"non-numeric ASCII value ({e})", frame) from None
    arr = np.zeros(h.points, dtype=dt)
    col = 0
    for name, c in zip(dt.names, h.counts):
        arr[name] = vals[:, col] if c == 1 else vals[:, col : col + c]
        col += c
    return arr


def _decode_compressed(body: bytes, h: PcdHeader, display: str, frame: int | None) -> np.ndarray:
    if len(body) < 8:
        raise InputError(display, "truncated_point_file", "binary_compressed DATA lacks its 8-byte size prefix", frame)
    csize, usize = np.frombuffer(body[:8], dtype="<u4")
    if len(body) - 8 < csize:
        raise InputError(display, "truncated_point_file", f"compressed block is {len(body) - 8} bytes, header says {csize}", frame)
    if usize != h.points * h.record_size:
        raise InputError(display, "untrusted_pcd_layout",
                         f"uncompressed size {usize} != POINTS {h.points} x record {h.record_size}; pass a consistent header", frame)
    try:
        raw = lzf_decompress(body[8 : 8 + csize], int(usize))
    except ValueError as e:
        raise InputError(display, "corrupt_point_file", f"LZF decompression failed ({e})", frame) from None
    dt, arr, off = h.dtype(), None, 0
    arr = np.zeros(h.points, dtype=dt)
    for name in dt.names:  # column-major: each field's values for all points, one after the other
        sub = dt.fields[name][0]
        nbytes = sub.itemsize * h.points
        arr[name] = np.frombuffer(raw[off : off + nbytes], dtype=sub.base).reshape(arr[name].shape)
        off += nbytes
    return arr


def read_pcd(url: str, frame: int | None = None, layout=None) -> tuple[np.ndarray, PcdHeader, str]:
    """Read a PCD file at any fsspec URL; see :func:`decode_pcd`."""
    fs, p = fsspec.core.url_to_fs(str(url))
    return decode_pcd(_read_bytes(fs, p, str(url), frame), str(url), frame, layout)


def _read_bytes(fs, path: str, display: str, frame: int | None, what: str = "missing_point_file",
                hint: str = "point file is missing") -> bytes:
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(display, what, hint, frame) from None
    if what == "missing_point_file" and not raw:
        raise InputError(display, "empty_point_file", "point file is empty (0 bytes)", frame)
    return raw


def pcd_points(arr: np.ndarray, intensity_max: float | None = None) -> np.ndarray:
    """(N, 4) float32 [x, y, z, intensity 0..1] from a decoded PCD (non-finite xyz dropped).

    ``intensity_max``: full-scale intensity (255 for 0-255 sensors); None = 255 when the field is uint8 or any
    value exceeds 1, else 1. Missing intensity -> 0.
    """
    out = np.zeros((len(arr), 4), dtype=np.float32)
    for k, c in enumerate(("x", "y", "z")):
        out[:, k] = arr[c]
    name = next((n for n in INTENSITY_NAMES if n in (arr.dtype.names or ())), None)
    if name is not None:
        v = arr[name].astype(np.float32).reshape(len(arr), -1)[:, 0]
        if intensity_max is None:
            intensity_max = 255.0 if arr.dtype[name] == np.uint8 or (len(v) and np.nanmax(v) > 1) else 1.0
        out[:, 3] = np.clip(v / np.float32(intensity_max), 0, 1)
    return out[np.isfinite(out[:, :3]).all(axis=1)]


# --------------------------------------------------------------------------- sensor axes -> x-forward LiDAR frame

def quarter_turn_z(k: int) -> np.ndarray:
    """Exact 4x4 rotation by ``k * 90`` degrees about +z (entries 0 / +-1)."""
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][k % 4]
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    return T


def turn_for_forward(forward_xy) -> int:
    """Number of quarter turns about +z that bring the sensor-frame direction ``forward_xy`` closest to +x."""
    return int(round(-np.arctan2(forward_xy[1], forward_xy[0]) / (np.pi / 2))) % 4


def turn_points(points: np.ndarray, k: int) -> np.ndarray:
    """Rotate (N, >=2) points by ``k`` quarter turns about +z, bit-exactly (axis swaps and sign flips only)."""
    k %= 4
    if k == 0:
        return points
    out = points.copy()
    x, y = points[:, 0], points[:, 1]
    out[:, 0], out[:, 1] = {1: (-y, x), 2: (-x, -y), 3: (y, -x)}[k]
    return out


def turn_boxes(boxes: np.ndarray, k: int) -> np.ndarray:
    """Rotate (M, 7) boxes by ``k`` quarter turns about +z (centre exactly, yaw + k * 90 degrees, wrapped)."""
    if k % 4 == 0 or not len(boxes):
        return boxes
    out = turn_points(boxes, k)
    out[:, 6] = wrap_angle(boxes[:, 6] + (k % 4) * np.pi / 2)
    return out


# --------------------------------------------------------------------------- SUSTechPOINTS sequence folder

def is_sustech_sequence(path: str) -> bool:
    """A folder with ``lidar/*.pcd``."""
    fs, p = fsspec.core.url_to_fs(str(path))
    d = posixpath.join(p, "lidar")
    return fs.isdir(d) and any(f.endswith(".pcd") for f in fs.ls(d, detail=False))


def find_sustech_sequences(root: str) -> list[str]:
    """SUSTechPOINTS sequence folders at ``root`` or up to two levels below it."""
    root = str(root).rstrip("/")
    if is_sustech_sequence(root):
        return [root]
    fs, p = fsspec.core.url_to_fs(root)
    out = []
    for d, dirs, _files in fs.walk(p, maxdepth=3) if fs.isdir(p) else []:
        rel = d[len(p.rstrip("/")):].strip("/")
        if rel and "lidar" in dirs and is_sustech_sequence(posixpath.join(d)):
            out.append(root + "/" + rel)
    return sorted(out)


def _url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def timestamp_from_name(stem: str, index_period_ns: int = 100_000_000) -> int:
    """Frame time from a file name: >= 1e15 -> ns; with a '.' -> seconds; else a 10 Hz frame number (x 100 ms)."""
    if "." in stem:
        return int(round(float(stem) * 1e9))
    v = int(stem)
    return v if v >= 10**15 else v * index_period_ns


def seconds_to_ns(t: float) -> int:
    """Per-point time to ns: values >= 1e17 are ns, >= 1e14 us, else seconds."""
    if t >= 1e17:
        return int(t)
    if t >= 1e14:
        return int(round(t * 1e3))
    return int(round(t * 1e9))


def _matrix(x, n: int, display: str, key: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64).reshape(n, n)
    except (TypeError, ValueError):
        raise InputError(display, "bad_calibration", f"`{key}` must be {n}x{n} (or a flat list of {n * n} numbers)") from None
    return a


@dataclass
class SustechSequence:
    """A SUSTechPOINTS sequence folder as a :class:`labeler.logs.base.LogSource`.

    Layout: ``lidar/<frame>.pcd``, ``label/<frame>.json`` (optional per frame), ``calib/camera/<cam>.json``
    (``extrinsic`` lidar->camera 4x4 or flat 16, ``intrinsic`` 3x3 or flat 9), ``camera/<cam>/<frame>.jpg``
    (optional per frame). No poses: ``world_from_ego`` and ``ego_from_lidar`` are identities.

    LiDAR frame (the project's x forward, y left, z up): the PCD frame turned by a whole number of quarter turns
    about +z so that +x is the optical axis of the camera named ``front`` (from ``calib/camera/front.json``; no
    turn without it). ``sensor_from_lidar`` holds that exact turn. The SUSTechPOINTS example data look along -y
    of the PCD (the front camera's axis), so points and boxes are turned by +90 deg: ``(x, y) -> (-y, x)``,
    bit-exact.

    Timestamps: the earliest per-point ``timestamp`` (seconds) among the first 64 KiB of records of each PCD
    (the sweep start) when every file gives one, else from file names (:func:`timestamp_from_name`) for all
    frames; camera timestamps = the sweep's (the format stores none).
    Labels: ``psr.position`` centre, ``psr.scale`` (l, w, h), ``psr.rotation.z`` yaw (roll/pitch dropped),
    ``obj_type`` lower-cased, ``obj_id`` track id. A camera needs a calibration file (else InputError) and at
    least one image (its size); cameras with calibration but no images are left out.
    """

    has_poses = False     # no ego poses in this format: the stationary filter cannot apply
    sequential = True     # frames form a time sequence (keyframe subsampling applies)

    path: str
    log_id: str
    stems: list[str]
    timestamps_ns: np.ndarray
    world_from_ego: np.ndarray
    ego_from_lidar: np.ndarray
    cameras: dict[str, CameraCalib]
    camera_stems: dict[str, set[str]]
    image_ext: dict[str, str]
    layout: object = None
    turn: int = 0  # quarter turns about +z: PCD frame -> LiDAR frame
    format: str = FORMAT

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def sensor_from_lidar(self) -> np.ndarray:
        return quarter_turn_z(-self.turn)

    def lidar_file(self, i: int) -> str:
        return _url(self.path, "lidar", f"{self.stems[i]}.pcd")

    def load_frame(self, i: int, with_images: bool = True) -> Frame:
        fs, root = fsspec.core.url_to_fs(self.path)
        stem, ts = self.stems[i], int(self.timestamps_ns[i])
        raw = _read_bytes(fs, posixpath.join(root, "lidar", f"{stem}.pcd"), self.lidar_file(i), ts)
        arr, _, how = decode_pcd(raw, self.lidar_file(i), ts, self.layout)
        pts = turn_points(pcd_points(arr, 255.0 if how == "sustechpoints" else None), self.turn)
        images, files = {}, {}
        for cam in self.cameras:
            if stem not in self.camera_stems[cam]:
                continue
            rel = f"camera/{cam}/{stem}{self.image_ext[cam]}"
            files[cam] = _url(self.path, rel)
            if with_images:
                images[cam] = open_image_file(fs, posixpath.join(root, rel), files[cam], ts)
        gt = cats = tids = None
        lpath = posixpath.join(root, "label", f"{stem}.json")
        if fs.exists(lpath):
            gt, cats, tids = read_labels(_read_bytes(fs, lpath, _url(self.path, "label", f"{stem}.json"), ts, "missing_label", ""),
                                         _url(self.path, "label", f"{stem}.json"), ts)
            gt = turn_boxes(gt, self.turn)
        return Frame(
            log_id=self.log_id, timestamp_ns=ts, frame_index=i, points=pts, lidar_file=self.lidar_file(i),
            world_from_ego=self.world_from_ego[i], ego_from_lidar=self.ego_from_lidar, images=LazyImages(images) if with_images else {}, image_files=files,
            camera_timestamps_ns={c: ts for c in files}, cameras=dict(self.cameras),
            gt_boxes=gt, gt_categories=cats, gt_track_ids=tids,
        )


def read_labels(raw: bytes, display: str, frame: int | None):
    """SUSTechPOINTS label JSON -> (boxes (M, 7), categories, track ids)."""
    try:
        objs = json.loads(raw.decode("utf-8"))
        rows = [[o["psr"]["position"][a] for a in "xyz"] + [o["psr"]["scale"][a] for a in "xyz"] + [o["psr"]["rotation"]["z"]]
                for o in objs]
        cats = [str(o.get("obj_type", "unknown")).lower() for o in objs]
        tids = [str(o.get("obj_id", "")) for o in objs]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise InputError(display, "bad_label",
                         f"cannot read labels ({type(e).__name__}: {e}); each object needs psr.position/scale/rotation", frame) from None
    return np.array(rows, dtype=np.float64).reshape(-1, 7), np.array(cats, dtype=object), np.array(tids, dtype=object)


def _first_timestamp(fs, p: str, display: str, layout) -> float | None:
    """Earliest per-point ``timestamp`` among the first records (<= 64 KiB) of a PCD; None when unavailable.

    Only the head of a binary file is read; a file whose layout cannot be settled gives None (its frame fails
    later in load_frame with the frame named).
    """
    try:
        with fs.open(p, "rb") as f:
            head = f.read(1 << 16)
        h = parse_header(head, display)
        if h.data == "binary":
            dt, _ = choose_layout(h, fs.size(p) - h.header_len, layout, display)
            k = min(h.points, max(0, (len(head) - h.header_len) // dt.itemsize))
            arr = np.frombuffer(head[h.header_len : h.header_len + k * dt.itemsize], dtype=dt)
        else:
            arr = decode_pcd(_read_bytes(fs, p, display, None), display, None, layout)[0]
    except InputError:
        return None
    if "timestamp" not in (arr.dtype.names or ()):
        return None
    t = arr["timestamp"].astype(np.float64)
    t = t[np.isfinite(t) & (t > 0)]
    return float(t.min()) if len(t) else None


def open_sustech_sequence(path: str, layout=None) -> SustechSequence:
    """Open a SUSTechPOINTS sequence folder. ``layout`` overrides the PCD record layout (see module docstring).

    Reads the head (64 KiB) of every PCD to get the sweep times from the per-point timestamps.
    """
    path = str(path).rstrip("/")
    fs, root = fsspec.core.url_to_fs(path)
    if not is_sustech_sequence(path):
        raise InputError(path, "wrong_format", "not a SUSTechPOINTS sequence: needs lidar/*.pcd")
    stems = sorted(posixpath.basename(f)[:-4] for f in fs.ls(posixpath.join(root, "lidar"), detail=False) if f.endswith(".pcd"))
    firsts = [_first_timestamp(fs, posixpath.join(root, "lidar", f"{s}.pcd"), _url(path, "lidar", f"{s}.pcd"), layout) for s in stems]
    if all(t is not None for t in firsts):
        ts = [seconds_to_ns(t) for t in firsts]
    else:
        try:
            ts = [timestamp_from_name(s) for s in stems]
        except ValueError:
            raise InputError(_url(path, "lidar"), "bad_file_name", "PCDs have no timestamp field and names are not numbers") from None
    order = np.argsort(ts, kind="stable")
    stems = [stems[k] for k in order]
    ts = np.asarray(ts, dtype=np.int64)[order]
    if len(np.unique(ts)) != len(ts):
        raise InputError(_url(path, "lidar"), "duplicate_timestamps", "two sweeps share a timestamp; check the PCD timestamp fields")
    cameras, cam_stems, exts, extrinsics = _sustech_cameras(fs, root, path)
    turn = turn_for_forward(extrinsics["front"][2, :2]) if "front" in extrinsics else 0
    back = quarter_turn_z(-turn)  # sensor_from_lidar
    cameras = {n: CameraCalib(n, c.K, c.cam_from_lidar @ back, c.width, c.height) for n, c in cameras.items()}
    n = len(stems)
    return SustechSequence(path, posixpath.basename(root.rstrip("/")), stems, ts, np.tile(np.eye(4), (n, 1, 1)), np.eye(4),
                           cameras, cam_stems, exts, layout, turn)


def _sustech_cameras(fs, root: str, path: str):
    cdir, idir = posixpath.join(root, "calib", "camera"), posixpath.join(root, "camera")
    calibs = {posixpath.basename(f)[:-5] for f in fs.ls(cdir, detail=False) if f.endswith(".json")} if fs.isdir(cdir) else set()
    imgdirs = {posixpath.basename(f.rstrip("/")) for f in fs.ls(idir, detail=False) if fs.isdir(f)} if fs.isdir(idir) else set()
    for cam in sorted(imgdirs - calibs):
        raise InputError(_url(path, "calib", "camera", f"{cam}.json"), "missing_calibration",
                         f"camera/{cam}/ has images but no calibration; add calib/camera/{cam}.json with extrinsic and intrinsic")
    cams, stems, exts, extrinsics = {}, {}, {}, {}
    for cam in sorted(calibs):
        disp = _url(path, "calib", "camera", f"{cam}.json")
        try:
            d = json.loads(_read_bytes(fs, posixpath.join(cdir, f"{cam}.json"), disp, None, "missing_calibration", "").decode("utf-8"))
            ext, intr = d["extrinsic"], d["intrinsic"]
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(disp, "bad_calibration", f"cannot parse JSON ({e})") from None
        except KeyError as e:
            raise InputError(disp, "missing_calibration",
                             f"no {e} entry; needs extrinsic (lidar->camera 4x4) and intrinsic (3x3)") from None
        extrinsics[cam] = _matrix(ext, 4, disp, "extrinsic")
        files = sorted(fs.ls(posixpath.join(idir, cam), detail=False)) if cam in imgdirs else []
        files = [f for f in files if f.lower().endswith((".jpg", ".jpeg", ".png"))]
        if not files:
            continue
        stems[cam] = {posixpath.splitext(posixpath.basename(f))[0] for f in files}
        exts[cam] = posixpath.splitext(files[0])[1]
        w, h = _image_size(fs, files, path, cam)
        cams[cam] = CameraCalib(cam, _matrix(intr, 3, disp, "intrinsic"), extrinsics[cam], w, h)
    return cams, stems, exts, extrinsics


def _image_size(fs, files: list[str], path: str, cam: str) -> tuple[int, int]:
    for f in files:
        try:
            with fs.open(f, "rb") as fh:
                return Image.open(fh).size  # header only
        except Exception:  # noqa: BLE001 - a corrupt image fails later in load_frame, with its frame named
            continue
    raise InputError(_url(path, "camera", cam), "corrupt_image", "no readable image gives the camera's size")
