"""The mmdetection3d backend on real frames (nuScenes keyframe, KITTI), random-initialised models, no mocks.

Skipped when mmdet3d is not installed (``bash .ci/install-mmdet3d``); tests on real data are marked ``real_data``
and skip without ``<repo>/../shared/data/real``.

* Box conversion proof: GT boxes go through mmdet3d's own ``LiDARInstance3DBoxes`` (bottom-centre) and back through
  :func:`mmdet3d_to_boxes`; mmcv's ``points_in_boxes_cpu`` on mmdet3d's boxes and our ``count_points_in_boxes`` on
  the converted ones count the same points, box by box. Against nuScenes' ``num_lidar_pts``: 61/69 exact, the rest
  within 10 % (nuScenes counts in the annotation box, which carries the ego roll/pitch that the yaw-only LiDAR-frame
  box of the info file drops; see tests/geometry/test_projection_nuscenes.py); forgetting the +h/2 shift would
  break most of them (checked as a negative control).
* PointPillars (KITTI 3-class) and CenterPoint pillar (nuScenes) run through ``MMDet3DDetector.predict``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from labeler.classes import CLASSES
from labeler.errors import ModelError
from labeler.geometry.boxes import count_points_in_boxes, wrap_angle
from labeler.logs.frame import Frame
from labeler.models.base import Detections, Detector
from labeler.models.mmdet3d_backend import (
    DEFAULT_CLASS_MAP,
    _label_map,
    boxes_to_mmdet3d,
    mmdet3d_available,
    mmdet3d_to_boxes,
)
from tests.realdata import load_nuscenes_keyframe, require_real_data

if not mmdet3d_available():
    pytest.skip("mmdet3d / mmcv.ops not importable: install them with `bash .ci/install-mmdet3d`", allow_module_level=True)

import torch  # noqa: E402
from mmcv.ops import points_in_boxes_cpu  # noqa: E402
from mmdet3d.structures import Box3DMode, CameraInstance3DBoxes, LiDARInstance3DBoxes  # noqa: E402

from labeler.models.checkpoints import load_checkpoint  # noqa: E402
from labeler.models.mmdet3d_backend import MMDet3DDetector, create, resolve_config  # noqa: E402

PP_KITTI = "pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class"
CP_NUS = "centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d"
KITTI_IDS = ("000000", "000001", "000002")


# ---- real frames, built here straight from the files ----------------------------------------------------------


def _kitti_calib(path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = np.array([float(x) for x in v.split()])
    return out


def _rect_from_velo(calib) -> np.ndarray:
    R0 = np.eye(4)
    R0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    Tr = np.eye(4)
    Tr[:3, :] = calib["Tr_velo_to_cam"].reshape(3, 4)
    return R0 @ Tr


def kitti_sample(i: str):
    """(Frame, GT boxes in camera layout [x, y, z, l, h, w, ry] (rectified cam0, bottom centre), GT names, calib)."""
    d = require_real_data("kitti_object", "training")
    pts = np.fromfile(d / "velodyne" / f"{i}.bin", dtype=np.float32).reshape(-1, 4)
    calib = _kitti_calib(d / "calib" / f"{i}.txt")
    cam, names = [], []
    for line in (d / "label_2" / f"{i}.txt").read_text().splitlines():
        f = line.split()
        if not f or f[0] == "DontCare":
            continue
        h, w, l, x, y, z, ry = map(float, f[8:15])
        cam.append([x, y, z, l, h, w, ry])
        names.append(f[0])
    frame = Frame(log_id="kitti", timestamp_ns=int(i) * 100_000_000, frame_index=int(i), points=pts,
                  lidar_file=str(d / "velodyne" / f"{i}.bin"), world_from_ego=np.eye(4))
    return frame, np.array(cam).reshape(-1, 7), names, calib


def kitti_gt_lidar(cam_boxes: np.ndarray, calib) -> np.ndarray:
    """KITTI label boxes -> our LiDAR boxes, by the data README: bottom = inv(R0 Tr) [x y z 1], yaw = -ry - pi/2."""
    inv = np.linalg.inv(_rect_from_velo(calib))
    bottom = (np.c_[cam_boxes[:, :3], np.ones(len(cam_boxes))] @ inv.T)[:, :3]
    l, h, w, ry = cam_boxes[:, 3], cam_boxes[:, 4], cam_boxes[:, 5], cam_boxes[:, 6]
    return np.c_[bottom[:, 0], bottom[:, 1], bottom[:, 2] + h / 2, l, w, h, wrap_angle(-ry - np.pi / 2)]


def nuscenes_frame():
    kf = load_nuscenes_keyframe()
    pts = np.c_[kf.points[:, :3], kf.points[:, 3] / 255.0].astype(np.float32)  # our intensity is 0-1
    frame = Frame(log_id="nuscenes", timestamp_ns=int(kf.info["timestamp"] * 1e9), frame_index=0, points=pts,
                  lidar_file=str(kf.dir / kf.info["lidar_points"]["lidar_path"]), world_from_ego=np.eye(4))
    return frame, kf


def mmcv_counts(points_xyz: np.ndarray, mm_boxes: LiDARInstance3DBoxes) -> np.ndarray:
    """Points inside each box by mmcv's CPU op (boxes bottom-centre, as mmdet3d keeps them)."""
    pts = torch.from_numpy(np.ascontiguousarray(points_xyz[:, :3], dtype=np.float32))[None]
    mask = points_in_boxes_cpu(pts, mm_boxes.tensor[:, :7].float()[None].contiguous())
    return mask[0].sum(0).numpy().astype(np.int64)


