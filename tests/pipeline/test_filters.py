import io

import numpy as np

from labeler.geometry.transforms import pose_from_xyz_yaw
from labeler.pipeline import filters
from labeler.pipeline.config import FilterCfg


def _ring(n=20000, seed=0, gap=None):
    rng = np.random.default_rng(seed)
    az = rng.uniform(0, 2 * np.pi, n)
    if gap is not None:
        lo, hi = np.radians(gap[0]), np.radians(gap[1])
        az = az[(az < lo) | (az > hi)]
    r = rng.uniform(5, 50, len(az))
    return np.stack([r * np.cos(az), r * np.sin(az), rng.normal(-1.8, 0.05, len(az)), rng.uniform(0, 1, len(az))], 1).astype(np.float32)


def test_healthy_sweep_passes():
    drop, flags = filters.lidar_health(_ring(), FilterCfg())
    assert drop is None and flags == []


def test_too_few_and_nonfinite_points_are_dropped():
    assert filters.lidar_health(_ring(100), FilterCfg())[0] == filters.DROP_LIDAR_TOO_FEW
    assert filters.lidar_health(np.zeros((0, 4), np.float32), FilterCfg())[0] == filters.DROP_LIDAR_TOO_FEW
    p = _ring()
    p[10, 0] = np.nan
    assert filters.lidar_health(p, FilterCfg())[0] == filters.DROP_LIDAR_NONFINITE


def test_sector_dropout_is_flagged_with_its_width():
    p = _ring(gap=(100, 160))
    width = filters.largest_empty_sector_deg(p)
    assert 55 <= width <= 62.5
    drop, flags = filters.lidar_health(p, FilterCfg())
    assert drop is None and flags == [filters.FLAG_SECTOR_DROPOUT]
    # a gap that wraps through 0 degrees
    assert 37.5 <= filters.largest_empty_sector_deg(_wrap_gap()) <= 42.5


def test_a_sector_blocked_by_a_near_vehicle_is_not_a_dropout():
    # the ego waits beside a truck: 40 deg of the sweep returns only from its side, 2.2-2.9 m away
    rng = np.random.default_rng(1)
    p = _ring(gap=(230, 270))
    az = np.radians(rng.uniform(230, 270, 3000))
    r = rng.uniform(2.2, 2.9, 3000)
    side = np.stack([r * np.cos(az), r * np.sin(az), rng.uniform(-1.5, 0.5, 3000), np.ones(3000)], 1).astype(np.float32)
    assert filters.lidar_health(np.concatenate([p, side]), FilterCfg()) == (None, [])
    # the same sweep without the truck is a dead sector; so is one whose only returns there are the housing's
    assert filters.lidar_health(p, FilterCfg())[1] == [filters.FLAG_SECTOR_DROPOUT]
    housing = side.copy()
    housing[:, :2] *= 0.3 / 2.5  # 0.26-0.35 m from the sensor
    assert filters.lidar_health(np.concatenate([p, housing]), FilterCfg())[1] == [filters.FLAG_SECTOR_DROPOUT]


def _wrap_gap():
    p = _ring()
    az = np.degrees(np.arctan2(p[:, 1], p[:, 0])) % 360
    return p[(az > 20) & (az < 340)]


def test_camera_health_black_overexposed_and_skew():
    imgs = {"front": np.full((10, 10, 3), 3, np.uint8), "back": np.full((10, 10, 3), 252, np.uint8), "left": np.full((10, 10, 3), 120, np.uint8)}
    flags = filters.camera_health(imgs, 1_000_000_000, {"front": 1_000_000_000, "back": 1_000_000_000, "left": 1_200_000_000}, FilterCfg())
    assert flags == ["camera_overexposed:back", "camera_black:front", "camera_blurred:left", "camera_time_skew:left"]


def test_pose_decisions_keyframes_and_stationary():
    cfg = FilterCfg(keyframe_hz=2.0, stationary_speed_mps=0.5, stationary_keep_every_s=5.0)
    ts = np.arange(200) * 100_000_000  # 20 s at 10 Hz
    x = np.concatenate([np.arange(100) * 1.0, np.full(100, 99.0)])  # 10 m/s for 10 s, then stopped 10 s
    poses = np.stack([pose_from_xyz_yaw(xx, 0, 0, 0) for xx in x])
    d = filters.pose_decisions(ts, poses, cfg)
    kept = [i for i, r in enumerate(d) if r is None]
    moving_kept = [i for i in kept if i < 99]
    assert moving_kept == list(range(0, 99, 5))          # 2 Hz while moving
    still_kept = [i for i in kept if i >= 100]
    assert still_kept == [100, 150]                       # one per 5 s while stopped
    assert all(d[i] == filters.DROP_STATIONARY for i in range(100, 200) if i not in still_kept)
    assert abs(filters.ego_speed_mps(ts, poses)[50] - 10.0) < 1e-9


