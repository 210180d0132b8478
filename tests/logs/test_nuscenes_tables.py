"""nuScenes JSON tables reader: tables written by the test from the real keyframe's info file must read back as
the same frame the info reader gives (points bit-exact, boxes, cameras), and bad tables give clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from labeler.errors import InputError
from labeler.geometry.boxes import count_points_in_boxes, wrap_angle
from labeler.geometry.transforms import quat_to_matrix
from labeler.logs.native import _matrix_to_quat
from labeler.logs.nuscenes import open_nuscenes_log
from labeler.logs.registry import detect_format, find_logs, open_log
from tests.realdata import require_real_data

INFO = "n015-2018-07-24-11-22-45+0800.info.json"
LABELS = {0: "vehicle.car", 1: "vehicle.truck", 2: "vehicle.trailer", 3: "vehicle.bus.rigid", 4: "vehicle.construction",
          5: "vehicle.bicycle", 6: "vehicle.motorcycle", 7: "human.pedestrian.adult", 8: "movable_object.trafficcone",
          9: "movable_object.barrier", -1: "ignore"}


def _rec(T):
    return {"translation": [float(v) for v in T[:3, 3]], "rotation": list(_matrix_to_quat(T[:3, :3]))}


def write_tables(src, dataroot, scene="scene-0001"):
    """A v1.0 dataroot with one scene of one sample, built from the mmdet3d info file of the real keyframe."""
    d = json.loads((src / INFO).read_text())
    s = d["data_list"][0]
    us = int(round(float(s["timestamp"]) * 1e6))
    (dataroot / "samples" / "LIDAR_TOP").mkdir(parents=True)
    t = {k: [] for k in ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "sample_annotation",
                         "instance", "category", "log")}
    t["log"].append({"token": "log0", "location": "singapore-onenorth"})
    t["scene"].append({"token": "sc0", "name": scene, "log_token": "log0", "first_sample_token": "s0", "nbr_samples": 1})
    t["sample"].append({"token": "s0", "timestamp": us, "scene_token": "sc0", "prev": "", "next": ""})
    ego2global = np.asarray(s["ego2global"])
    lidar2ego = np.asarray(s["lidar_points"]["lidar2ego"])
    lidar_name = s["lidar_points"]["lidar_path"].split("/")[-1]
    shutil.copy(src / lidar_name, dataroot / "samples" / "LIDAR_TOP" / lidar_name)

    def sensor(ch, T, K, filename, ts_us, i):
        t["sensor"].append({"token": f"se{i}", "channel": ch, "modality": "camera" if ch.startswith("CAM") else "lidar"})
        t["calibrated_sensor"].append({"token": f"cs{i}", "sensor_token": f"se{i}", **_rec(T), "camera_intrinsic": K})
        t["ego_pose"].append({"token": f"ep{i}", "timestamp": ts_us, **_rec(ego2global)})
        t["sample_data"].append({"token": f"sd{i}", "sample_token": "s0", "ego_pose_token": f"ep{i}", "calibrated_sensor_token": f"cs{i}",
                                 "filename": filename, "fileformat": filename.rsplit(".", 1)[-1], "is_key_frame": True,
                                 "timestamp": ts_us, "width": 1600 if ch.startswith("CAM") else 0,
                                 "height": 900 if ch.startswith("CAM") else 0})

    sensor("LIDAR_TOP", lidar2ego, [], f"samples/LIDAR_TOP/{lidar_name}", us, 0)
    for i, (cam, im) in enumerate(sorted(s["images"].items()), start=1):
        name = im["img_path"].split("/")[-1]
        (dataroot / "samples" / cam).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, dataroot / "samples" / cam / name)
        sensor(cam, np.asarray(im["cam2ego"]), np.asarray(im["cam2img"])[:3, :3].tolist(), f"samples/{cam}/{name}",
               int(round(float(im["timestamp"]) * 1e6)), i)
    global_from_lidar = ego2global @ lidar2ego
    cats = {}
    for k, inst in enumerate(s["instances"]):
        x, y, z, l, w, h, yaw = inst["bbox_3d"][:7]
        box = np.eye(4)
        box[:3, :3] = quat_to_matrix(np.cos(yaw / 2), 0, 0, np.sin(yaw / 2))
        box[:3, 3] = [x, y, z]
        G = global_from_lidar @ box
        name = LABELS[int(inst["bbox_label_3d"])]
        cats.setdefault(name, f"c{len(cats)}")
        t["instance"].append({"token": f"i{k}", "category_token": cats[name]})
        t["sample_annotation"].append({"token": f"a{k}", "sample_token": "s0", "instance_token": f"i{k}", **_rec(G),
                                       "size": [w, l, h], "num_lidar_pts": int(inst["num_lidar_pts"])})
    t["category"] = [{"token": tok, "name": n} for n, tok in cats.items()]
    v = dataroot / "v1.0-mini"
    v.mkdir()
    for k, rows in t.items():
        (v / f"{k}.json").write_text(json.dumps(rows))
    return s


@pytest.mark.real_data
def test_tables_read_like_the_info_file(tmp_path):
    src = require_real_data("nuscenes_keyframe")
    root = tmp_path / "nuscenes"
    info = write_tables(src, root)
    assert detect_format(str(root)) == "nuscenes_tables"
    logs = find_logs(str(root))
    assert logs == [(f"{root}#scene-0001", "nuscenes_tables")]
    log = open_log(*logs[0])
    ref = open_nuscenes_log(str(src / INFO))
    assert len(log) == 1 and log.log_id == "scene-0001"
    f, g = log.load_frame(0), ref.load_frame(0)
    assert f.timestamp_ns == g.timestamp_ns and np.array_equal(f.points, g.points)  # same turn, bit-exact
    np.testing.assert_allclose(f.ego_from_lidar, g.ego_from_lidar, atol=1e-6)
    assert sorted(f.images) == sorted(g.images)
    for cam, im in info["images"].items():
        # the tables give each camera its own ego pose; ours equals the lidar's, so cam_from_lidar is exactly
        # inv(cam2ego) @ lidar2ego (turned); the info file's lidar2cam used the camera's true capture pose instead,
        # a few decimetres of ego motion away
        np.testing.assert_allclose(f.cameras[cam].cam_from_lidar, np.linalg.inv(np.asarray(im["cam2ego"])) @ np.asarray(f.ego_from_lidar), atol=1e-6)
        assert np.abs(f.cameras[cam].cam_from_lidar[:3, 3] - g.cameras[cam].cam_from_lidar[:3, 3]).max() < 0.5
        np.testing.assert_allclose(f.cameras[cam].cam_from_lidar[:3, :3], g.cameras[cam].cam_from_lidar[:3, :3], atol=0.01)
        np.testing.assert_allclose(f.cameras[cam].K, g.cameras[cam].K)
    np.testing.assert_allclose(f.gt_boxes[:, :6], g.gt_boxes[:, :6], atol=1e-5)  # 10 um after the global round trip
    assert np.abs(wrap_angle(f.gt_boxes[:, 6] - g.gt_boxes[:, 6])).max() < 1e-6
    assert list(f.gt_track_ids) == [f"i{k}" for k in range(len(info["instances"]))]
    assert f.gt_categories[0].startswith(("vehicle", "human", "movable"))
    counts = count_points_in_boxes(f.points[:, :3], f.gt_boxes)
    stored = np.array([x["num_lidar_pts"] for x in info["instances"]])
    assert (counts == stored).sum() >= 61  # the yaw-only boxes (see labeler.logs.nuscenes): 61 of 69 exact


@pytest.mark.real_data
def test_bad_tables_name_the_file(tmp_path):
    src = require_real_data("nuscenes_keyframe")
    root = tmp_path / "nuscenes"
    write_tables(src, root)
    lidar = next((root / "samples" / "LIDAR_TOP").iterdir())
    lidar.write_bytes(lidar.read_bytes()[:-6])
    log = open_log(str(root), "nuscenes_tables")
    with pytest.raises(InputError, match="truncated_point_file") as e:
        log.load_frame(0)
    assert lidar.name in e.value.file and e.value.frame == int(log.timestamps_ns[0])
    with pytest.raises(InputError, match="missing_scene"):
        open_log(f"{root}#nope", "nuscenes_tables")
    (root / "v1.0-mini" / "ego_pose.json").write_text("{oops")
    with pytest.raises(InputError, match="corrupt_json") as e:
        open_log(str(root), "nuscenes_tables")
    assert "ego_pose.json" in e.value.file
    (root / "v1.0-mini" / "ego_pose.json").unlink()
    with pytest.raises(InputError, match="missing_file"):
        open_log(str(root), "nuscenes_tables")