# ---- (a) box conversion ----------------------------------------------------------------------------------------


def test_conversion_helpers_are_inverse():
    rng = np.random.default_rng(0)
    b = np.c_[rng.uniform(-50, 50, (20, 3)), rng.uniform(0.3, 10, (20, 3)), rng.uniform(-np.pi, np.pi, 20)]
    mm = boxes_to_mmdet3d(b)
    np.testing.assert_allclose(mm[:, 2], b[:, 2] - b[:, 5] / 2)
    np.testing.assert_allclose(mmdet3d_to_boxes(mm), b, atol=1e-12)
    # extra columns (velocity) are dropped, yaw is wrapped
    mm9 = np.c_[mm, rng.normal(size=(20, 2))]
    mm9[:, 6] += 2 * np.pi
    np.testing.assert_allclose(mmdet3d_to_boxes(mm9), b, atol=1e-9)
    assert mmdet3d_to_boxes(np.zeros((0, 9))).shape == (0, 7)


@pytest.mark.real_data
def test_nuscenes_gt_through_mmdet3d_boxes():
    frame, kf = nuscenes_frame()
    # (mmdet3d keeps boxes as float32: compare to 1e-5)
    mm = LiDARInstance3DBoxes(torch.tensor(kf.boxes), origin=(0.5, 0.5, 0.5))
    # mmdet3d stores the bottom centre; its gravity centre is the file's z
    np.testing.assert_allclose(mm.tensor[:, 2].numpy(), kf.boxes[:, 2] - kf.boxes[:, 5] / 2, atol=1e-5)
    np.testing.assert_allclose(mm.gravity_center.numpy(), kf.boxes[:, :3], atol=1e-5)
    ours = mmdet3d_to_boxes(mm.tensor)
    np.testing.assert_allclose(ours[:, :6], kf.boxes[:, :6], atol=1e-5)
    np.testing.assert_allclose(wrap_angle(ours[:, 6] - kf.boxes[:, 6]), 0, atol=1e-6)

    counts_mmcv = mmcv_counts(kf.points, mm)
    counts_ours = count_points_in_boxes(frame.points[:, :3], ours)
    np.testing.assert_array_equal(counts_ours, counts_mmcv)  # same points, box by box
    n = kf.num_lidar_pts
    exact = counts_ours == n
    assert exact.sum() >= 61, f"only {exact.sum()}/69 boxes reproduce num_lidar_pts"
    assert np.all(np.abs(counts_ours - n) <= np.maximum(2, 0.1 * n)), list(zip(counts_ours[~exact], n[~exact]))
    assert counts_ours.sum() > 900

    # negative control: taking mmdet3d's bottom z as our centre loses most boxes' points
    wrong = ours.copy()
    wrong[:, 2] -= wrong[:, 5] / 2
    assert (count_points_in_boxes(frame.points[:, :3], wrong) == n).sum() < 40


@pytest.mark.real_data
@pytest.mark.parametrize("i", KITTI_IDS)
def test_kitti_gt_through_mmdet3d_boxes(i):
    frame, cam, names, calib = kitti_sample(i)
    ours_readme = kitti_gt_lidar(cam, calib)
    # mmdet3d's own camera -> LiDAR conversion of the label (its KITTI converter: [x, y, z, l, h, w, ry])
    mm = CameraInstance3DBoxes(torch.tensor(cam, dtype=torch.float32)).convert_to(
        Box3DMode.LIDAR, torch.tensor(np.linalg.inv(_rect_from_velo(calib)), dtype=torch.float32)
    )
    assert isinstance(mm, LiDARInstance3DBoxes)
    ours = mmdet3d_to_boxes(mm.tensor)
    np.testing.assert_allclose(ours[:, :6], ours_readme[:, :6], atol=1e-4)
    np.testing.assert_allclose(wrap_angle(ours[:, 6] - ours_readme[:, 6]), 0, atol=1e-5)

    counts_mmcv = mmcv_counts(frame.points, mm)
    counts_ours = count_points_in_boxes(frame.points[:, :3], ours)
    np.testing.assert_array_equal(counts_ours, counts_mmcv)
    for name, c, b in zip(names, counts_ours, ours):
        if name in ("Car", "Truck", "Van") and np.hypot(b[0], b[1]) < 40:
            assert c >= 20, f"{name} at {b[:2]} holds only {c} points"


