"""nuScenes info-file reader on the real keyframe (../shared/data/real/nuscenes_keyframe)."""

import json
import pickle
import shutil

import numpy as np
import pytest

from labeler.errors import InputError
from labeler.geometry.boxes import count_points_in_boxes, wrap_angle
from labeler.geometry.camera import boxes_to_2d, project_points
from labeler.logs.base import LogSource
from labeler.logs.nuscenes import open_nuscenes_log
from tests.realdata import require_real_data

pytestmark = pytest.mark.real_data
INFO = "n015-2018-07-24-11-22-45+0800.info.json"
PKL = "n015-2018-07-24-11-22-45+0800.pkl"
LIDAR = "n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"


@pytest.fixture()
def nus():
    return require_real_data("nuscenes_keyframe")


@pytest.fixture()
def nus_copy(nus, tmp_path):
    dst = tmp_path / "nus"
    shutil.copytree(nus, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644)
    return dst


def _info(folder):
    return json.loads((folder / INFO).read_text())["data_list"][0]


def test_reads_keyframe(nus):
    log = open_nuscenes_log(str(nus))
    assert isinstance(log, LogSource) and log.format == "nuscenes"
    assert log.log_id == "n015-2018-07-24-11-22-45+0800" and len(log) == 1
    assert log.timestamps_ns.tolist() == [1532402927647951000]
    f = log.load_frame(0)
    assert f.points.shape == (34688, 4) and f.points.dtype == np.float32
    assert 0 <= f.points[:, 3].min() and f.points[:, 3].max() == 1.0  # 0-255 scaled
    assert sorted(f.images) == sorted(log.cameras) and len(f.images) == 6
    assert all(im.shape == (900, 1600, 3) for im in f.images.values())
    assert f.camera_timestamps_ns["CAM_FRONT"] == 1532402927612460000
    cats, counts = np.unique(f.gt_categories, return_counts=True)
    assert dict(zip(cats, counts)) == {"pedestrian": 30, "barrier": 22, "car": 8, "traffic_cone": 3, "truck": 2, "bicycle": 1,
                                       "bus": 1, "construction_vehicle": 1, "ignore": 1}
    # world pose and LiDAR mounting: LiDAR frame is x forward (turned from LIDAR_TOP's y forward)
    np.testing.assert_allclose(f.world_from_ego, _info(nus)["ego2global"])
    assert f.ego_from_lidar[0, 0] > 0.99 and f.ego_from_lidar[1, 1] > 0.99 and abs(f.ego_from_lidar[2, 3] - 1.84) < 0.01


def test_points_are_the_file_turned_exactly(nus):
    raw = np.fromfile(nus / LIDAR, dtype=np.float32).reshape(-1, 5)
    f = open_nuscenes_log(str(nus)).load_frame(0)
    assert np.array_equal(f.points[:, 0], raw[:, 1]) and np.array_equal(f.points[:, 1], -raw[:, 0])
    assert np.array_equal(f.points[:, 2], raw[:, 2]) and np.array_equal(f.points[:, 3], raw[:, 3] / np.float32(255))


