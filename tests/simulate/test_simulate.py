"""Tests of the road-test log simulator (labeler.simulate): real ray casting, GT consistency, corner cases."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from labeler.classes import CLASS_COLORS, TYPICAL_SIZE_M
from labeler.geometry import count_points_in_boxes, project_points
from labeler.geometry.camera import boxes_to_2d
from labeler.logs.native import load_frame, read_log_index
from labeler.simulate import CORNER_KINDS, SimConfig, batch_kinds, log_name, log_seed, scenario_for, simulate_log, simulate_logs
from labeler.simulate.camera import CameraRenderer, make_calib
from labeler.simulate.lidar import Lidar, point_azimuth_deg
from labeler.simulate.scene import MAT, MeshBuilder, RayScene, Road

ALL = SimConfig(duration_s=5.0, image_width=480, image_height=270, force_corner_cases=CORNER_KINDS)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A 5 s log with every corner-case kind forced in (smaller images to keep the test fast)."""
    root = tmp_path_factory.mktemp("sim")
    return read_log_index(simulate_log(str(root), "sim-all", 11, ALL))


def _table(path: Path, name: str):
    return pq.read_table(path / name)


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_and_tables_other_seed_differs(tmp_path):
    cfg = SimConfig(duration_s=0.5)
    a = Path(simulate_log(str(tmp_path), "a", 5, cfg))
    b = Path(simulate_log(str(tmp_path), "b", 5, cfg))
    c = Path(simulate_log(str(tmp_path), "c", 6, cfg))
    files = sorted(p.relative_to(a) for p in (a / "lidar").iterdir())
    assert len(files) == 5
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    for cam in ("front", "back"):
        for f in sorted((a / "camera" / cam).iterdir()):
            assert f.read_bytes() == (b / "camera" / cam / f.name).read_bytes()
    for t in ("annotations.parquet", "frames.parquet", "poses.parquet", "camera_frames.parquet", "corner_cases.parquet"):
        assert _table(a, t).equals(_table(b, t)), t
    assert (a / "calibration.json").read_text() == (b / "calibration.json").read_text()
    # another seed: another world
    pa_ = np.fromfile(a / files[0], np.float32)
    pc = np.fromfile(sorted((c / "lidar").iterdir())[0], np.float32)
    assert pa_.shape != pc.shape or not np.array_equal(pa_, pc)
    assert not _table(a, "annotations.parquet").equals(_table(c, "annotations.parquet"))


# ----------------------------------------------------------------------------------------------- read back
def test_log_reads_back(log):
    assert len(log) == 50
    assert set(log.cameras) == {"front", "back"}
    expected = np.eye(4)
    expected[2, 3] = 1.84
    assert np.allclose(log.ego_from_lidar, expected)
    for cal in log.cameras.values():
        assert cal.width == 480 and cal.height == 270
        assert cal.K[0, 2] == 240 and cal.K[1, 2] == 135 and abs(cal.K[0, 0] - cal.K[1, 1]) < 1e-9
    front = log.cameras["front"]
    assert 70 - 1 < np.degrees(2 * np.arctan(240 / front.K[0, 0])) < 70 + 1
    # optical axis of front looks along +x of the LiDAR, back along -x
    assert np.allclose(front.cam_from_lidar[2, :3], [1, 0, 0], atol=0.05)
    assert np.allclose(log.cameras["back"].cam_from_lidar[2, :3], [-1, 0, 0], atol=0.1)
    f = load_frame(log, 17)
    assert f.points.dtype == np.float32 and f.points.shape[1] == 4
    assert f.images["front"].shape == (270, 480, 3)
    for cam, ts in f.camera_timestamps_ns.items():
        assert 0 < ts - f.timestamp_ns < 10_000_000, cam
    assert np.all(np.diff(log.timestamps_ns) == 100_000_000)
    assert f.gt_boxes.shape[1] == 7 and len(f.gt_boxes) == len(f.gt_categories) > 5


