"""Sensor-independent BEV features: the ground height map, heights above it, intensity ranks, ground-relative box
z through targets and decoding, the copy-paste object bank, and old checkpoints keeping their raw features.
Scenes are made here (planes, boxes of points) so the right answer is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from labeler.geometry.boxes import bev_iou, points_in_boxes
from labeler.models.bev.data import BankObject, ObjectBank, Sample
from labeler.models.bev.decode import RawDetections
from labeler.models.bev.network import BevConfig
from labeler.models.bev.raster import FEATURES, ground_at, ground_height, intensity_rank, rasterize
from labeler.models.bev.targets import build_targets, relative_z_targets

CFG = BevConfig(x_range=(-25.6, 25.6), y_range=(-25.6, 25.6))


def _plane(rng, n=40_000, slope=(0.05, -0.03), offset=-1.8, extent=25.0):
    """Points on the road z = offset + sx * x + sy * y (LiDAR frame) with 2 cm noise, intensities in [0, 0.3]."""
    xy = rng.uniform(-extent, extent, size=(n, 2))
    z = offset + slope[0] * xy[:, 0] + slope[1] * xy[:, 1] + rng.normal(0, 0.02, n)
    return np.c_[xy, z, rng.uniform(0, 0.3, n)].astype(np.float32)


def _box_points(rng, box, n=2000):
    """Points filling a box's volume (x, y, z, l, w, h, yaw)."""
    u = rng.uniform(-0.5, 0.5, size=(n, 3)) * box[3:6]
    c, s = np.cos(box[6]), np.sin(box[6])
    p = np.c_[box[0] + c * u[:, 0] - s * u[:, 1], box[1] + s * u[:, 0] + c * u[:, 1], box[2] + u[:, 2], rng.uniform(0.5, 1.0, n)]
    return p.astype(np.float32)


def _ground(points, cfg=CFG):
    P = torch.cat([torch.as_tensor(points[:, :4]), torch.zeros(len(points), 1)], dim=1)
    return ground_height(P, 1, cfg)


def test_ground_follows_a_sloped_road_under_a_bus_and_ignores_noise_below_it():
    rng = np.random.default_rng(0)
    road = _plane(rng)
    # a bus standing on the road: its footprint hides the road (no road points inside it)
    bus = np.array([8.0, 4.0, 0.0, 12.0, 2.6, 3.2, 0.3])
    bus[2] = -1.8 + 0.05 * 8.0 - 0.03 * 4.0 + 1.6
    road = road[~points_in_boxes(road[:, :3], bus[None], margin=0.0)[:, 0]]
    # multipath noise: a few returns 4 m below the road
    noise = road[rng.choice(len(road), 20, replace=False)].copy()
    noise[:, 2] -= 4.0
    pts = np.concatenate([road, _box_points(rng, bus), noise])
    g = _ground(pts)
    xy = rng.uniform(-20, 20, size=(500, 2))
    true = -1.8 + 0.05 * xy[:, 0] - 0.03 * xy[:, 1]
    err = ground_at(g, 0, xy, CFG) - true
    # 1.6 m cells: the lowest point of a cell is up to 1.6 m x (0.05 + 0.03) = 0.13 m below the plane at a point
    # in it, plus ~0.07 m of noise (the lowest of many 2 cm-noise returns); the opening keeps the plane otherwise (a min filter alone would read ~0.4 m low on this slope)
    assert err.max() < 0.1 and err.min() > -0.25, (err.min(), err.max())
    under = ground_at(g, 0, bus[None, :2], CFG)[0]
    assert abs(under - (bus[2] - bus[5] / 2)) < 0.35  # under the bus: the road beside it, not its roof
    at_noise = ground_at(g, 0, noise[:, :2], CFG) - (-1.8 + 0.05 * noise[:, 0] - 0.03 * noise[:, 1])
    assert at_noise.min() > -0.25  # the returns 4 m below the road were rejected