def test_blur_flag_and_scenario_tags():
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(1)
    sharp = (rng.integers(0, 2, (360, 640, 1)) * 200 + 20).repeat(3, axis=2).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(4)))
    cfg = FilterCfg()
    assert filters.sharpness(sharp) > cfg.camera_blur_var > filters.sharpness(blurred)
    flags = filters.camera_health({"front": sharp, "back": blurred}, 0, {}, cfg)
    assert flags == ["camera_blurred:back"]
    tags, b = filters.scenario_tags({"front": np.full((4, 4, 3), 30, np.uint8)}, 7.0, cfg)
    assert tags == ["night", "speed:medium"] and b == 30.0
    assert filters.scenario_tags({}, 0.1, cfg)[0] == ["speed:stopped"]
    assert filters.scenario_tags({"f": np.full((4, 4, 3), 130, np.uint8)}, 20.0, cfg)[0] == ["day", "speed:fast"]


def test_blur_threshold_separates_simulated_sharp_and_blurred_frames(tmp_path):
    """The health check looks at a reduced decode (320 px wide); on simulated road-test frames every sharp image is
    above ``camera_blur_var`` and the same image blurred by 2 or 4 px is below it, through the lazy reader path
    (reduced JPEG decode) and through the full-image path alike."""
    from PIL import Image, ImageFilter

    from labeler.logs.images import EncodedImage, LazyImages
    from labeler.logs.native import load_frame, read_log_index
    from labeler.simulate import SimConfig, simulate_logs

    cfg = FilterCfg()
    (path,) = simulate_logs(str(tmp_path), num_logs=1, seed=3, cfg=SimConfig(duration_s=0.4, corner_cases=False),
                            workers=1, progress=False)
    idx = read_log_index(path)
    checked = 0
    for i in range(len(idx)):
        frame = load_frame(idx, i)
        assert filters.camera_health(frame.images, frame.timestamp_ns, frame.camera_timestamps_ns, cfg) == []
        assert frame.images.num_decoded() == 0  # the health check never decoded a full image
        for cam in sorted(frame.images):
            sharp = frame.images[cam]
            assert filters.sharpness(sharp) > 2 * cfg.camera_blur_var  # full-image path, with margin
            for r in (2, 4):
                blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(r)))
                buf = io.BytesIO()
                Image.fromarray(blurred).save(buf, format="JPEG", quality=90)
                lazy = LazyImages({cam: EncodedImage(buf.getvalue(), cam, 0)})
                assert filters.sharpness(blurred) < cfg.camera_blur_var / 1.2
                assert filters.camera_health(lazy, 0, {}, cfg) == [f"camera_blurred:{cam}"]
                checked += 1
    assert checked >= 8


def test_lazy_image_means_match_full_images():
    """Means from the reduced decode stand in for the full image's (black / over-exposed / night thresholds)."""
    from PIL import Image

    from labeler.logs.images import EncodedImage, LazyImages

    rng = np.random.default_rng(0)
    for level in (5, 30, 128, 248):
        img = np.clip(rng.normal(level, 20, (360, 640, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        lazy = LazyImages({"c": EncodedImage(buf.getvalue(), "c", 0)})
        assert abs(filters.image_means(lazy)["c"] - img.mean()) < 1.0


def test_model_tags_from_detections():
    cfg = FilterCfg(model_tag_score=0.5, crowded_min_objects=3, vru_near_m=10.0)
    boxes = np.array([[5, 0, 0, 4, 2, 1.5, 0], [30, 5, 0, 12, 2.5, 3.2, 0], [8, 3, 0, 0.6, 0.6, 1.7, 0],
                      [40, 0, 0, 0.6, 0.6, 1.7, 0]], dtype=float)
    cats = ["car", "bus", "pedestrian", "pedestrian"]
    # the near pedestrian scores under the tag score: only the far one counts, so no vru_near
    assert filters.model_tags(cats, [0.9, 0.7, 0.3, 0.8], boxes, cfg) == ["obj:bus", "obj:car", "obj:pedestrian", "crowded"]
    assert filters.model_tags(cats, [0.9, 0.2, 0.6, 0.1], boxes, cfg) == ["obj:car", "obj:pedestrian", "vru_near"]
    assert filters.model_tags([], [], np.zeros((0, 7)), cfg) == []
    assert filters.is_model_tag("obj:bus") and filters.is_model_tag("crowded") and not filters.is_model_tag("night")