def test_points_plausible(log):
    for i in (0, 25, 49):
        p = load_frame(log, i, with_images=False).points
        assert 25_000 <= len(p) <= 42_000, len(p)
        assert np.all((p[:, 3] >= 0) & (p[:, 3] <= 1))
        r = np.linalg.norm(p[:, :3], axis=1)
        assert r.max() <= 80.0 + 0.2 and r.min() > 0.5
        z = p[:, 2]
        assert np.mean(np.abs(z + 1.84) < 0.1) > 0.3  # most returns are road around z = -1.84
        assert np.percentile(z, 0.5) > -1.84 - 0.1  # nothing below the road (but noise)
        # lane markings are brighter than asphalt in intensity
        road = p[(np.abs(z + 1.84) < 0.06) & (r < 25)]
        assert np.percentile(road[:, 3], 99) > 2.5 * np.median(road[:, 3])


def test_gt_num_points_match_recount(log):
    ann = log.annotations.to_pandas()
    assert (ann.num_lidar_pts >= 0).all()
    checked = 0
    for i in range(0, len(log), 7):
        f = load_frame(log, i, with_images=False)
        ts = log.timestamps_ns[i]
        rows = ann[ann.timestamp_ns == ts]
        boxes = rows[["x", "y", "z", "l", "w", "h", "yaw"]].to_numpy()
        assert np.array_equal(count_points_in_boxes(f.points[:, :3], boxes), rows.num_lidar_pts.to_numpy())
        assert np.all(np.hypot(boxes[:, 0], boxes[:, 1]) <= 80.0)
        checked += len(rows)
    assert checked > 100 and ann.num_lidar_pts.max() > 200


def test_tracks_are_stable_and_sizes_realistic(log):
    ann = log.annotations.to_pandas()
    g = ann.groupby("track_id")
    assert (g.category.nunique() == 1).all()
    assert (g[["l", "w", "h"]].std().fillna(0).to_numpy() < 1e-9).all()
    odd = {r["track_id"] for r in log.corner_cases.to_pylist() if r["kind"] == "odd_size"}
    sizes = g[["l", "w", "h"]].first().join(g.category.first())
    for cat in ("car", "pedestrian"):
        s = sizes[(sizes.category == cat) & ~sizes.index.isin(odd)]
        assert len(s) > 3
        assert np.allclose(s[["l", "w", "h"]].median().to_numpy(), TYPICAL_SIZE_M[cat], rtol=0.15)
        assert s.l.std() > 0  # spread, not one size


# ------------------------------------------------------------------------------------------------ occlusion
def _scene_with(boxes):
    mb = MeshBuilder()
    for x, w, h in boxes:
        mb.frustum(x, 0.0, 0.0, h, 1.0, w, 0.0, MAT["body"], (100, 100, 100))
    mesh = mb.build()
    return RayScene(mesh, Road(np.random.default_rng(0), -200, 200), n_static=len(mesh.F), threads=1)


def test_occluded_box_gets_no_points():
    """A small box hidden behind a big one (seen from the LiDAR) gets no returns; alone it gets many."""
    lidar = Lidar()
    pose = np.eye(4)
    pose[2, 3] = 1.84
    behind = np.array([[20.0, 0.0, 0.75 - 1.84, 1.0, 2.0, 1.5, 0.0]])  # LiDAR frame
    front = np.array([[10.0, 0.0, 1.5 - 1.84, 1.0, 4.0, 3.0, 0.0]])
    alone = lidar.scan(_scene_with([(20.0, 2.0, 1.5)]), pose, np.random.default_rng(1), dropout=0.0)
    both = lidar.scan(_scene_with([(20.0, 2.0, 1.5), (10.0, 4.0, 3.0)]), pose, np.random.default_rng(1), dropout=0.0)
    margin = 0.1
    assert count_points_in_boxes(alone[:, :3], behind, margin)[0] > 50
    assert count_points_in_boxes(both[:, :3], behind, margin)[0] == 0
    assert count_points_in_boxes(both[:, :3], front, margin)[0] > 200
    # along the rays that hit the front box nothing further away comes back
    az = point_azimuth_deg(both)
    ahead = np.abs(az) < np.degrees(np.arctan(1.9 / 10.5))
    el = np.degrees(np.arctan2(both[:, 2], np.hypot(both[:, 0], both[:, 1])))
    shadow = ahead & (el > np.degrees(np.arctan(-1.84 / 9.6))) & (el < np.degrees(np.arctan(1.1 / 10.6)))
    assert shadow.sum() > 200 and np.all(both[shadow, 0] < 10.6)