# ---- (b) detectors on real frames ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pointpillars():
    return MMDet3DDetector(PP_KITTI, cfg_options={"model.test_cfg.score_thr": 0.0}, score_threshold=0.0)


@pytest.fixture(scope="module")
def centerpoint():
    return MMDet3DDetector(CP_NUS, cfg_options={"model.test_cfg.pts.score_threshold": 0.0}, score_threshold=0.0)


def check_detections(det, d: Detections, frame: Frame):
    assert isinstance(d, Detections)
    n = len(d)
    assert d.boxes.shape == (n, 7) and d.boxes.dtype == np.float64
    assert d.scores.shape == (n,) and d.scores.dtype == np.float64
    assert d.num_points.shape == (n,) and d.num_points.dtype == np.int64
    assert d.categories.shape == (n,) and d.categories.dtype == object
    assert np.isfinite(d.boxes).all()
    assert set(d.categories) <= set(det.classes) <= set(CLASSES)
    assert np.all((d.scores >= 0) & (d.scores <= 1)) and np.all(np.diff(d.scores) <= 0)
    assert np.all(d.boxes[:, 3:6] > 0)
    assert np.all((d.boxes[:, 6] >= -np.pi) & (d.boxes[:, 6] < np.pi))
    np.testing.assert_array_equal(d.num_points, count_points_in_boxes(frame.points[:, :3], d.boxes))


def test_resolve_config_names_and_paths(tmp_path):
    p = resolve_config(PP_KITTI)
    assert p.name == PP_KITTI + ".py" and p.is_file() and ".mim" in p.parts
    assert resolve_config(f"pointpillars/{PP_KITTI}.py") == p
    assert resolve_config(str(p)) == p.resolve()
    with pytest.raises(ModelError, match="closest shipped configs: .*pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class"):
        resolve_config("pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3clas")


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelError, match="device 'cuda' requested but CUDA is not available"):
        MMDet3DDetector(PP_KITTI, device="cuda")


def test_class_map():
    kitti = _label_map(("Pedestrian", "Cyclist", "Car"), None)
    assert kitti == ["pedestrian", "cyclist", "car"]
    nus = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
           "pedestrian", "traffic_cone")
    assert _label_map(nus, None) == ["car", "truck", None, "bus", None, None, "cyclist", "cyclist", "pedestrian",
                                     "traffic_cone"]
    assert _label_map(nus, {"trailer": "truck", "car": None})[:5] == [None, "truck", None, "bus", "truck"]
    assert set(v for v in DEFAULT_CLASS_MAP.values() if v) <= set(CLASSES)
    with pytest.raises(ModelError, match="'barrier' -> 'barrier': not a labeler class"):
        _label_map(nus, {"barrier": "barrier"})


@pytest.mark.real_data
def test_pointpillars_kitti_random_init(pointpillars):
    det = pointpillars
    assert isinstance(det, Detector)
    assert det.name == f"mmdet3d:{PP_KITTI}"
    assert det.version.startswith(f"mmdet3d-1.4.0:{PP_KITTI}:random-init:cfg-")
    assert det.classes == ("car", "pedestrian", "cyclist")
    assert det.model_classes == ("Pedestrian", "Cyclist", "Car")
    assert (det.load_dim, det.use_dim, det.intensity_scale) == (4, [0, 1, 2, 3], 1.0)

    frames = [kitti_sample(i)[0] for i in KITTI_IDS]
    np.testing.assert_array_equal(det.model_points(frames[0].points), frames[0].points)  # reflectance 0-1 as is
    dets = det.predict(frames)
    assert len(dets) == 3
    for d, f in zip(dets, frames):
        check_detections(det, d, f)
        assert 0 < len(d) <= 50  # score_thr 0: decoding + NMS ran (max_num 50)
        # inside the config's point_cloud_range [0, -39.68, -3, 69.12, 39.68, 1] (centres, with some slack)
        assert np.all(d.boxes[:, 0] > -5) and np.all(d.boxes[:, 0] < 75) and np.all(np.abs(d.boxes[:, 1]) < 45)
    # batched and single calls agree; random init is seeded (same weights every build)
    single = det.predict(frames[1:2])[0]
    np.testing.assert_allclose(single.boxes, dets[1].boxes, atol=1e-4)
    np.testing.assert_array_equal(single.categories, dets[1].categories)


