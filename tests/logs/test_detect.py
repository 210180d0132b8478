"""Format detection and log discovery over the registry (native, kitti, nuscenes, av2, sustech, rosbag)."""

import numpy as np
import pytest

from labeler.errors import InputError
from labeler.logs.registry import DETECTORS, FINDERS, READERS, detect_format, find_logs, open_log
from tests.logs.test_native import make_log
from tests.realdata import REAL_DATA, require_real_data

REAL = {
    "kitti": "kitti_object/training",
    "nuscenes": "nuscenes_keyframe",
    "av2": "av2_sensor_log/7fab2350-7eaf-3b7e-a39d-6937a4c1bede",
    "sustech": "sustechpoints_seq",
}


def test_registry_is_consistent():
    assert list(DETECTORS)[0] == "native"
    assert set(READERS) == set(DETECTORS) == set(FINDERS) == {"native", "kitti", "nuscenes", "nuscenes_tables", "av2", "sustech",
                                                                  "rosbag"}


@pytest.mark.real_data
@pytest.mark.parametrize("fmt", sorted(REAL))
def test_detects_real_samples(fmt):
    path = require_real_data(*REAL[fmt].split("/"))
    assert detect_format(str(path)) == fmt
    log = open_log(str(path))
    assert log.format == fmt and len(log) >= 1
    assert np.all(np.diff(log.timestamps_ns) > 0) and log.world_from_ego.shape == (len(log), 4, 4)
    want = str(path / "n015-2018-07-24-11-22-45+0800.info.json") if fmt == "nuscenes" else str(path)  # nuScenes logs are info files
    assert FINDERS[fmt](str(path)) == [want]


@pytest.mark.real_data
def test_nuscenes_info_files_are_logs():
    folder = require_real_data("nuscenes_keyframe")
    info = folder / "n015-2018-07-24-11-22-45+0800.info.json"
    assert detect_format(str(info)) == "nuscenes" and detect_format(str(folder / "n015-2018-07-24-11-22-45+0800.pkl")) == "nuscenes"
    assert FINDERS["nuscenes"](str(folder)) == [str(info)]  # the .pkl twin of an .info.json is not a second log


@pytest.mark.real_data
def test_find_logs_under_the_real_data_root():
    require_real_data()
    found = dict(find_logs(str(REAL_DATA)))
    assert found == {str(REAL_DATA / p): f for f, p in REAL.items()}
    assert FINDERS["kitti"](str(REAL_DATA)) == [str(REAL_DATA / REAL["kitti"])]
    assert FINDERS["av2"](str(REAL_DATA)) == [str(REAL_DATA / REAL["av2"])]
    assert FINDERS["sustech"](str(REAL_DATA)) == [str(REAL_DATA / REAL["sustech"])]


def test_native_and_rosbag_detection(tmp_path):
    path = make_log(tmp_path / "native", n=2)
    assert detect_format(path) == "native"
    bag = tmp_path / "x.bag"
    bag.write_bytes(b"#ROSBAG V2.0\n")
    assert detect_format(str(bag)) == "rosbag"
    folder = tmp_path / "ros2_bag"
    folder.mkdir()
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    assert detect_format(str(folder)) == "rosbag"


def test_sustech_and_kitti_layouts_on_memory():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/det/seq/lidar/000001.pcd", b"x")
    fs.pipe("/det/kitti/training/velodyne/000000.bin", b"")
    fs.pipe("/det/kitti/training/calib/000000.txt", b"")
    try:
        assert detect_format("memory://det/seq") == "sustech"
        assert detect_format("memory://det/kitti/training") == "kitti"
        assert dict(find_logs("memory://det")) == {"memory://det/seq": "sustech", "memory://det/kitti/training": "kitti"}
    finally:
        fs.rm("/det", recursive=True)


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError) as e:
        detect_format(str(tmp_path))
    assert e.value.what == "unknown_format" and e.value.file == str(tmp_path)
    for hint in ("velodyne/", "info.json", "sensors/lidar/", "lidar/*.pcd", ".bag", "log.json"):
        assert hint in e.value.detail
    assert find_logs(str(tmp_path)) == []
    with pytest.raises(InputError) as e:
        open_log(str(tmp_path), "no-such-format")
    assert e.value.what == "unknown_format"