# --------------------------------------------------------------------------------------------------- camera
def _chroma(rgb):
    rgb = np.asarray(rgb, np.float64)
    return rgb / max(rgb.sum(), 1e-9)


def test_gt_boxes_land_on_class_colored_pixels(log):
    good = total = 0
    broken = {r["timestamp_ns"] for r in log.corner_cases.to_pylist() if r["kind"].startswith("camera_")}
    for i in range(0, len(log), 3):
        if int(log.timestamps_ns[i]) in broken:
            continue
        f = load_frame(log, i)
        cal = f.cameras["front"]
        ann = f.gt_boxes
        num = log.annotations.to_pandas().set_index(["timestamp_ns", "track_id"]).num_lidar_pts
        b2, vis, trunc, depth = boxes_to_2d(cal, ann)
        uv, d = project_points(cal, ann[:, :3])
        for k in range(len(ann)):
            if not vis[k] or trunc[k] > 0.05 or not 4 < depth[k] < 40 or num[(f.timestamp_ns, f.gt_track_ids[k])] < 30:
                continue
            u, v = int(uv[k, 0]), int(uv[k, 1])
            px = f.images["front"][max(v - 1, 0):v + 2, max(u - 1, 0):u + 2].reshape(-1, 3).mean(0)
            c = f.gt_categories[k]
            total += 1
            good += np.abs(_chroma(px) - _chroma(CLASS_COLORS[c])).sum() < 0.12
            sky = np.array([204, 217, 230])
            assert np.abs(px - sky).sum() > 40, (i, c)  # never sky
    assert total >= 20
    assert good / total > 0.75, (good, total)


def test_adaptive_camera_sampling_matches_one_ray_per_pixel():
    cfg = SimConfig(duration_s=1.0)
    scen = scenario_for(3, cfg)
    r = CameraRenderer(make_calib("front", 640, 360), np.random.default_rng(0))
    pose = scen.world_from_ego(5)
    pose[2, 3] += 1.84
    rs = scen.ray_scene(5, threads=1)
    fast = r.render(rs, pose, scen.sun_dir, np.random.default_rng(1))
    rays_fast = r.rays_cast
    exact = r.render(rs, pose, scen.sun_dir, np.random.default_rng(1), exact=True)
    assert r.rays_cast == 640 * 360 and rays_fast < 0.5 * 640 * 360
    diff = np.abs(fast.astype(int) - exact.astype(int)).max(axis=2)
    assert np.mean(diff > 20) < 0.01
    assert 40 < exact.mean() < 220 and exact.std() > 20  # a real image, not flat


