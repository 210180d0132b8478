"""ROS bag reader: the tests write their own small bags (ROS 1 .bag, ROS 2 .mcap and sqlite3) from the real KITTI
and nuScenes samples with rosbags' writers, read them back and compare with the source files."""

import io
import json

import fsspec
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from labeler.errors import InputError
from labeler.geometry.transforms import invert
from labeler.logs.base import LogSource
from labeler.logs.kitti import open_kitti_log
from labeler.logs.nuscenes import open_nuscenes_log
from labeler.logs.rosbag import camera_name, find_rosbags, open_rosbag_log
from tests.realdata import require_real_data

rosbags = pytest.importorskip("rosbags")
from rosbags.rosbag1 import Writer as Writer1  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

NUS_LIDAR = "n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
T0 = 1_700_000_000_000_000_000


class BagWriter:
    """Writes PointCloud2 / Image / CompressedImage / CameraInfo / TFMessage with rosbags (ROS 1 or ROS 2)."""

    def __init__(self, path, kind="ros1"):
        self.ros1 = kind == "ros1"
        self.store = get_typestore(Stores.ROS1_NOETIC if self.ros1 else Stores.ROS2_HUMBLE)
        if self.ros1:
            self.w = Writer1(path)
        else:
            plugin = StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3
            self.w = Writer2(path, version=9, storage_plugin=plugin)
        self.w.open()
        self.conns = {}
        self.T = self.store.types

    def _conn(self, topic, msgtype):
        if topic not in self.conns:
            self.conns[topic] = self.w.add_connection(topic, msgtype, typestore=self.store)
        return self.conns[topic]

    def header(self, stamp, frame_id):
        t = self.T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
        H = self.T["std_msgs/msg/Header"]
        return H(seq=0, stamp=t, frame_id=frame_id) if self.ros1 else H(stamp=t, frame_id=frame_id)

    def write(self, topic, msg, msgtype, record_ns):
        data = self.store.serialize_ros1(msg, msgtype) if self.ros1 else self.store.serialize_cdr(msg, msgtype)
        self.w.write(self._conn(topic, msgtype), record_ns, bytes(data))

    def cloud(self, topic, stamp, raw: bytes, fields, step, frame_id="lidar", record_ns=None, cut=0):
        PF = self.T["sensor_msgs/msg/PointField"]
        n = len(raw) // step
        data = np.frombuffer(raw, np.uint8)[: len(raw) - cut].copy()
        msg = self.T["sensor_msgs/msg/PointCloud2"](
            header=self.header(stamp, frame_id), height=1, width=n,
            fields=[PF(name=nm, offset=off, datatype=dt, count=1) for nm, off, dt in fields],
            is_bigendian=False, point_step=step, row_step=step * n, data=data, is_dense=True)
        self.write(topic, msg, "sensor_msgs/msg/PointCloud2", record_ns or stamp)

    def jpeg(self, topic, stamp, rgb, frame_id="cam", quality=95, raw=None):
        if raw is None:
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
            raw = buf.getvalue()
        msg = self.T["sensor_msgs/msg/CompressedImage"](header=self.header(stamp, frame_id), format="jpeg",
                                                        data=np.frombuffer(raw, np.uint8).copy())
        self.write(topic, msg, "sensor_msgs/msg/CompressedImage", stamp)

    def image(self, topic, stamp, rgb, frame_id="cam", encoding="rgb8"):
        px = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
        h, w = rgb.shape[:2]
        msg = self.T["sensor_msgs/msg/Image"](header=self.header(stamp, frame_id), height=h, width=w, encoding=encoding,
                                              is_bigendian=0, step=w * 3, data=np.ascontiguousarray(px).reshape(-1))
        self.write(topic, msg, "sensor_msgs/msg/Image", stamp)

    def camera_info(self, topic, stamp, K, w, h, frame_id):
        T = self.T
        roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        P = np.c_[K, np.zeros(3)].reshape(-1)
        msg = T["sensor_msgs/msg/CameraInfo"](header=self.header(stamp, frame_id), height=h, width=w, distortion_model="plumb_bob",
                                              d=np.zeros(5), k=np.asarray(K, float).reshape(-1), r=np.eye(3).reshape(-1), p=P,
                                              binning_x=0, binning_y=0, roi=roi)
        self.write(topic, msg, "sensor_msgs/msg/CameraInfo", stamp)

    def tf_static(self, stamp, edges):
        """edges: (parent, child, parent_from_child 4x4)."""
        T = self.T
        out = []
        for parent, child, M in edges:
            q = Rotation.from_matrix(M[:3, :3]).as_quat()  # x, y, z, w
            tr = T["geometry_msgs/msg/Transform"](translation=T["geometry_msgs/msg/Vector3"](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
                                                  rotation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
            out.append(T["geometry_msgs/msg/TransformStamped"](header=self.header(stamp, parent), child_frame_id=child, transform=tr))
        self.write("/tf_static", T["tf2_msgs/msg/TFMessage"](transforms=out), "tf2_msgs/msg/TFMessage", stamp)

    def close(self):
        self.w.close()


def psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


XYZI = [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7)]
XYZIR = XYZI + [("ring", 16, 7)]


@pytest.fixture()
def kitti():
    return require_real_data("kitti_object", "training")


@pytest.fixture()
def nus():
    return require_real_data("nuscenes_keyframe")


def write_kitti_ros1(kitti, path, cut_frame=None, bad_image_frame=None, sidecar=True):
    """3 KITTI sweeps at 10 Hz + image_2 as JPEG 20 ms later, native calibration.json next to the bag."""
    src = open_kitti_log(str(kitti))
    w = BagWriter(path, "ros1")
    for i in range(3):
        stamp = T0 + i * 100_000_000
        raw = (kitti / "velodyne" / f"{src.ids[i]}.bin").read_bytes()
        w.cloud("/velodyne_points", stamp, raw, XYZI, 16, "velodyne", cut=64 if i == cut_frame else 0)
        img = np.asarray(Image.open(kitti / "image_2" / f"{src.ids[i]}.png").convert("RGB"))
        w.jpeg("/kitti/camera_color_left/image_raw/compressed", stamp + 20_000_000, img,
               raw=b"\xff\xd8\xff\xe0 broken" if i == bad_image_frame else None)
    w.close()
    if sidecar:
        cam = src.cameras["image_2"]
        (path.parent / "calibration.json").write_text(json.dumps(
            {"ego_from_lidar": np.eye(4).tolist(), "cameras": {"camera_color_left": cam.to_dict()}}))
    return src


def test_camera_names():
    assert camera_name("/kitti/camera_color_left/image_raw/compressed") == "camera_color_left"
    assert camera_name("/cam/front/image_raw") == "front"
    assert camera_name("/CAM_FRONT/camera_info") == "CAM_FRONT"


def test_ros1_bag_round_trip_from_kitti(kitti, tmp_path):
    bag = tmp_path / "drive.bag"
    src = write_kitti_ros1(kitti, bag)
    log = open_rosbag_log(str(bag))
    assert isinstance(log, LogSource) and log.format == "rosbag" and log.log_id == "drive"
    assert log.lidar_topic == "/velodyne_points" and len(log) == 3
    assert log.timestamps_ns.tolist() == [T0, T0 + 100_000_000, T0 + 200_000_000]
    assert list(log.cameras) == ["camera_color_left"]
    for i in range(3):
        f = log.load_frame(i)
        ref = src.load_frame(i)
        assert f.points.dtype == np.float32 and np.array_equal(f.points, ref.points)  # bit-exact
        img = f.images["camera_color_left"]
        assert img.shape == ref.images["image_2"].shape
        assert psnr(img, ref.images["image_2"]) > 32  # JPEG tolerance
        assert f.camera_timestamps_ns["camera_color_left"] == T0 + i * 100_000_000 + 20_000_000
        assert f.lidar_file == f"{bag}#/velodyne_points@{T0 + i * 100_000_000}"
    np.testing.assert_allclose(f.cameras["camera_color_left"].K, src.cameras["image_2"].K)


def test_ros2_mcap_round_trip_from_nuscenes(nus, tmp_path):
    """nuScenes sweep (raw .pcd.bin bytes, intensity 0-255) + CAM_FRONT as raw rgb8 Image and CAM_BACK as JPEG;
    calibration from CameraInfo + a two-hop /tf_static chain (lidar -> base_link -> camera optical frames)."""
    src = open_nuscenes_log(str(nus))
    ref = src.load_frame(0)
    info = json.loads((nus / "n015-2018-07-24-11-22-45+0800.info.json").read_text())["data_list"][0]
    raw = (nus / NUS_LIDAR).read_bytes()
    stamp = int(src.timestamps_ns[0])
    path = tmp_path / "nus_ros2"
    w = BagWriter(path, "mcap")
    ego_from_lidar_top = np.array(info["lidar_points"]["lidar2ego"])
    edges = [("base_link", "lidar_top", ego_from_lidar_top)]
    for cam in ("CAM_FRONT", "CAM_BACK"):
        frame_id = cam.lower() + "_optical"
        ego_from_cam = ego_from_lidar_top @ invert(np.array(info["images"][cam]["lidar2cam"]))
        edges.append(("base_link", frame_id, ego_from_cam))
    w.tf_static(stamp - 10**9, edges)
    for k in range(2):  # the same sweep twice, 100 ms apart; camera images only near the first
        w.cloud("/lidar_top/points", stamp + k * 100_000_000, raw, XYZIR, 20, "lidar_top")
    for cam in ("CAM_FRONT", "CAM_BACK"):
        c = src.cameras[cam]
        cts = ref.camera_timestamps_ns[cam]
        w.camera_info(f"/{cam}/camera_info", cts, c.K, c.width, c.height, cam.lower() + "_optical")
        if cam == "CAM_FRONT":
            w.image(f"/{cam}/image_raw", cts, ref.images[cam], cam.lower() + "_optical")
        else:
            w.jpeg(f"/{cam}/image_raw/compressed", cts, ref.images[cam], cam.lower() + "_optical")
    w.close()

    mcap = next(path.glob("*.mcap"))
    for p in (str(path), str(mcap)):  # the rosbag2 folder and the bare .mcap file
        log = open_rosbag_log(p)
        assert len(log) == 2 and sorted(log.cameras) == ["CAM_BACK", "CAM_FRONT"]
        f = log.load_frame(0)
        file = np.frombuffer(raw, np.float32).reshape(-1, 5)
        assert np.array_equal(f.points[:, :3], file[:, :3])  # bit-exact with the source file (LIDAR_TOP axes)
        assert np.array_equal(f.points[:, 3], ref.points[:, 3])  # 0-255 scaled like the nuScenes reader
        assert np.array_equal(f.images["CAM_FRONT"], ref.images["CAM_FRONT"])  # raw rgb8: exact
        assert psnr(f.images["CAM_BACK"], ref.images["CAM_BACK"]) > 32
        assert f.camera_timestamps_ns == {c: ref.camera_timestamps_ns[c] for c in ("CAM_FRONT", "CAM_BACK")}
        for cam in ("CAM_FRONT", "CAM_BACK"):
            np.testing.assert_allclose(log.cameras[cam].K, src.cameras[cam].K)
            # the ROS cloud stays in LIDAR_TOP axes; the nuScenes reader turned them: undo the turn to compare
            np.testing.assert_allclose(log.cameras[cam].cam_from_lidar, src.cameras[cam].cam_from_lidar @ invert(src.sensor_from_lidar),
                                       atol=1e-6)
        g = log.load_frame(1)
        assert g.images == {} and np.array_equal(g.points, f.points)  # nearest image is 100 ms away: not paired


def test_ros2_sqlite3_folder_and_memory_url(kitti, tmp_path):
    src = open_kitti_log(str(kitti))
    path = tmp_path / "k2"
    w = BagWriter(path, "sqlite3")
    w.cloud("/points", T0, (kitti / "velodyne" / "000001.bin").read_bytes(), XYZI, 16, "velodyne")
    w.close()
    log = open_rosbag_log(str(path))
    assert np.array_equal(log.load_frame(0).points, src.load_frame(1).points) and log.cameras == {}

    bag = tmp_path / "m" / "drive.bag"
    bag.parent.mkdir()
    write_kitti_ros1(kitti, bag)
    fs = fsspec.filesystem("memory")
    for p in bag.parent.iterdir():
        fs.pipe(f"/bags_mem/{p.name}", p.read_bytes())
    try:
        mem = open_rosbag_log("memory://bags_mem/drive.bag")
        assert find_rosbags("memory://bags_mem") == ["memory://bags_mem/drive.bag"]
        f = mem.load_frame(2)
        assert np.array_equal(f.points, src.load_frame(2).points) and "camera_color_left" in f.images
        assert f.lidar_file.startswith("memory://bags_mem/drive.bag#")
    finally:
        fs.rm("/bags_mem", recursive=True)


def test_lidar_topic_choice(kitti, tmp_path):
    bag = tmp_path / "two.bag"
    w = BagWriter(bag, "ros1")
    raw = (kitti / "velodyne" / "000000.bin").read_bytes()
    for i in range(3):
        w.cloud("/main_lidar", T0 + i * 100_000_000, raw, XYZI, 16)
    w.cloud("/aux_lidar", T0, raw[: 16 * 1000], XYZI, 16)
    w.close()
    assert open_rosbag_log(str(bag)).lidar_topic == "/main_lidar"
    aux = open_rosbag_log(str(bag), lidar_topic="/aux_lidar")
    assert len(aux) == 1 and len(aux.load_frame(0).points) == 1000
    with pytest.raises(InputError) as e:
        open_rosbag_log(str(bag), lidar_topic="/nope")
    assert e.value.what == "no_lidar_topic" and "/main_lidar" in e.value.detail


def test_truncated_cloud_and_corrupt_image_name_bag_and_frame(kitti, tmp_path):
    bag = tmp_path / "bad.bag"
    write_kitti_ros1(kitti, bag, cut_frame=1, bad_image_frame=2)
    log = open_rosbag_log(str(bag))
    with pytest.raises(InputError) as e:
        log.load_frame(1)
    assert e.value.what == "truncated_point_file" and e.value.frame == T0 + 100_000_000
    assert e.value.file == f"{bag}#/velodyne_points@{T0 + 100_000_000}"
    with pytest.raises(InputError) as e:
        log.load_frame(2)
    assert e.value.what == "corrupt_image" and e.value.frame == T0 + 200_000_000
    assert e.value.file.startswith(f"{bag}#/kitti/camera_color_left/image_raw/compressed@")
    assert len(log.load_frame(2, with_images=False).points) > 0
    log.load_frame(0)


def test_missing_calibration(kitti, tmp_path):
    bag = tmp_path / "nocal.bag"
    write_kitti_ros1(kitti, bag, sidecar=False)
    with pytest.raises(InputError) as e:
        open_rosbag_log(str(bag))
    assert e.value.what == "missing_calibration" and e.value.file == str(bag)
    assert "calibration.json" in e.value.detail and "camera_color_left" in e.value.detail


def test_unknown_fields_no_cloud_and_truncated_bag(kitti, tmp_path):
    bag = tmp_path / "noz.bag"
    w = BagWriter(bag, "ros1")
    w.cloud("/pts", T0, (kitti / "velodyne" / "000000.bin").read_bytes(), [("x", 0, 7), ("y", 4, 7), ("intensity", 12, 7)], 16)
    w.close()
    with pytest.raises(InputError) as e:
        open_rosbag_log(str(bag)).load_frame(0)
    assert e.value.what == "unknown_fields" and "'z'" in e.value.detail and e.value.frame == T0

    img_only = tmp_path / "img.bag"
    w = BagWriter(img_only, "ros1")
    w.jpeg("/cam/image_raw/compressed", T0, np.zeros((8, 8, 3), np.uint8))
    w.close()
    with pytest.raises(InputError) as e:
        open_rosbag_log(str(img_only))
    assert e.value.what == "no_lidar_topic" and "/cam/image_raw/compressed" in e.value.detail

    cut = tmp_path / "cut.bag"
    write_kitti_ros1(kitti, tmp_path / "full.bag", sidecar=False)
    data = (tmp_path / "full.bag").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        open_rosbag_log(str(cut))
    assert e.value.what == "corrupt_bag" and e.value.file == str(cut)


def test_find_rosbags(kitti, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_kitti_ros1(kitti, tmp_path / "a" / "x.bag")
    w = BagWriter(tmp_path / "b" / "folder_bag", "mcap")
    w.cloud("/p", T0, (kitti / "velodyne" / "000000.bin").read_bytes()[:1600], XYZI, 16)
    w.close()
    # the .mcap inside the rosbag2 folder is not listed on its own
    assert find_rosbags(str(tmp_path)) == [str(tmp_path / "a" / "x.bag"), str(tmp_path / "b" / "folder_bag")]
