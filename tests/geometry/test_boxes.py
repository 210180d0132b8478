"""Box helpers on hand-made boxes with hand-computed answers."""

import numpy as np
import pytest

from labeler.geometry.boxes import (
    bev_iou,
    box_corners,
    count_points_in_boxes,
    points_in_boxes,
    transform_boxes,
    wrap_angle,
)
from labeler.geometry.transforms import pose_from_xyz_yaw


def test_box_corners_axis_aligned_order():
    c = box_corners([0, 0, 0, 2, 1, 1, 0])[0]
    expected_bottom = [[1, 0.5, -0.5], [1, -0.5, -0.5], [-1, -0.5, -0.5], [-1, 0.5, -0.5]]
    np.testing.assert_allclose(c[:4], expected_bottom, atol=1e-12)
    np.testing.assert_allclose(c[4:], np.array(expected_bottom) + [0, 0, 1], atol=1e-12)


def test_box_corners_rotated_90deg():
    # l = 4 along +y after a 90 deg turn, w = 2 along -x; centre (1, 2, 3), h = 1
    c = box_corners([1, 2, 3, 4, 2, 1, np.pi / 2])[0]
    np.testing.assert_allclose(c[0], [0, 4, 2.5], atol=1e-12)   # local (+l/2, +w/2) -> (-1, +2) + centre
    np.testing.assert_allclose(c[2], [2, 0, 2.5], atol=1e-12)   # local (-l/2, -w/2) -> (+1, -2) + centre
    np.testing.assert_allclose(c[4], [0, 4, 3.5], atol=1e-12)


def test_box_corners_shape_and_single_box():
    assert box_corners(np.zeros((3, 7))).shape == (3, 8, 3)
    assert box_corners([0, 0, 0, 1, 1, 1, 0]).shape == (1, 8, 3)
    with pytest.raises(ValueError):
        box_corners(np.zeros((2, 6)))


def test_points_in_axis_aligned_box_boundary_and_margin():
    box = [0, 0, 0, 4, 2, 2, 0]
    pts = np.array([[0, 0, 0], [2, 0, 0], [2.01, 0, 0], [0, 1, 1], [0, 1.05, 0], [0, 0, -1.2]])
    m = points_in_boxes(pts, box)[:, 0]
    assert m.tolist() == [True, True, False, True, False, False]  # boundary counts as inside
    m = points_in_boxes(pts, box, margin=0.1)[:, 0]
    assert m.tolist() == [True, True, True, True, True, False]


def test_points_in_rotated_box():
    box = [0, 0, 0, 4, 1, 1, np.pi / 4]  # long axis along the diagonal x = y
    pts = np.array([[1, 1, 0], [-1.3, -1.3, 0.4], [1, -1, 0], [1.5, 1.5, 0], [0.3, -0.3, 0]])
    # local x = (x + y)/sqrt2, local y = (y - x)/sqrt2: (1.41,0), (-1.84,0), (0,-1.41), (2.12,0), (0,-0.42)
    assert points_in_boxes(pts, box)[:, 0].tolist() == [True, True, False, False, True]


def test_points_in_boxes_many_boxes_and_empty():
    boxes = np.array([[0, 0, 0, 2, 2, 2, 0], [10, 0, 0, 2, 2, 2, 0.7]])
    pts = np.array([[0, 0, 0], [10, 0, 0], [5, 0, 0]])
    m = points_in_boxes(pts, boxes)
    assert m.shape == (3, 2)
    assert m.tolist() == [[True, False], [False, True], [False, False]]
    assert points_in_boxes(np.zeros((0, 3)), boxes).shape == (0, 2)
    assert points_in_boxes(pts, np.zeros((0, 7))).shape == (3, 0)


def test_count_points_in_boxes_chunks_agree():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-5, 5, size=(5000, 3))
    boxes = np.array([[0, 0, 0, 4, 2, 3, 0.3], [2, -2, 1, 1, 1, 1, -1.0], [-3, 3, 0, 2, 5, 2, 2.0]])
    expected = points_in_boxes(pts, boxes).sum(axis=0)
    np.testing.assert_array_equal(count_points_in_boxes(pts, boxes), expected)
    np.testing.assert_array_equal(count_points_in_boxes(pts, boxes, chunk=7), expected)
    # box 0 volume 24 m^3 of 1000 m^3 sampled: about 120 points
    assert 80 < expected[0] < 160


def test_bev_iou_identical_and_disjoint():
    a = np.array([[0, 0, 0, 4, 2, 1.5, 0.3]])
    np.testing.assert_allclose(bev_iou(a, a), [[1.0]], atol=1e-9)
    far = np.array([[10, 0, 0, 4, 2, 1.5, 0.3]])
    touching = np.array([[4, 0, 0, 4, 2, 1.5, 0.0]])  # shares an edge with an axis-aligned copy: zero area
    assert bev_iou(a, far)[0, 0] == 0.0
    assert bev_iou(np.array([[0, 0, 0, 4, 2, 1.5, 0.0]]), touching)[0, 0] == pytest.approx(0.0, abs=1e-9)


