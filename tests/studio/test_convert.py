"""Box <-> Label Studio rectangle conversions (pure, no server)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from labeler.classes import CLASSES
from labeler.geometry.bev import BevGrid
from labeler.geometry.boxes import bev_corners, wrap_angle
from labeler.studio.convert import (
    bev_box_to_rect,
    camera_box_to_rect,
    parse_result,
    prediction_result,
    rect_to_bev_box,
    rect_to_camera_box,
    region_id,
)
from labeler.studio.labeling_config import build_labeling_config
from labeler.studio.tasks import CameraView

# non-square: 120 px wide (y in [-30, 30]), 160 px high (x in [-20, 60])
GRID = BevGrid(x_min_m=-20.0, x_max_m=60.0, y_min_m=-30.0, y_max_m=30.0, m_per_px=0.5)
YAWS = [0.0, 0.3, math.pi / 2, 1.9, -math.pi, -2.5, -math.pi / 2, -0.7, 3.1]


def _ls_corners_px(v: dict, img_w: int, img_h: int) -> np.ndarray:
    """Corners of an LS rect in pixels, straight from the documented semantics (rotate about the x, y corner)."""
    x0, y0 = v["x"] / 100 * img_w, v["y"] / 100 * img_h
    W, H = v["width"] / 100 * img_w, v["height"] / 100 * img_h
    t = math.radians(v["rotation"])
    ex = np.array([math.cos(t), math.sin(t)])  # rect width axis on screen (v down): clockwise by t
    ey = np.array([-math.sin(t), math.cos(t)])
    o = np.array([x0, y0])
    return np.array([o, o + W * ex, o + W * ex + H * ey, o + H * ey])


def _same_boxes(a, b, tol=1e-6):
    a, b = np.asarray(a).reshape(-1, 7), np.asarray(b).reshape(-1, 7)
    assert a.shape == b.shape
    np.testing.assert_allclose(a[:, :6], b[:, :6], atol=tol, rtol=0)
    assert np.all(np.abs(wrap_angle(a[:, 6] - b[:, 6])) < tol)


def test_grid_is_non_square():
    assert (GRID.width_px, GRID.height_px) == (120, 160)


@pytest.mark.parametrize("yaw", YAWS)
@pytest.mark.parametrize("xy", [(10.0, 0.0), (59.0, 29.5), (-19.5, -29.0), (58.0, -28.0), (-18.0, 28.5), (0.0, 0.0)])
def test_bev_round_trip(yaw, xy):
    box = np.array([xy[0], xy[1], -0.8, 4.6, 1.9, 1.7, yaw])
    rect = bev_box_to_rect(box, GRID)
    assert 0.0 <= rect["rotation"] < 360.0
    back = rect_to_bev_box(rect, GRID, z=box[2], h=box[5])
    _same_boxes(back, box)
    assert -math.pi <= back[6] < math.pi


@pytest.mark.parametrize("yaw", YAWS)
def test_rect_corners_match_box_footprint(yaw):
    """The rect drawn by LS (documented semantics) covers exactly the box footprint projected into the BEV image."""
    box = np.array([12.0, -7.0, 0.0, 4.0, 2.0, 1.5, yaw])
    rect = bev_box_to_rect(box, GRID)
    ls = _ls_corners_px(rect, GRID.width_px, GRID.height_px)
    ours = GRID.to_pixels(bev_corners(box)[0])
    # same set of 4 points
    d = np.linalg.norm(ls[:, None, :] - ours[None, :, :], axis=-1)
    assert np.all(d.min(axis=1) < 1e-9) and np.all(d.min(axis=0) < 1e-9)
    # the rect's width axis (corner 0 -> 1) is the heading: front corners of the box
    front = GRID.to_pixels(box[:2] + 2.0 * np.array([math.cos(yaw), math.sin(yaw)]))
    assert np.linalg.norm((ls[1] + ls[2]) / 2 - front) < 1e-9


def test_rotation_hand_computed():
    """yaw=0, box 10 m ahead of ego: the rect's width axis points UP the image -> rotation 270.

    Centre pixel u = (30 - 0) / 0.5 = 60, v = (60 - 10) / 0.5 = 100. W = 4 / 0.5 = 8 px, H = 2 / 0.5 = 4 px.
    theta = 270: cos = 0, sin = -1. x0 = 60 - (8*0 - 4*(-1))/2 = 58, y0 = 100 - (8*(-1) + 4*0)/2 = 104.
    """
    rect = bev_box_to_rect([10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0], GRID)
    assert rect["rotation"] == pytest.approx(270.0, abs=1e-12)
    assert rect["x"] == pytest.approx(58 / 120 * 100, abs=1e-12)
    assert rect["y"] == pytest.approx(104 / 160 * 100, abs=1e-12)
    assert rect["width"] == pytest.approx(8 / 120 * 100, abs=1e-12)
    assert rect["height"] == pytest.approx(4 / 160 * 100, abs=1e-12)
    # yaw = +90 deg (heading +y = left in the image): width axis points left -> rotation 180
    assert bev_box_to_rect([10.0, 0.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2], GRID)["rotation"] == pytest.approx(180.0)
    # yaw = -90 deg (heading right): rotation 0; yaw = pi (backwards, down): rotation 90
    assert bev_box_to_rect([10.0, 0.0, 0.0, 4.0, 2.0, 1.5, -math.pi / 2], GRID)["rotation"] == pytest.approx(0.0, abs=1e-9)
    assert bev_box_to_rect([10.0, 0.0, 0.0, 4.0, 2.0, 1.5, math.pi], GRID)["rotation"] == pytest.approx(90.0)


def test_rotation_normalised_from_ui():
    """The UI may save -90 for 270: both read back the same box."""
    rect = bev_box_to_rect([10.0, 3.0, 0.0, 4.0, 2.0, 1.5, 0.4], GRID)
    neg = dict(rect, rotation=rect["rotation"] - 360.0)
    _same_boxes(rect_to_bev_box(neg, GRID, 0.0, 1.5), rect_to_bev_box(rect, GRID, 0.0, 1.5))


def test_camera_round_trip():
    r = camera_box_to_rect(10.5, 20.25, 300.0, 200.0, 1920, 1080)
    assert r["rotation"] == 0.0 and r["x"] == pytest.approx(10.5 / 1920 * 100)
    np.testing.assert_allclose(rect_to_camera_box(r, 1920, 1080), (10.5, 20.25, 300.0, 200.0), atol=1e-9)
    # a rotated camera rect reads back as its axis-aligned bounding box
    x1, y1, x2, y2 = rect_to_camera_box(dict(r, rotation=90.0), 1920, 1080)
    w, h = 300.0 - 10.5, 200.0 - 20.25
    np.testing.assert_allclose((x1, y1, x2, y2), (10.5 - h, 20.25, 10.5, 20.25 + w), atol=1e-9)


def test_region_ids():
    assert region_id("trk_12") == "trk_12"
    assert region_id("trk_12", "front") == "front-trk_12"
    long = region_id("3f2c9a1e-77aa-4c1b-9e0d-0123456789ab")
    assert len(long) <= 20 and long == region_id("3f2c9a1e-77aa-4c1b-9e0d-0123456789ab")
    assert region_id("a b") != region_id("a_b")
    ids = {region_id(f"obj-{i}", v) for i in range(200) for v in ("bev", "front", "rear_left")}
    assert len(ids) == 600


def test_prediction_result_round_trip():
    boxes = np.array([[10.0, 2.0, -0.5, 4.5, 1.9, 1.6, 0.2], [55.0, -25.0, 0.3, 12.0, 2.6, 3.3, -2.0]])
    cam = CameraView("front", "x.png", 640, 480, [("a", 10.0, 20.0, 100.0, 200.0, "car", 0.9)])
    res = prediction_result(boxes, ["car", "bus"], ["a", "b"], GRID, [0.9, 0.4], [cam])
    rects = [r for r in res if r["type"] == "rectanglelabels"]
    assert len(rects) == 3 and len(res) == 3 + 4
    for r in res:  # z / height numbers share the region id of their rectangle
        if r["type"] == "number":
            assert any(x["id"] == r["id"] and x["from_name"] == "bev_box" for x in rects)
    p = parse_result(res, GRID)
    _same_boxes(np.stack([b["box"] for b in p["bev"]]), boxes)
    assert [b["label"] for b in p["bev"]] == ["car", "bus"]
    np.testing.assert_allclose(p["cameras"]["front"][0]["xyxy"], (10.0, 20.0, 100.0, 200.0), atol=1e-9)
    assert p["verdict"] is None


def test_labeling_config():
    xml = build_labeling_config(list(CLASSES) + ['odd & "quoted" <label>'], ["front", "rear_left"])
    root = ET.fromstring(xml)
    by_name = {e.get("name"): e for e in root.iter() if e.get("name")}
    assert by_name["bev"].tag == "Image" and by_name["bev"].get("value") == "$bev"
    assert by_name["bev_box"].get("canRotate") == "true" and by_name["bev_box"].get("toName") == "bev"
    labels = [lab.get("value") for lab in by_name["bev_box"]]
    assert labels[-1] == 'odd & "quoted" <label>' and labels[:-1] == list(CLASSES)
    for n in ("z_m", "height_m"):
        assert by_name[n].tag == "Number" and by_name[n].get("perRegion") == "true" and by_name[n].get("step") == "any"
    for cam in ("front", "rear_left"):
        assert by_name[f"cam_{cam}"].get("value") == f"$cam_{cam}"
        assert by_name[f"box_{cam}"].get("toName") == f"cam_{cam}" and by_name[f"box_{cam}"].get("canRotate") == "false"
    assert [c.get("value") for c in by_name["verdict"]] == ["ok", "needs_fix", "bad_frame"]
    headers = " ".join(h.get("value") for h in root.iter("Header"))
    assert "$frame_key" in headers and "$priority" in headers and "$reasons" in headers
