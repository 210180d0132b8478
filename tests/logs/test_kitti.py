"""KITTI object reader on the real samples (../shared/data/real/kitti_object): calibration, GT boxes, errors."""

import shutil

import fsspec
import numpy as np
import pytest

from labeler.errors import InputError
from labeler.geometry.boxes import count_points_in_boxes
from labeler.geometry.camera import boxes_to_2d, project_points
from labeler.logs.base import LogSource
from labeler.logs.kitti import open_kitti_log, parse_calib, rect_from_velo
from tests.realdata import require_real_data

pytestmark = pytest.mark.real_data


@pytest.fixture()
def kitti():
    return require_real_data("kitti_object", "training")


@pytest.fixture()
def kitti_copy(kitti, tmp_path):
    dst = tmp_path / "kitti" / "training"
    shutil.copytree(kitti, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def _label_2d(kitti, sid):
    rows = [ln.split() for ln in (kitti / "label_2" / f"{sid}.txt").read_text().splitlines()]
    return np.array([[float(v) for v in r[4:8]] for r in rows if r and r[0] != "DontCare"])


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_reads_samples(kitti):
    log = open_kitti_log(str(kitti))
    assert isinstance(log, LogSource)
    assert len(log) == 3 and log.format == "kitti" and log.ids == ["000000", "000001", "000002"]
    assert log.timestamps_ns.tolist() == [0, 100_000_000, 200_000_000]  # synthesised: index x 100 ms
    f = log.load_frame(1)
    assert f.points.dtype == np.float32 and f.points.shape[1] == 4 and len(f.points) > 100_000
    assert 0 <= f.points[:, 3].min() and f.points[:, 3].max() <= 1
    assert f.images["image_2"].shape == (375, 1242, 3) and f.images["image_2"].dtype == np.uint8
    assert list(f.gt_categories) == ["truck", "car", "cyclist"]  # DontCare skipped, lower-case
    assert f.gt_track_ids is None and f.gt_boxes.shape == (3, 7)
    assert f.lidar_file.endswith("velodyne/000001.bin") and f.cameras["image_2"].width == 1242
    assert log.load_frame(1, with_images=False).images == {}


def test_camera_matches_p2(kitti):
    """K @ cam_from_lidar reproduces P2 @ R0_rect @ Tr_velo_to_cam (P2's baseline folded into the extrinsic)."""
    log = open_kitti_log(str(kitti))
    for i, sid in enumerate(log.ids):
        calib = parse_calib((kitti / "calib" / f"{sid}.txt").read_text(), "x", None)
        cam = log.load_frame(i, with_images=False).cameras["image_2"]
        want = calib["P2"] @ rect_from_velo(calib)
        np.testing.assert_allclose(cam.K @ cam.cam_from_lidar[:3], want, atol=1e-9)
        np.testing.assert_allclose(cam.cam_from_lidar[:3, :3] @ cam.cam_from_lidar[:3, :3].T, np.eye(3), atol=1e-6)


def test_gt_boxes_project_onto_labelled_2d_boxes(kitti):
    """GT boxes in front of the camera project inside the image and onto label_2's own 2D boxes (IoU > 0.7)."""
    log = open_kitti_log(str(kitti))
    for i, sid in enumerate(log.ids):
        f = log.load_frame(i)
        cam = f.cameras["image_2"]
        uv, depth = project_points(cam, f.gt_boxes[:, :3])
        assert (depth > 2).all()
        assert ((uv >= 0) & (uv < [cam.width, cam.height])).all(), uv
        b2, visible, trunc, _ = boxes_to_2d(cam, f.gt_boxes)
        assert visible.all() and (trunc < 0.2).all()
        for ours, theirs in zip(b2, _label_2d(kitti, sid)):
            assert _iou(ours, theirs) > 0.7, (sid, ours, theirs)


def test_gt_boxes_contain_points(kitti):
    log = open_kitti_log(str(kitti))
    for i in range(len(log)):
        f = log.load_frame(i, with_images=False)
        n = count_points_in_boxes(f.points[:, :3], f.gt_boxes)
        dist = np.hypot(f.gt_boxes[:, 0], f.gt_boxes[:, 1])
        assert (n > 0).all(), n  # the far truck (69 m) still has 71 points
        assert (n[dist < 30] >= 50).all(), (n, dist)


def test_memory_url_reads_like_local(kitti):
    fs = fsspec.filesystem("memory")
    for p in kitti.rglob("*"):
        if p.is_file():
            fs.pipe(f"/kitti_mem/training/{p.relative_to(kitti).as_posix()}", p.read_bytes())
    try:
        mem = open_kitti_log("memory://kitti_mem/training")
        loc = open_kitti_log(str(kitti))
        a, b = mem.load_frame(2), loc.load_frame(2)
        assert (mem.log_id, loc.log_id) == ("kitti_mem-training", "kitti_object-training")
        assert np.array_equal(a.points, b.points) and np.array_equal(a.images["image_2"], b.images["image_2"])
        np.testing.assert_array_equal(a.gt_boxes, b.gt_boxes)
        assert a.lidar_file == "memory://kitti_mem/training/velodyne/000002.bin"
    finally:
        fs.rm("/kitti_mem", recursive=True)


def test_truncated_scan_names_file_and_frame(kitti_copy):
    bad = kitti_copy / "velodyne" / "000001.bin"
    bad.write_bytes(bad.read_bytes()[:-7])
    log = open_kitti_log(str(kitti_copy))
    with pytest.raises(InputError) as e:
        log.load_frame(1)
    assert e.value.what == "truncated_point_file" and e.value.frame == 100_000_000
    assert e.value.file.endswith("velodyne/000001.bin") and "truncated" in e.value.detail
    log.load_frame(0)  # neighbours still load


def test_corrupt_image(kitti_copy):
    (kitti_copy / "image_2" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    log = open_kitti_log(str(kitti_copy))
    with pytest.raises(InputError) as e:
        log.load_frame(2)
    assert e.value.what == "corrupt_image" and e.value.file.endswith("image_2/000002.png") and e.value.frame == 200_000_000
    log.load_frame(1)


def test_missing_and_bad_calibration(kitti_copy):
    (kitti_copy / "calib" / "000001.txt").unlink()
    lines = (kitti_copy / "calib" / "000002.txt").read_text().splitlines()
    lines = [" ".join(ln.split()[:-1]) if ln.startswith("P2:") else ln for ln in lines]  # P2 with 11 numbers
    (kitti_copy / "calib" / "000002.txt").write_text("\n".join(lines))
    log = open_kitti_log(str(kitti_copy))
    with pytest.raises(InputError) as e:
        log.load_frame(1)
    assert e.value.what == "missing_calibration" and e.value.file.endswith("calib/000001.txt") and e.value.frame == 100_000_000
    with pytest.raises(InputError) as e:
        log.load_frame(2)
    assert e.value.what == "bad_calibration" and "P2" in e.value.detail


def test_bad_label_and_not_kitti(kitti_copy, tmp_path):
    (kitti_copy / "label_2" / "000000.txt").write_text("Car 0 0 1.0 1 2 3\n")
    with pytest.raises(InputError) as e:
        open_kitti_log(str(kitti_copy)).load_frame(0)
    assert e.value.what == "bad_label" and "15" in e.value.detail
    with pytest.raises(InputError) as e:
        open_kitti_log(str(tmp_path))
    assert e.value.what == "wrong_format"