def test_bev_iou_half_overlap_hand_value():
    # two 2x2 squares, the second shifted by 1 m: intersection 1x2 = 2, union 4 + 4 - 2 = 6
    a = [[0, 0, 0, 2, 2, 1, 0]]
    b = [[1, 0, 5, 2, 2, 3, 0]]  # z and h do not matter in BEV
    assert bev_iou(a, b)[0, 0] == pytest.approx(1 / 3, abs=1e-9)
    # yaw pi rotates the box onto itself
    assert bev_iou(a, [[1, 0, 0, 2, 2, 1, np.pi]])[0, 0] == pytest.approx(1 / 3, abs=1e-9)


def test_bev_iou_square_rotated_45deg():
    # a 2x2 square and the same square turned by 45 deg intersect in a regular octagon of apothem 1:
    # area 8 tan(pi/8) = 8 (sqrt2 - 1); union 8 - that; IoU = (sqrt2 - 1) / (2 - sqrt2) = 1 / sqrt2
    a = [[0, 0, 0, 2, 2, 1, 0]]
    b = [[0, 0, 0, 2, 2, 1, np.pi / 4]]
    assert bev_iou(a, b)[0, 0] == pytest.approx(1 / np.sqrt(2), abs=1e-9)
    assert bev_iou(b, a)[0, 0] == pytest.approx(1 / np.sqrt(2), abs=1e-9)


def test_bev_iou_matrix_shape():
    a = np.array([[0, 0, 0, 2, 2, 1, 0], [5, 5, 0, 2, 2, 1, 0]])
    b = np.array([[0, 0, 0, 2, 2, 1, 0], [1, 0, 0, 2, 2, 1, 0], [50, 0, 0, 1, 1, 1, 0]])
    m = bev_iou(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, [[1, 1 / 3, 0], [0, 0, 0]], atol=1e-9)


def test_transform_boxes_moves_centre_and_yaw():
    T = pose_from_xyz_yaw(10, -2, 0.5, np.pi / 2)
    out = transform_boxes([[1, 0, 0, 4, 2, 1.5, 0.2]], T)[0]
    np.testing.assert_allclose(out[:3], [10, -1, 0.5], atol=1e-12)  # (1, 0) turned 90 deg is (0, 1)
    np.testing.assert_allclose(out[3:6], [4, 2, 1.5])
    assert out[6] == pytest.approx(0.2 + np.pi / 2)


def test_transform_boxes_composes_and_inverts():
    rng = np.random.default_rng(1)
    boxes = np.c_[rng.uniform(-20, 20, (5, 3)), rng.uniform(0.5, 5, (5, 3)), rng.uniform(-np.pi, np.pi, 5)]
    A = pose_from_xyz_yaw(3, 4, 0.2, 2.5)
    B = pose_from_xyz_yaw(-7, 1, -0.1, -2.9)
    two_steps = transform_boxes(transform_boxes(boxes, A), B)
    one_step = transform_boxes(boxes, B @ A)
    np.testing.assert_allclose(two_steps[:, :6], one_step[:, :6], atol=1e-9)
    np.testing.assert_allclose(wrap_angle(two_steps[:, 6] - one_step[:, 6]), 0, atol=1e-9)
    back = transform_boxes(one_step, np.linalg.inv(B @ A))
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    np.testing.assert_allclose(wrap_angle(back[:, 6] - boxes[:, 6]), 0, atol=1e-9)
    assert np.all((one_step[:, 6] >= -np.pi) & (one_step[:, 6] < np.pi))


def test_transform_boxes_keeps_points_inside():
    rng = np.random.default_rng(2)
    box = np.array([[4, -3, 0.5, 4.5, 1.8, 1.6, 0.7]])
    pts = rng.uniform(-10, 10, (4000, 3))
    T = pose_from_xyz_yaw(100, 50, 2, -1.1)
    moved = pts @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_array_equal(points_in_boxes(pts, box), points_in_boxes(moved, transform_boxes(box, T)))


def test_wrap_angle():
    a = np.array([0, np.pi, -np.pi, 3 * np.pi / 2, -3 * np.pi / 2, 2 * np.pi + 0.1, -0.1, 7 * np.pi])
    out = wrap_angle(a)
    np.testing.assert_allclose(out, [0, -np.pi, -np.pi, -np.pi / 2, np.pi / 2, 0.1, -0.1, -np.pi], atol=1e-12)
    assert np.all((out >= -np.pi) & (out < np.pi))
    assert float(wrap_angle(0.5)) == pytest.approx(0.5)