def _level_frame(f):
    """level_from_lidar: the LiDAR frame rotated so z is the world's vertical (heading kept)."""
    R = (f.world_from_ego @ f.ego_from_lidar)[:3, :3]
    yaw = np.arctan2(R[1, 0], R[0, 0])
    c, s = np.cos(-yaw), np.sin(-yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ R


def test_points_in_gt_boxes_match_num_lidar_pts(nus):
    """Counts reproduce the file's num_lidar_pts exactly in a gravity-levelled frame; the yaw-only LiDAR-frame boxes
    (which drop the ~2 deg LiDAR tilt) agree exactly for most boxes and within a few face points for the rest."""
    f = open_nuscenes_log(str(nus)).load_frame(0)
    want = np.array([x["num_lidar_pts"] for x in _info(nus)["instances"]])
    R = _level_frame(f)
    tilt = np.degrees(np.arccos(R[2, 2]))
    assert 1.0 < tilt < 3.0
    pts = f.points[:, :3].astype(np.float64) @ R.T
    boxes = f.gt_boxes.copy()
    boxes[:, :3] = boxes[:, :3] @ R.T
    heading = np.stack([np.cos(f.gt_boxes[:, 6]), np.sin(f.gt_boxes[:, 6]), np.zeros(len(boxes))], axis=1) @ R.T
    boxes[:, 6] = wrap_angle(np.arctan2(heading[:, 1], heading[:, 0]))
    np.testing.assert_array_equal(count_points_in_boxes(pts, boxes), want)

    got = count_points_in_boxes(f.points[:, :3], f.gt_boxes)
    assert (got == want).sum() >= 60
    assert (np.abs(got - want) <= np.maximum(5, 0.04 * want)).all(), np.c_[got, want][got != want]


def test_gt_boxes_project_onto_cam_front(nus):
    """Boxes project where mmdet3d's own cam_instances 2D boxes are (CAM_FRONT), inside the image."""
    log = open_nuscenes_log(str(nus))
    f = log.load_frame(0)
    cam = f.cameras["CAM_FRONT"]
    uv, depth = project_points(cam, f.gt_boxes[:, :3])
    front = (depth > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    theirs = np.array([c["bbox"] for c in _info(nus)["cam_instances"]["CAM_FRONT"]])
    assert front.sum() == len(theirs) == 47
    ours, visible, trunc, _ = boxes_to_2d(cam, f.gt_boxes[front])
    assert visible.all() and np.median(trunc) == 0.0
    best = []
    for t in theirs:  # every labelled 2D box has one of ours on top of it
        ix = np.clip(np.minimum(ours[:, 2], t[2]) - np.maximum(ours[:, 0], t[0]), 0, None)
        iy = np.clip(np.minimum(ours[:, 3], t[3]) - np.maximum(ours[:, 1], t[1]), 0, None)
        inter = ix * iy
        best.append((inter / ((ours[:, 2] - ours[:, 0]) * (ours[:, 3] - ours[:, 1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter)).max())
    # 46 of 47 agree to IoU > 0.9; one box cut by the right image edge differs (mmdet3d drops corners behind the
    # camera, we clip edges at the near plane) but still overlaps
    assert (np.array(best) > 0.9).sum() >= 46 and min(best) > 0.3, best


def test_pkl_reads_like_json(nus):
    a = open_nuscenes_log(str(nus / PKL)).load_frame(0)
    b = open_nuscenes_log(str(nus / INFO)).load_frame(0)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.gt_boxes, b.gt_boxes)
    assert list(a.gt_categories) == list(b.gt_categories)
    for c in b.cameras:
        np.testing.assert_array_equal(a.cameras[c].cam_from_lidar, b.cameras[c].cam_from_lidar)


def test_truncated_points(nus_copy):
    (nus_copy / LIDAR).write_bytes((nus_copy / LIDAR).read_bytes()[:-6])
    with pytest.raises(InputError) as e:
        open_nuscenes_log(str(nus_copy)).load_frame(0)
    assert e.value.what == "truncated_point_file" and e.value.file.endswith(LIDAR) and e.value.frame == 1532402927647951000


def test_corrupt_image(nus_copy):
    img = next(nus_copy.glob("*CAM_BACK__*.jpg"))
    img.write_bytes(img.read_bytes()[:200])
    log = open_nuscenes_log(str(nus_copy))
    with pytest.raises(InputError) as e:
        log.load_frame(0)
    assert e.value.what == "corrupt_image" and e.value.file.endswith(img.name) and e.value.frame == 1532402927647951000
    assert len(log.load_frame(0, with_images=False).points) == 34688


def test_missing_calibration(nus_copy):
    d = json.loads((nus_copy / INFO).read_text())
    del d["data_list"][0]["images"]["CAM_FRONT"]["lidar2cam"]
    (nus_copy / INFO).write_text(json.dumps(d))
    with pytest.raises(InputError) as e:
        open_nuscenes_log(str(nus_copy / INFO))
    assert e.value.what == "missing_calibration" and "CAM_FRONT.lidar2cam" in e.value.detail and e.value.file.endswith(INFO)


def test_corrupt_or_unsafe_info(nus_copy):
    (nus_copy / INFO).write_text('{"data_list": [')
    with pytest.raises(InputError) as e:
        open_nuscenes_log(str(nus_copy / INFO))
    assert e.value.what == "corrupt_info"
    evil = nus_copy / "evil.pkl"
    evil.write_bytes(pickle.dumps({"data_list": [], "x": shutil.rmtree}))
    with pytest.raises(InputError) as e:
        open_nuscenes_log(str(evil))
    assert e.value.what == "corrupt_info" and "refusing" in e.value.detail