# -------------------------------------------------------------------------------------------- corner cases
def test_corner_cases_are_real(log):
    cc = log.corner_cases.to_pylist()
    kinds = {r["kind"] for r in cc}
    assert kinds == set(CORNER_KINDS)
    by_kind = {k: [r for r in cc if r["kind"] == k] for k in kinds}
    idx = {int(t): i for i, t in enumerate(log.timestamps_ns)}

    # lidar sector dropout: an empty azimuth sector of >= 40 deg, which has returns in the other frames
    rows = by_kind["lidar_sector_dropout"]
    frames = sorted(idx[r["timestamp_ns"]] for r in rows)
    assert len(frames) >= 3 and frames == list(range(frames[0], frames[0] + len(frames)))
    det = json.loads(rows[0]["detail"])
    assert det["width_deg"] >= 40
    for i in range(len(log)):
        az = point_azimuth_deg(load_frame(log, i, with_images=False).points)
        inside = np.mod(az - det["start_deg"] - 0.05, 360.0) < det["width_deg"] - 0.1
        if i in frames:
            assert inside.sum() == 0
        elif abs(i - frames[0]) <= 2 or abs(i - frames[-1]) <= 2:
            assert inside.sum() > 1000

    # camera black / overexposed: the named camera only
    for kind, test in (("camera_black", lambda m: m < 15), ("camera_overexposed", lambda m: m > 240)):
        rows = by_kind[kind]
        assert 1 <= len(rows) <= 3
        for r in rows:
            cam = json.loads(r["detail"])["camera"]
            f = load_frame(log, idx[r["timestamp_ns"]])
            assert test(f.images[cam].mean()), (kind, f.images[cam].mean())
            for other, img in f.images.items():
                if other != cam:
                    assert 40 < img.mean() < 220
    camera_ts = {r["timestamp_ns"] for r in cc if r["kind"].startswith("camera")}
    normal = load_frame(log, next(i for i in range(len(log)) if int(log.timestamps_ns[i]) not in camera_ts))
    assert all(40 < img.mean() < 220 for img in normal.images.values())

    # stationary: runs of >= 4 s of consecutive frames without ego motion
    frames = sorted(idx[r["timestamp_ns"]] for r in by_kind["stationary"])
    runs = np.split(np.array(frames), np.nonzero(np.diff(frames) > 1)[0] + 1)
    for run in runs:
        assert len(run) >= 40
        t = log.world_from_ego[run, :3, 3]
        assert np.abs(t - t[0]).max() < 0.01

    # rare class and odd size: the tracks are in the ground truth at those timestamps
    ann = log.annotations.to_pandas()
    for kind in ("rare_class", "odd_size"):
        for r in by_kind[kind]:
            row = ann[(ann.timestamp_ns == r["timestamp_ns"]) & (ann.track_id == r["track_id"])]
            assert len(row) == 1
            if kind == "rare_class":
                assert row.category.iloc[0] == "animal"
            else:
                cat = row.category.iloc[0]
                ratio = row.l.iloc[0] / TYPICAL_SIZE_M[cat][0]
                assert cat in ("car", "truck", "bus") and (ratio > 1.8 or ratio < 0.6)


def test_ego_speed_varies_and_stops_at_red_lights():
    cfg = SimConfig(duration_s=20.0)
    mid_stops = 0
    for seed in range(6):
        scen = scenario_for(seed, replace(cfg, force_corner_cases=("stationary",)))
        v = scen.ego_speed
        still = sorted(scen.corner.stationary)
        assert len(still) >= 40 and np.all(v[still] == 0.0)
        if still[0] > 20 and still[-1] < len(v) - 10:  # stopped on the way: drove before and after
            mid_stops += 1
            assert v[: still[0]].max() > 5.0 and v[still[-1] + 1:].max() > 1.0
        step = np.linalg.norm(np.diff(scen.ego_pose[:, :2], axis=0), axis=1) * cfg.rate_hz
        assert np.allclose(step[still[:-1]], 0.0, atol=1e-6)  # poses agree with the speeds
    assert mid_stops >= 1
    free = scenario_for(1, replace(cfg, corner_cases=False))
    assert 4.0 < free.ego_speed.mean() < 15.0 and free.ego_speed.std() > 0.3 and free.ego_speed.min() > 0


def test_batch_covers_every_kind_and_corner_cases_can_be_off():
    u = set()
    for i in range(4):  # the scenarios simulate_logs renders for 4 logs x 20 s from seed 0
        u |= scenario_for(log_seed(0, i), replace(SimConfig(), force_corner_cases=batch_kinds(i))).corner.kinds
    assert u == set(CORNER_KINDS)
    assert scenario_for(0, SimConfig(duration_s=20.0, corner_cases=False)).corner.kinds == set()


