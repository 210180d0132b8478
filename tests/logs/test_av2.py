"""Argoverse 2 sensor-log reader on the real sample (../shared/data/real/av2_sensor_log)."""

import io
import shutil

import fsspec
import numpy as np
import pyarrow.feather as feather
import pytest
from PIL import Image

from labeler.errors import InputError
from labeler.geometry.boxes import count_points_in_boxes
from labeler.geometry.camera import project_points
from labeler.logs.av2 import open_av2_log
from labeler.logs.base import LogSource
from tests.realdata import require_real_data

pytestmark = pytest.mark.real_data
LOG_ID = "7fab2350-7eaf-3b7e-a39d-6937a4c1bede"
SWEEPS = [315966265259836000, 315966265360032000]


@pytest.fixture()
def av2():
    return require_real_data("av2_sensor_log", LOG_ID)


@pytest.fixture()
def av2_copy(av2, tmp_path):
    dst = tmp_path / LOG_ID
    shutil.copytree(av2, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def test_reads_log(av2):
    log = open_av2_log(str(av2))
    assert isinstance(log, LogSource) and log.format == "av2" and log.log_id == LOG_ID
    assert log.timestamps_ns.tolist() == SWEEPS
    np.testing.assert_array_equal(log.ego_from_lidar, np.eye(4))  # AV2: LiDAR frame = ego frame
    assert len(log.cameras) == 9 and (log.cameras["ring_front_center"].width, log.cameras["ring_front_center"].height) == (1550, 2048)
    f = log.load_frame(0)
    raw = feather.read_table(av2 / "sensors" / "lidar" / f"{SWEEPS[0]}.feather")
    assert f.points.shape == (raw.num_rows, 4) == (99229, 4) and f.points.dtype == np.float32
    np.testing.assert_array_equal(f.points[:, 0], raw.column("x").to_numpy().astype(np.float32))  # float16 widened exactly
    np.testing.assert_array_equal(f.points[:, 3], raw.column("intensity").to_numpy() / np.float32(255))
    assert f.images == {} and f.cameras == log.cameras  # the sample has calibration but no images
    assert len(f.gt_boxes) == 81 and len(set(f.gt_track_ids)) == 81
    assert {"regular_vehicle", "pedestrian", "bicycle", "bollard"} <= set(f.gt_categories)
    # the pose is the city pose at (or nearest to) the sweep time, and moves between the two sweeps
    g = log.load_frame(1)
    assert 0.01 < np.linalg.norm(g.world_from_ego[:3, 3] - f.world_from_ego[:3, 3]) < 3.0


def test_points_in_gt_boxes_match_num_interior_pts(av2):
    """Exact for every box on both sweeps: float16 coordinates widen to float32 without rounding, so no boundary
    point moves and no tolerance is needed."""
    log = open_av2_log(str(av2))
    for i, ts in enumerate(SWEEPS):
        f = log.load_frame(i)
        np.testing.assert_array_equal(count_points_in_boxes(f.points[:, :3], f.gt_boxes), log.num_interior_pts(ts))


def test_camera_calibration_looks_forward(av2):
    log = open_av2_log(str(av2))
    cam = log.cameras["ring_front_center"]
    uv, depth = project_points(cam, np.array([[20.0, 0.0, 1.4], [20.0, 3.0, 1.4]]))
    assert (depth > 18).all()
    assert abs(uv[0, 0] - cam.width / 2) < 60 and uv[1, 0] < uv[0, 0]  # straight ahead ~ centre column, left is left
    uv, depth = project_points(log.cameras["ring_rear_left"], np.array([[-20.0, 10.0, 1.4]]))
    assert depth[0] > 0


def test_images_when_present_and_corrupt_image(av2_copy):
    cam_dir = av2_copy / "sensors" / "cameras" / "ring_front_center"
    cam_dir.mkdir(parents=True)
    buf = io.BytesIO()
    Image.fromarray(np.full((2048, 1550, 3), 90, np.uint8)).save(buf, format="JPEG")
    (cam_dir / f"{SWEEPS[0] + 20_000_000}.jpg").write_bytes(buf.getvalue())
    (cam_dir / f"{SWEEPS[1] + 5_000_000}.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    log = open_av2_log(str(av2_copy))
    f = log.load_frame(0)
    assert f.images["ring_front_center"].shape == (2048, 1550, 3)
    assert f.camera_timestamps_ns == {"ring_front_center": SWEEPS[0] + 20_000_000}
    with pytest.raises(InputError) as e:
        log.load_frame(1)
    assert e.value.what == "corrupt_image" and e.value.frame == SWEEPS[1] and e.value.file.endswith(f"{SWEEPS[1] + 5_000_000}.jpg")


def test_truncated_sweep(av2_copy):
    bad = av2_copy / "sensors" / "lidar" / f"{SWEEPS[1]}.feather"
    bad.write_bytes(bad.read_bytes()[: 5000])
    log = open_av2_log(str(av2_copy))
    with pytest.raises(InputError) as e:
        log.load_frame(1)
    assert e.value.what == "corrupt_point_file" and e.value.file.endswith(f"{SWEEPS[1]}.feather") and e.value.frame == SWEEPS[1]
    log.load_frame(0)


def test_missing_calibration_and_poses(av2_copy):
    (av2_copy / "calibration" / "intrinsics.feather").unlink()
    with pytest.raises(InputError) as e:
        open_av2_log(str(av2_copy))
    assert e.value.what == "missing_calibration" and e.value.file.endswith("calibration/intrinsics.feather")
    (av2_copy / "city_SE3_egovehicle.feather").unlink()
    with pytest.raises(InputError) as e:
        open_av2_log(str(av2_copy))
    assert e.value.what == "wrong_format"


def test_memory_url(av2):
    fs = fsspec.filesystem("memory")
    for p in av2.rglob("*"):
        if p.is_file():
            fs.pipe(f"/av2_mem/{LOG_ID}/{p.relative_to(av2).as_posix()}", p.read_bytes())
    try:
        log = open_av2_log(f"memory://av2_mem/{LOG_ID}")
        f = log.load_frame(1)
        ref = open_av2_log(str(av2)).load_frame(1)
        assert np.array_equal(f.points, ref.points) and np.array_equal(f.gt_boxes, ref.gt_boxes)
        assert log.lidar_file(1) == f"memory://av2_mem/{LOG_ID}/sensors/lidar/{SWEEPS[1]}.feather"
    finally:
        fs.rm("/av2_mem", recursive=True)
