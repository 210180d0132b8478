"""Native log format: round trip and clear errors for malformed inputs (file and frame named)."""

import json

import numpy as np
import pytest

from labeler.errors import InputError
from labeler.geometry.camera import CameraCalib
from labeler.geometry.transforms import pose_from_xyz_yaw
from labeler.logs.native import NativeLogWriter, find_native_logs, load_frame, read_log_index


def make_log(root, log_id="log-a", n=5, seed=0):
    rng = np.random.default_rng(seed)
    K = np.array([[300.0, 0, 160], [0, 300.0, 90], [0, 0, 1]])
    cam_from_lidar = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    cams = {"front": CameraCalib("front", K, cam_from_lidar, 320, 180)}
    w = NativeLogWriter(str(root), log_id, cams, ego_from_lidar=pose_from_xyz_yaw(0, 0, 1.8, 0))
    for i in range(n):
        ts = 1_000_000_000 + i * 100_000_000
        pts = rng.normal(size=(1000, 4)).astype(np.float32)
        img = rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)
        w.add_frame(ts, pts, pose_from_xyz_yaw(i * 1.0, 0.5 * i, 0, 0.1 * i), {"front": img}, {"front": ts + 3_000_000})
        w.add_annotations(ts, np.array([[5.0, 1, -1, 4.5, 1.8, 1.6, 0.3]]), ["car"], ["t1"], [12])
    w.add_corner_case(1_000_000_000, "camera_black", detail="front")
    return w.close()


def test_round_trip(tmp_path):
    path = make_log(tmp_path)
    assert find_native_logs(str(tmp_path)) == [path]
    idx = read_log_index(path)
    assert len(idx) == 5 and idx.log_id == "log-a"
    f = load_frame(idx, 3)
    assert f.points.shape == (1000, 4) and f.points.dtype == np.float32
    assert f.images["front"].shape == (180, 320, 3)
    assert f.camera_timestamps_ns["front"] - f.timestamp_ns == 3_000_000
    np.testing.assert_allclose(f.world_from_ego, pose_from_xyz_yaw(3.0, 1.5, 0, 0.3), atol=1e-12)
    np.testing.assert_allclose(f.gt_boxes, [[5.0, 1, -1, 4.5, 1.8, 1.6, 0.3]])
    assert list(f.gt_track_ids) == ["t1"] and f.key == f"log-a/{f.timestamp_ns}"
    assert idx.corner_cases.num_rows == 1


def test_truncated_point_file_names_file_and_frame(tmp_path):
    path = make_log(tmp_path)
    idx = read_log_index(path)
    bad = tmp_path / "log-a" / idx.lidar_files[2]
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(InputError) as e:
        load_frame(idx, 2)
    assert e.value.what == "truncated_point_file"
    assert e.value.frame == int(idx.timestamps_ns[2]) and str(bad) in e.value.file
    load_frame(idx, 1)  # neighbours still load


def test_corrupt_image_and_missing_file(tmp_path):
    path = make_log(tmp_path)
    idx = read_log_index(path)
    (tmp_path / "log-a" / idx.camera_files["front"][1]).write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(InputError, match="corrupt_image"):
        load_frame(idx, 1)
    (tmp_path / "log-a" / idx.lidar_files[4]).unlink()
    with pytest.raises(InputError, match="missing_point_file"):
        load_frame(idx, 4)


def test_unreadable_log_metadata(tmp_path):
    path = make_log(tmp_path)
    (tmp_path / "log-a" / "calibration.json").write_text("{not json")
    with pytest.raises(InputError, match="corrupt_json"):
        read_log_index(path)
    (tmp_path / "log-a" / "calibration.json").write_text(json.dumps({"cameras": {"front": {"K": [[1]]}}}))
    with pytest.raises(InputError, match="bad_calibration"):
        read_log_index(path)
    (tmp_path / "log-a" / "frames.parquet").unlink()
    (tmp_path / "log-a" / "calibration.json").write_text(json.dumps({"cameras": {}}))
    with pytest.raises(InputError, match="frames.parquet"):
        read_log_index(path)