def test_simulate_logs_names_parallel_and_skips_complete(tmp_path):
    cfg = SimConfig(duration_s=0.3)
    paths = simulate_logs(str(tmp_path), num_logs=2, seed=3, cfg=cfg, workers=2, progress=False)
    assert [Path(p).name for p in paths] == [log_name(3, 0), log_name(3, 1)] == ["sim-0003-000", "sim-0003-001"]
    stamps = {p: os.path.getmtime(Path(p) / "log.json") for p in paths}
    for p in paths:
        assert len(read_log_index(p)) == 3
    # the worker's log equals a direct simulate_log with the same per-log seed and forced kinds
    one = Path(simulate_log(str(tmp_path / "ref"), "x", log_seed(3, 1), replace(cfg, force_corner_cases=batch_kinds(1))))
    first = sorted((one / "lidar").iterdir())[0]
    assert first.read_bytes() == (Path(paths[1]) / "lidar" / first.name).read_bytes()
    again = simulate_logs(str(tmp_path), num_logs=2, seed=3, cfg=cfg, workers=2, progress=False)
    assert again == paths
    assert {p: os.path.getmtime(Path(p) / "log.json") for p in paths} == stamps


def test_lidar_profiles_mix_sensors_per_log(tmp_path):
    """With ``lidar_profiles`` each log draws a real sensor's beam pattern and mounting from its seed: the points
    show that sensor's beam count and elevation span, the road sits at its mounting height, and the draw does
    not change the rest of the log (same scene, same ground truth)."""
    from labeler.simulate.lidar import PROFILES
    from labeler.simulate.run import resolve_lidar

    cfg = SimConfig(duration_s=0.1, image_width=64, image_height=36, lidar_profiles=tuple(PROFILES))
    drawn = {resolve_lidar(cfg, log_seed(5, i))[1] for i in range(40)}
    assert drawn == {f"sim-{p}" for p in PROFILES}  # every profile is reachable
    assert resolve_lidar(SimConfig(), 1)[1] == "sim-hdl32e"  # no profiles: the configured HDL-32E
    with pytest.raises(ValueError, match="unknown"):
        resolve_lidar(SimConfig(lidar_profiles=("nope",)), 1)
    # two logs with different sensors, same seed otherwise
    seed = next(log_seed(5, i) for i in range(40) if resolve_lidar(cfg, log_seed(5, i))[1] == "sim-hdl64e")
    dense = Path(simulate_log(str(tmp_path), "dense", seed, cfg))
    plain = Path(simulate_log(str(tmp_path), "plain", seed, replace(cfg, lidar_profiles=())))
    meta = json.loads((dense / "log.json").read_text())["lidar"]
    assert meta["model"] == "sim-hdl64e" and meta["num_beams"] == 64 and meta["elevation_deg"] == [2.0, -24.9]
    a, b = read_log_index(str(dense)), read_log_index(str(plain))
    assert a.ego_from_lidar[2, 3] == pytest.approx(1.73) and b.ego_from_lidar[2, 3] == pytest.approx(1.84)
    fa, fb = load_frame(a, 0, with_images=False), load_frame(b, 0, with_images=False)
    el = np.degrees(np.arctan2(fa.points[:, 2], np.hypot(fa.points[:, 0], fa.points[:, 1])))
    assert el.max() <= 2.0 + 0.1 and el.min() >= -24.9 - 0.1
    assert len(np.unique(np.round(el, 1))) > 45  # up to 64 distinct beams seen (HDL-32E: at most 32)
    assert len(fa.points) > 1.5 * len(fb.points)
    road = lambda p: np.median(p[(np.hypot(p[:, 0], p[:, 1]) < 12) & (p[:, 2] < -1.0), 2])  # noqa: E731
    assert road(fa.points) == pytest.approx(-1.73, abs=0.1) and road(fb.points) == pytest.approx(-1.84, abs=0.1)
    # the same objects in world coordinates: GT boxes differ only by the mounting height
    assert list(fa.gt_track_ids) == list(fb.gt_track_ids)
    assert np.allclose(fa.gt_boxes[:, 2] + 1.73, fb.gt_boxes[:, 2] + 1.84, atol=1e-6)