def test_ground_of_an_empty_sweep_is_zero_and_holes_are_filled():
    g = _ground(np.zeros((0, 4), np.float32))
    assert torch.count_nonzero(g) == 0
    rng = np.random.default_rng(1)
    half = _plane(rng, slope=(0.0, 0.0), offset=-2.0)
    half = half[half[:, 0] > 0]  # nothing behind the sensor: those cells are filled from the known ones
    g = _ground(half)
    assert torch.allclose(g, torch.full_like(g, -2.0), atol=0.12)


def test_ground_relative_features_do_not_depend_on_mount_height_or_intensity_scale():
    rng = np.random.default_rng(2)
    pts = np.concatenate([_plane(rng), _box_points(rng, np.array([5.0, -3.0, -1.0, 4.5, 1.9, 1.6, 0.2]))])
    shifted = pts.copy()
    shifted[:, 2] += 1.4                  # a LiDAR frame whose origin is 1.4 m lower (e.g. an ego frame)
    shifted[:, 3] = 0.1 + 0.5 * shifted[:, 3]  # another sensor's intensity gain and offset
    a, ga = rasterize([pts], CFG, return_ground=True)
    b, gb = rasterize([shifted], CFG, return_ground=True)
    assert torch.allclose(gb, ga + 1.4, atol=1e-4)
    for k, name in enumerate(FEATURES):
        # intensity ranks are taken on 1024 levels: halving the spread merges neighbouring levels (~1/300 of
        # the points each here), so ranks move by up to about that much
        tol = 0.01 if name.startswith("i_") else 1e-5
        assert (a[0, k] - b[0, k]).abs().max() < tol, name
    # the old raw features do depend on both
    raw = replace(CFG, height_ref="sensor", intensity_norm="none", z_range=(-3.0, 3.0))
    ra, rb = rasterize([pts], raw), rasterize([shifted], raw)
    k = FEATURES.index("z_mean")
    assert (ra[0, k] - rb[0, k]).abs().max() > 0.1


def test_intensity_rank_is_the_empirical_cdf():
    v = torch.tensor([0.1, 0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.8])
    b = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    r = intensity_rank(v, b, 2)
    # sweep 0: ties share the mid rank; sweep 1 is ranked on its own
    assert torch.allclose(r, torch.tensor([0.25, 0.25, 0.625, 0.875, 0.375, 0.625, 0.125, 0.875]))


def test_box_z_is_learned_above_the_ground_and_decoded_back():
    """Targets hold z above the ground map; the detector adds the same map back (BevDetector._lift)."""
    from labeler.models.bev.detector import BevDetector

    rng = np.random.default_rng(3)
    road = _plane(rng, slope=(0.04, 0.0), offset=-1.9)
    boxes = np.array([[10.0, 2.0, 0.0, 4.5, 1.9, 1.6, 0.0], [-12.0, -6.0, 0.0, 0.7, 0.7, 1.8, 1.0]])
    boxes[:, 2] = -1.9 + 0.04 * boxes[:, 0] + boxes[:, 5] / 2
    pts = np.concatenate([road] + [_box_points(rng, b, 300) for b in boxes])
    raster, ground = rasterize([pts], CFG, return_ground=True)
    t = build_targets(boxes, np.array([0, 3]), CFG)
    t = type(t).stack([t])
    rel = relative_z_targets(t, ground, CFG)
    z_rel = rel.reg[0, :2, 2].numpy()
    assert np.all(np.abs(z_rel - boxes[:, 5] / 2) < 0.3), z_rel  # centre height above the road ~ h / 2
    det = BevDetector.__new__(BevDetector)
    det.config = CFG
    d = RawDetections(np.c_[boxes[:, :2], z_rel, boxes[:, 3:]], np.array([0, 3]), np.array([0.9, 0.8]))
    lifted = det._lift(d, ground, 0)
    assert np.allclose(lifted.boxes[:, 2], boxes[:, 2], atol=1e-4)


