"""PCD parsing (ascii / binary / binary_compressed, lying headers) and the SUSTechPOINTS sequence reader."""

import shutil

import fsspec
import numpy as np
import pytest

from labeler.errors import InputError
from labeler.geometry.boxes import count_points_in_boxes
from labeler.geometry.camera import boxes_to_2d, project_points
from labeler.logs.base import LogSource
from labeler.logs.pcd import (SUSTECH_LAYOUT, decode_pcd, lzf_decompress, open_sustech_sequence, parse_header, pcd_points,
                              read_pcd)
from tests.realdata import require_real_data

STEMS = ["000950", "000965", "000970", "000975"]
README_TIMES_S = [1818.81, 1820.30, 1820.80, 1821.30]
HONEST = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("timestamp", "<f8"), ("ring", "<u2")])


# ----------------------------------------------------------------------------------------------- helpers

def lzf_compress(data: bytes) -> bytes:
    """Greedy LZF compressor (test-only) producing both literal runs and back references."""
    out, lit, table, i, n = bytearray(), bytearray(), {}, 0, len(data)

    def flush():
        for k in range(0, len(lit), 32):
            chunk = lit[k : k + 32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        lit.clear()

    while i < n:
        key = data[i : i + 3]
        j = table.get(key) if len(key) == 3 else None
        if len(key) == 3:
            table[key] = i
        if j is not None and i - j - 1 < 8192:
            ln, mx = 3, min(264, n - i)
            while ln < mx and data[j + ln] == data[i + ln]:
                ln += 1
            flush()
            off, code = i - j - 1, ln - 2
            if code < 7:
                out.append((code << 5) | (off >> 8))
            else:
                out.extend([(7 << 5) | (off >> 8), code - 7])
            out.append(off & 0xFF)
            i += ln
        else:
            lit.append(data[i])
            i += 1
    flush()
    return bytes(out)


def write_pcd(arr: np.ndarray, data: str = "binary") -> bytes:
    """An honest PCD of a structured array (fields of count 1)."""
    t = {"f": "F", "u": "U", "i": "I"}
    names = arr.dtype.names
    head = ["# .PCD v0.7", "VERSION 0.7", "FIELDS " + " ".join(names),
            "SIZE " + " ".join(str(arr.dtype[n].itemsize) for n in names),
            "TYPE " + " ".join(t[arr.dtype[n].kind] for n in names), "COUNT " + " ".join("1" for _ in names),
            f"WIDTH {len(arr)}", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {len(arr)}", f"DATA {data}"]
    h = ("\n".join(head) + "\n").encode()
    if data == "binary":
        return h + arr.tobytes()
    if data == "ascii":
        fmt = {"f4": "%.9g", "f8": "%.17g"}
        rows = [" ".join(fmt.get(arr.dtype[n].str[1:], "%d") % r[n] for n in names) for r in arr]
        return h + ("\n".join(rows) + "\n").encode()
    soa = b"".join(np.ascontiguousarray(arr[n]).tobytes() for n in names)
    comp = lzf_compress(soa)
    return h + np.array([len(comp), len(soa)], "<u4").tobytes() + comp


@pytest.fixture()
def seq():
    return require_real_data("sustechpoints_seq")


@pytest.fixture()
def seq_copy(seq, tmp_path):
    dst = tmp_path / "seq"
    shutil.copytree(seq, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def _sample(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    a = np.zeros(n, HONEST)
    for c in "xyz":
        a[c] = rng.normal(0, 20, n).astype(np.float32)
    a["intensity"] = rng.integers(0, 256, n)
    a["timestamp"] = 1818.81 + rng.random(n) * 0.1
    a["ring"] = rng.integers(0, 40, n)
    return a


# ----------------------------------------------------------------------------------------------- PCD files

@pytest.mark.parametrize("data", ["binary", "ascii", "binary_compressed"])
def test_honest_pcd_round_trip(data):
    a = _sample()
    a[::50] = a[:40]  # repeats so the compressor emits back references
    raw = write_pcd(a, data)
    got, h, how = decode_pcd(raw, "mem.pcd")
    assert how == "header" and h.data == data and len(got) == len(a)
    for n in HONEST.names:
        np.testing.assert_array_equal(got[n], a[n])
    pts = pcd_points(got)
    assert pts.dtype == np.float32 and pts.shape == (len(a), 4)
    np.testing.assert_array_equal(pts[:, 3], a["intensity"] / np.float32(255))


def test_lzf_round_trip_and_corruption():
    data = bytes(range(256)) * 20 + b"abcabcabcabc" * 100
    comp = lzf_compress(data)
    assert len(comp) < len(data) / 2 and lzf_decompress(comp, len(data)) == data
    with pytest.raises(ValueError):
        lzf_decompress(comp[:-5], len(data))
    a = _sample()
    raw = write_pcd(a, "binary_compressed")
    with pytest.raises(InputError) as e:
        decode_pcd(raw[:-100], "cut.pcd", 7)
    assert e.value.what == "truncated_point_file" and e.value.frame == 7


def test_honest_header_truncated_and_ascii_truncated():
    a = _sample()
    with pytest.raises(InputError) as e:
        decode_pcd(write_pcd(a)[:-30], "cut.pcd", 5)
    assert (e.value.what, e.value.file, e.value.frame) == ("truncated_point_file", "cut.pcd", 5)
    with pytest.raises(InputError) as e:
        decode_pcd(write_pcd(a, "ascii")[:-300], "cut_ascii.pcd")
    assert e.value.what == "truncated_point_file"


def test_sustech_header_lies_and_is_recognised(seq):
    path = seq / "lidar" / "000950.pcd"
    raw = path.read_bytes()
    h = parse_header(raw, str(path))
    assert h.header_len == 248 and h.points == 68242
    assert any("COUNT 0" in p for p in h.problems())
    assert (len(raw) - h.header_len) != h.points * h.record_size  # trailing bytes after the points
    # what the header claims: timestamp right after intensity's padding, at byte 20 -> garbage
    claimed = np.frombuffer(raw[h.header_len : h.header_len + 48 * 100], dtype=np.dtype(
        {"names": ["timestamp"], "formats": ["<f8"], "offsets": [20], "itemsize": 48}))["timestamp"]
    assert not ((claimed > 1000) & (claimed < 3000)).any()
    arr, _, how = decode_pcd(raw, str(path))
    assert how == "sustechpoints" and len(arr) == 68242
    assert 1818.8 < arr["timestamp"].min() < arr["timestamp"].max() < 1819.0
    assert arr["ring"].max() == 39 and 0 <= arr["intensity"].min() and arr["intensity"].max() == 255
    assert np.isfinite(np.stack([arr["x"], arr["y"], arr["z"]])).all()
    for layout in ("sustechpoints", SUSTECH_LAYOUT):  # explicit override gives the same
        np.testing.assert_array_equal(read_pcd(str(path), layout=layout)[0], arr)


def test_lying_header_without_recovery_is_an_error(seq, tmp_path):
    raw = (seq / "lidar" / "000965.pcd").read_bytes()
    bad = tmp_path / "bad.pcd"
    bad.write_bytes(raw.replace(b"FIELDS x y z _ intensity _ timestamp _ ring _", b"FIELDS x y z _ intensity _ time _ ring _", 1))
    with pytest.raises(InputError) as e:
        read_pcd(str(bad), frame=42)
    assert e.value.what == "untrusted_pcd_layout" and e.value.file == str(bad) and e.value.frame == 42
    assert "COUNT 0" in e.value.detail and "layout=" in e.value.detail
    # an override that decodes garbage is refused too, never silently used
    junk = np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [40, 4, 8], "itemsize": 48})
    with pytest.raises(InputError) as e:
        read_pcd(str(bad), layout=junk)
    assert e.value.what == "untrusted_pcd_layout" and "implausible" in e.value.detail
    assert len(read_pcd(str(bad), layout="sustechpoints")[0]) == 66781


def test_not_a_pcd(tmp_path):
    p = tmp_path / "x.pcd"
    p.write_bytes(b"hello world")
    with pytest.raises(InputError) as e:
        read_pcd(str(p))
    assert e.value.what == "bad_pcd_header"


# ----------------------------------------------------------------------------------------------- SUSTechPOINTS sequence

@pytest.mark.real_data
def test_sequence_reads(seq):
    log = open_sustech_sequence(str(seq))
    assert isinstance(log, LogSource) and log.format == "sustech" and log.stems == STEMS
    np.testing.assert_allclose(log.timestamps_ns / 1e9, README_TIMES_S, atol=0.01)  # from the per-point timestamp field
    assert sorted(log.cameras) == ["front", "left", "right"]
    assert all((c.width, c.height) == (2048, 1536) for c in log.cameras.values())
    f0 = log.load_frame(0)
    assert f0.images == {} and f0.points.shape == (68242, 4) and f0.points.dtype == np.float32
    assert 0 <= f0.points[:, 3].min() and f0.points[:, 3].max() == 1.0
    f1 = log.load_frame(1)
    assert sorted(f1.images) == ["front", "left", "right"] and f1.images["front"].shape == (1536, 2048, 3)
    assert f1.camera_timestamps_ns["front"] == f1.timestamp_ns
    assert len(f0.gt_boxes) == 19 and len(f1.gt_boxes) == 21 and {"car", "pedestrian", "bus"} <= set(f1.gt_categories)
    f2 = log.load_frame(2, with_images=False)
    assert len(set(f1.gt_track_ids) & set(f2.gt_track_ids)) >= 18  # persistent track ids


@pytest.mark.real_data
def test_sequence_frame_is_x_forward_and_exact(seq):
    """The PCD looks along -y (the front camera's axis); points are turned by +90 deg bit-exactly."""
    log = open_sustech_sequence(str(seq))
    assert log.turn == 1
    np.testing.assert_allclose(log.cameras["front"].cam_from_lidar[2, :3], [1, 0, 0], atol=0.06)
    np.testing.assert_allclose(log.cameras["left"].cam_from_lidar[2, :3], [0, 1, 0], atol=0.06)
    raw, _, _ = read_pcd(str(seq / "lidar" / "000970.pcd"))
    f = log.load_frame(2, with_images=False)
    assert np.array_equal(f.points[:, 0], -raw["y"]) and np.array_equal(f.points[:, 1], raw["x"])
    assert np.array_equal(f.points[:, 2], raw["z"])


@pytest.mark.real_data
def test_sequence_gt_boxes_contain_points(seq):
    log = open_sustech_sequence(str(seq))
    for i in range(len(log)):
        f = log.load_frame(i, with_images=False)
        n = count_points_in_boxes(f.points[:, :3], f.gt_boxes)
        dist = np.hypot(f.gt_boxes[:, 0], f.gt_boxes[:, 1])
        assert (n > 0).all(), n
        assert (n[dist < 20] >= 50).all(), (n, dist)


@pytest.mark.real_data
def test_sequence_gt_boxes_project_into_images(seq):
    """Boxes in a camera's field of view project inside its image, mostly untruncated; the front camera sees
    several boxes ahead of the car."""
    log = open_sustech_sequence(str(seq))
    for i in (1, 2, 3):
        f = log.load_frame(i, with_images=False)
        for name, cam in f.cameras.items():
            uv, depth = project_points(cam, f.gt_boxes[:, :3])
            ahead = (depth > 2) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width)
            assert ((uv[ahead, 1] >= 0) & (uv[ahead, 1] < cam.height)).all(), (name, uv[ahead])
            _, visible, trunc, _ = boxes_to_2d(cam, f.gt_boxes[ahead])
            assert visible.all() and (trunc < 0.5).mean() >= 0.75, (name, trunc)
            if name == "front":
                assert ahead.sum() >= 7


@pytest.mark.real_data
def test_sequence_truncated_point_file_names_file_and_frame(seq_copy):
    bad = seq_copy / "lidar" / "000970.pcd"
    bad.write_bytes(bad.read_bytes()[: 1_000_000])
    log = open_sustech_sequence(str(seq_copy))
    np.testing.assert_allclose(log.timestamps_ns / 1e9, README_TIMES_S, atol=0.01)  # the head is still readable
    with pytest.raises(InputError) as e:
        log.load_frame(2)
    assert e.value.what == "truncated_point_file" and e.value.file.endswith("lidar/000970.pcd")
    assert e.value.frame == int(log.timestamps_ns[2])
    log.load_frame(3)


@pytest.mark.real_data
def test_sequence_lying_header_fails_its_frame(seq_copy):
    p = seq_copy / "lidar" / "000965.pcd"
    p.write_bytes(p.read_bytes().replace(b" timestamp ", b" time ", 1))
    log = open_sustech_sequence(str(seq_copy))
    # one file without a usable timestamp field -> every frame falls back to its name (10 Hz frame numbers)
    assert log.timestamps_ns.tolist() == [95_000_000_000, 96_500_000_000, 97_000_000_000, 97_500_000_000]
    with pytest.raises(InputError) as e:
        log.load_frame(1)
    assert e.value.what == "untrusted_pcd_layout" and e.value.file.endswith("000965.pcd") and e.value.frame == 96_500_000_000
    ok = open_sustech_sequence(str(seq_copy), layout="sustechpoints")
    assert len(ok.load_frame(1, with_images=False).points) == 66781


@pytest.mark.real_data
def test_sequence_corrupt_image_and_missing_calibration(seq_copy):
    (seq_copy / "camera" / "left" / "000975.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    log = open_sustech_sequence(str(seq_copy))
    with pytest.raises(InputError) as e:
        log.load_frame(3)
    assert e.value.what == "corrupt_image" and e.value.file.endswith("camera/left/000975.jpg")
    assert e.value.frame == int(log.timestamps_ns[3])
    log.load_frame(2)
    (seq_copy / "calib" / "camera" / "right.json").unlink()
    with pytest.raises(InputError) as e:
        open_sustech_sequence(str(seq_copy))
    assert e.value.what == "missing_calibration" and e.value.file.endswith("calib/camera/right.json")


@pytest.mark.real_data
def test_sequence_flat_and_nested_calibration_agree(seq_copy):
    import json

    p = seq_copy / "calib" / "camera" / "front.json"
    d = json.loads(p.read_text())
    want = open_sustech_sequence(str(seq_copy)).cameras["front"]
    nested = {"extrinsic": np.reshape(d["extrinsic"], (4, 4)).tolist(), "intrinsic": np.reshape(d["intrinsic"], (3, 3)).tolist()}
    p.write_text(json.dumps(nested))
    got = open_sustech_sequence(str(seq_copy)).cameras["front"]
    np.testing.assert_array_equal(got.K, want.K)
    np.testing.assert_array_equal(got.cam_from_lidar, want.cam_from_lidar)
    p.write_text(json.dumps({"extrinsic": d["extrinsic"][:12], "intrinsic": d["intrinsic"]}))
    with pytest.raises(InputError) as e:
        open_sustech_sequence(str(seq_copy))
    assert e.value.what == "bad_calibration" and "extrinsic" in e.value.detail


@pytest.mark.real_data
def test_sequence_on_memory_url(seq):
    fs = fsspec.filesystem("memory")
    for p in seq.rglob("*"):
        if p.is_file() and "camera" not in p.relative_to(seq).parts[:1]:
            fs.pipe(f"/seq_mem/seq/{p.relative_to(seq).as_posix()}", p.read_bytes())
    try:
        log = open_sustech_sequence("memory://seq_mem/seq")  # calibration but no camera images
        assert log.cameras == {} and log.turn == 1
        ref = open_sustech_sequence(str(seq))
        np.testing.assert_array_equal(log.timestamps_ns, ref.timestamps_ns)
        a, b = log.load_frame(3), ref.load_frame(3, with_images=False)
        assert np.array_equal(a.points, b.points) and np.array_equal(a.gt_boxes, b.gt_boxes) and a.images == {}
    finally:
        fs.rm("/seq_mem", recursive=True)