@pytest.mark.real_data
def test_pointpillars_speed_on_cpu(pointpillars, record_property):
    frame = kitti_sample("000001")[0]
    pointpillars.predict([frame])  # warm
    t0 = time.perf_counter()
    runs = 3
    for _ in range(runs):
        pointpillars.predict([frame])
    s = (time.perf_counter() - t0) / runs
    record_property("pointpillars_s_per_frame", round(s, 3))
    print(f"\nPointPillars KITTI 3-class, random init, {len(frame.points)} points, {torch.get_num_threads()} "
          f"torch threads: {s:.2f} s/frame")
    assert s < 60


@pytest.mark.real_data
def test_default_threshold_and_empty_frames():
    det = MMDet3DDetector(PP_KITTI)  # config's score_thr 0.1 and ours: random weights score ~0.01
    assert det.version != MMDet3DDetector(PP_KITTI, score_threshold=0.2).version  # settings are in the version
    frame = kitti_sample("000000")[0]
    d = det.predict([frame])[0]
    check_detections(det, d, frame)
    assert len(d) == 0
    empty = Frame("x", 0, 0, np.zeros((0, 4), np.float32), "none", np.eye(4))
    behind = Frame("x", 1, 1, frame.points[frame.points[:, 0] < -1], "behind", np.eye(4))  # outside x in [0, 69]
    assert len(behind.points) > 1000
    out = det.predict([empty, frame, behind])
    assert [len(x) for x in out] == [0, 0, 0] and all(isinstance(x, Detections) for x in out)


@pytest.mark.real_data
def test_centerpoint_nuscenes_random_init(centerpoint):
    det = centerpoint
    frame, kf = nuscenes_frame()
    assert det.name == f"mmdet3d:{CP_NUS}"
    assert det.classes == CLASSES
    assert (det.load_dim, det.use_dim, det.intensity_scale) == (5, [0, 1, 2, 3, 4], 255.0)
    mp = det.model_points(frame.points)
    assert mp.shape == (len(frame.points), 5) and mp.dtype == np.float32
    np.testing.assert_allclose(mp[:, 3], kf.points[:, 3], atol=1e-3)  # back to the file's 0-255 intensity
    assert np.all(mp[:, 4] == 0)  # time lag of the key frame

    d = det.predict([frame])[0]
    check_detections(det, d, frame)
    assert len(d) > 0
    assert not set(d.categories) & {"barrier", "trailer", "construction_vehicle"}
    assert np.all(np.abs(d.boxes[:, :2]) <= 61.2 + 1e-3)  # post_center_limit_range


@pytest.mark.real_data
def test_checkpoint_loading_through_the_backend(pointpillars, tmp_path):
    """A checkpoint saved from the model in OpenMMLab's layout (numpy scalars in meta): refused unless trusted;
    trusted, it gives the same predictions as the weights it came from. Another architecture is refused."""
    frame = kitti_sample("000001")[0]
    meta = {"epoch": 160, "iter": np.int64(74240), "dataset_meta": {"classes": ["Pedestrian", "Cyclist", "Car"]}}
    ckpt = tmp_path / "pointpillars_epoch_160.pth"
    torch.save({"meta": meta, "state_dict": pointpillars.model.state_dict()}, ckpt)
    opts = {"model.test_cfg.score_thr": 0.0}
    with pytest.raises(ModelError, match=r"pointpillars_epoch_160\.pth: weights-only loading refused.*--trusted-checkpoint"):
        MMDet3DDetector(PP_KITTI, checkpoint=str(ckpt), cfg_options=opts, score_threshold=0.0)
    det = create(f"mmdet3d:{PP_KITTI}", checkpoint=str(ckpt), trusted=True, cfg_options=opts, score_threshold=0.0)
    assert ":ckpt-" in det.version and "random-init" not in det.version
    a, b = det.predict([frame])[0], pointpillars.predict([frame])[0]
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-5)
    np.testing.assert_array_equal(a.categories, b.categories)

    # weights-only file of another architecture (CenterPoint's pillar encoder keys do not fit PointPillars)
    other = tmp_path / "centerpoint_weights.pth"
    cp = MMDet3DDetector(CP_NUS)
    torch.save({"state_dict": cp.model.state_dict()}, other)
    assert load_checkpoint(other)  # loads fine weights-only...
    with pytest.raises(ModelError, match=r"centerpoint_weights\.pth: the weights do not fit the model architecture"):
        MMDet3DDetector(PP_KITTI, checkpoint=str(other))  # ...but does not fit