def test_old_checkpoint_configs_keep_their_raw_features():
    old = {k: v for k, v in BevConfig().to_dict().items() if k not in ("height_ref", "intensity_norm", "ground_cell_m")}
    old["z_range"] = [-3.0, 3.0]
    cfg = BevConfig.from_dict(old)
    assert cfg.height_ref == "sensor" and cfg.intensity_norm == "none"
    assert BevConfig.from_dict(BevConfig().to_dict()) == BevConfig()


def test_copy_paste_bank_places_objects_without_overlap_at_the_right_height():
    rng = np.random.default_rng(4)
    # a bus cut from a log whose LiDAR sits 1.95 m above the road, pasted into one where it sits 1.73 m high
    src_h, dst_h = 1.95, 1.73
    bus = np.array([15.0, 0.0, -src_h + 1.6, 12.0, 2.6, 3.2, 0.0])
    bus_pts = _box_points(rng, bus, 800)
    obj_pts = bus_pts.copy()
    obj_pts[:, 2] += src_h
    obj_box = bus.copy()
    obj_box[2] += src_h
    bank = ObjectBank({2: [BankObject(obj_pts, obj_box, 2)]})
    road = _plane(rng, slope=(0.0, 0.0), offset=-dst_h)
    car = np.array([8.0, 3.0, -dst_h + 0.8, 4.5, 1.9, 1.6, 0.5])
    s = Sample(np.concatenate([road, _box_points(rng, car, 300)]), car[None], np.array([0]))
    pasted = 0
    for k in range(20):
        out = bank.paste(s, dst_h, 3, np.random.default_rng(k))
        new = out.boxes[1:]
        assert np.all(out.labels[1:] == 2)
        if len(new) == 0:
            continue
        pasted += len(new)
        iou = bev_iou(out.boxes, out.boxes)
        np.fill_diagonal(iou, 0)
        assert iou.max() == 0  # no pasted object overlaps another box
        assert np.allclose(new[:, 2], -dst_h + 1.6)  # standing on this sweep's road
        assert np.allclose(np.hypot(new[:, 0], new[:, 1]), 15.0)  # same range from the sensor
        inside = points_in_boxes(out.points[:, :3], new[:1])[:, 0]
        assert inside.sum() >= 790  # the bus's points came with it (and the road inside its box went)
        assert np.all(out.points[inside, 3] >= 0.5)
    assert pasted >= 10


def test_fit_boxes_snaps_vehicles_onto_the_geometric_box_of_the_same_object():
    from labeler.models.bev.fit import fit_boxes

    net = np.array([[10.8, 0.5, -1.0, 4.2, 1.8, 1.5, 0.35],     # a car, 0.9 m off and 0.35 rad skewed
                    [30.0, 5.0, -1.0, 4.5, 1.9, 1.6, 0.0],      # a car with no geometric box nearby: kept
                    [-8.0, 2.0, -1.0, 0.6, 0.6, 1.7, 0.0],      # a pedestrian: never fitted
                    [0.0, -12.0, -1.0, 4.4, 1.9, 1.5, 0.0]])    # a car over a cluster of two cars: size gate
    cats = np.array(["car", "car", "pedestrian", "car"], dtype=object)
    geo = np.array([[10.0, 0.2, -0.9, 4.6, 1.9, 1.55, 0.05 - np.pi],  # same object, heading axis only
                    [-8.1, 2.0, -1.0, 0.7, 0.7, 1.7, 0.0],
                    [0.9, -12.0, -1.0, 9.6, 2.0, 1.5, 0.0]])
    gcat = np.array(["car", "car", "car"], dtype=object)
    out, fitted = fit_boxes(net, cats, geo, gcat)
    assert fitted.tolist() == [True, False, False, False]
    assert np.allclose(out[0, :6], geo[0, :6])
    assert np.isclose(out[0, 6], 0.05)  # the geometric axis, turned to the network's direction
    assert np.allclose(out[1:], net[1:])
