"""Cluster proposals on hand-made scenes whose right answer is known: a car-shaped point cluster nobody detected
becomes one car-sized car proposal; a cluster inside a detection's footprint, a wall and a small cluster do not;
proposals that form a track survive refinement, a lone one does not."""

import numpy as np
import pandas as pd
import pytest

from labeler.geometry.transforms import pose_from_xyz_yaw
from labeler.refine.proposals import PROPOSAL_COLUMNS, ClusterBoxes, ProposalCfg, cluster_boxes, frame_proposals, log_proposals
from labeler.refine.signals import above_ground_clusters
from labeler.refine.smoothing import RefineCfg, refine_log

GROUND_Z = -1.8
T0 = 3_000_000_000_000


def _box_surface(cx, cy, yaw, l, w, h, step=0.1):
    """Points on the four vertical faces and the top of a box standing on the ground (LiDAR frame)."""
    u = np.arange(-l / 2, l / 2 + 1e-9, step)
    v = np.arange(-w / 2, w / 2 + 1e-9, step)
    z = np.arange(GROUND_Z + 0.05, GROUND_Z + h + 1e-9, step)
    faces = []
    for a, b in ((u, np.full_like(u, -w / 2)), (u, np.full_like(u, w / 2)), (np.full_like(v, -l / 2), v), (np.full_like(v, l / 2), v)):
        A, Z = np.meshgrid(a, z)
        B, _ = np.meshgrid(b, z)
        faces.append(np.c_[A.ravel(), B.ravel(), Z.ravel()])
    U, V = np.meshgrid(u, v)
    faces.append(np.c_[U.ravel(), V.ravel(), np.full(U.size, GROUND_Z + h)])
    p = np.vstack(faces)
    c, s = np.cos(yaw), np.sin(yaw)
    return np.c_[cx + c * p[:, 0] - s * p[:, 1], cy + s * p[:, 0] + c * p[:, 1], p[:, 2]]


def _scene(car=(12.0, 6.0, 0.3), extra=()):
    """Flat ground 50 x 50 m, a car (4.5 x 1.85 x 1.5 m) at ``car`` = (x, y, yaw), a 20 m wall at y = -15."""
    g = np.arange(-25, 25, 0.3)
    X, Y = np.meshgrid(g, g)
    ground = np.c_[X.ravel(), Y.ravel(), np.full(X.size, GROUND_Z)]
    wall = _box_surface(0.0, -15.0, 0.0, 20.0, 0.3, 2.0)
    parts = [ground, wall, _box_surface(*car, 4.5, 1.85, 1.5), *extra]
    return np.vstack(parts)


@pytest.fixture(scope="module")
def scene_boxes():
    return cluster_boxes(_scene())


def test_a_car_shaped_cluster_nobody_detected_becomes_one_car_proposal_of_its_size(scene_boxes):
    cb = scene_boxes
    assert len(cb.clusters) == 2                                   # the car and the wall
    p = frame_proposals(cb, np.zeros((0, 7)), ProposalCfg(score_by_class={}, score=0.45))
    assert len(p) == 1                                             # the wall fits no class: no proposal
    r = p.iloc[0]
    assert r["category"] == "car" and r["score"] == 0.45 and r["num_points"] >= 40
    assert np.hypot(r["x"] - 12.0, r["y"] - 6.0) < 0.2
    assert abs(r["l"] - 4.5) < 0.3 and abs(r["w"] - 1.85) < 0.3 and abs(r["h"] - 1.5) < 0.3
    d = (r["yaw"] - 0.3 + np.pi / 2) % np.pi - np.pi / 2          # heading up to 180 deg
    assert abs(d) < np.radians(4)


def test_clusters_equal_the_signal_clusters_of_the_same_points(scene_boxes):
    np.testing.assert_allclose(scene_boxes.clusters, above_ground_clusters(_scene()))


def test_a_cluster_inside_a_detection_footprint_is_explained(scene_boxes):
    det = np.array([[12.3, 6.2, -1.0, 4.0, 1.8, 1.5, 0.0]])        # centre within the footprint (+ 0.5 m)
    assert len(frame_proposals(scene_boxes, det, ProposalCfg(score_by_class={}))) == 0
    far = np.array([[20.0, 6.0, -1.0, 4.0, 1.8, 1.5, 0.0]])
    assert len(frame_proposals(scene_boxes, far, ProposalCfg(score_by_class={}))) == 1


def test_settings_too_few_points_class_off_out_of_range(scene_boxes):
    assert len(frame_proposals(scene_boxes, np.zeros((0, 7)), ProposalCfg(score_by_class={}, min_points=10**6))) == 0
    assert len(frame_proposals(scene_boxes, np.zeros((0, 7)), ProposalCfg(score_by_class={"car": 0.0}))) == 0
    assert len(frame_proposals(scene_boxes, np.zeros((0, 7)), ProposalCfg(score_by_class={}, max_range_m=10.0))) == 0
    assert len(frame_proposals(scene_boxes, np.zeros((0, 7)), ProposalCfg(score_by_class={}, max_height_m=1.2))) == 0
    assert len(frame_proposals(scene_boxes, np.zeros((0, 7)), ProposalCfg(score_by_class={}, max_extent_m=3.0))) == 0
    unfit = cluster_boxes(_scene(), fit_min_points=10**6)            # clusters kept, no boxes fitted
    assert len(unfit.clusters) == 2 and np.isnan(unfit.boxes).all()
    assert len(frame_proposals(unfit, np.zeros((0, 7)), ProposalCfg(score_by_class={}))) == 0
    assert len(frame_proposals(ClusterBoxes.empty(), np.zeros((0, 7)), ProposalCfg(score_by_class={}))) == 0
    rt = ClusterBoxes.from_dict(scene_boxes.to_dict())
    assert len(frame_proposals(rt, np.zeros((0, 7)), ProposalCfg(score_by_class={}))) == 1


def test_a_pedestrian_sized_cluster_is_a_pedestrian():
    cb = cluster_boxes(_scene(extra=[_box_surface(-8.0, 9.0, 0.0, 0.6, 0.6, 1.75, step=0.05)]))
    p = frame_proposals(cb, np.zeros((0, 7)), ProposalCfg(score_by_class={}))
    assert sorted(p["category"]) == ["car", "pedestrian"]


def test_an_end_on_truck_face_is_a_truck_along_the_line_of_sight_and_the_default_proposes_only_trucks():
    # the rear face of a truck 30 m ahead (2.5 m wide, 3.2 m tall, a few cm deep): the truck extends away from us
    face = _box_surface(30.0, 0.0, 0.0, 0.1, 2.5, 3.2, step=0.08)
    cb = cluster_boxes(_scene(extra=[face]))
    p = frame_proposals(cb, np.zeros((0, 7)), ProposalCfg())     # the chosen default: trucks only
    assert len(p) == 1                                               # the car is not proposed by default
    r = p.iloc[0]
    assert r["category"] == "truck" and r["score"] == ProposalCfg().score
    assert abs(r["l"] - 8.0) < 0.3 and abs(r["w"] - 2.5) < 0.3      # the class's typical length, the face's width
    assert abs(np.sin(r["yaw"])) < 0.05                              # along x: the line of sight, not across it
    assert 30.0 + 3.5 < r["x"] < 30.0 + 4.5                          # grown away from the sensor from the face


def _static_proposals(n_frames, x=15.0, y=4.0):
    per = {}
    for k in range(n_frames):
        per[T0 + k * 500_000_000] = pd.DataFrame([{"x": x + 0.05 * (-1) ** k, "y": y, "z": -1.0, "l": 4.4, "w": 1.8,
                                                  "h": 1.5, "yaw": 0.1 + (np.pi if k == 2 else 0.0),
                                                  "category": "car", "score": 0.5, "num_points": 120}])
    return log_proposals(per)


def test_proposals_that_form_a_track_survive_refinement_and_are_tagged():
    poses = {T0 + k * 500_000_000: pose_from_xyz_yaw(0, 0, 0, 0) for k in range(8)}
    det = pd.DataFrame([{"timestamp_ns": T0 + k * 500_000_000, "object_id": "p000", "x": -10.0 + 0.1 * k, "y": 0.0,
                         "z": -1.0, "l": 4.5, "w": 1.9, "h": 1.6, "yaw": 0.0, "category": "car", "score": 0.8,
                         "num_points": 90} for k in range(8)])
    props = _static_proposals(8)
    assert list(props.columns) == PROPOSAL_COLUMNS and props["object_id"].str.startswith("c").all()
    refined, raw = refine_log(det, poses, log_id="L", proposals=props)
    r = refined.to_pandas()
    prop = r[r["source"] == "proposal"]
    assert len(prop) == 8 and prop["track_id"].nunique() == 1 and prop["raw_object_id"].isna().all()
    assert np.allclose(prop["x"], 15.0, atol=0.1) and prop["score"].iloc[0] < 0.5   # weak: track score of proposals
    assert (r.loc[r["source"] == "detected", "raw_object_id"] == "p000").all()
    rw = raw.to_pandas()                                            # raw = the detector's rows only
    assert len(rw) == len(det) and set(rw["object_id"]) == {"p000"}
    # without proposals the refined boxes are exactly the detector's
    alone, _ = refine_log(det, poses, log_id="L")
    assert len(alone) == len(r) - len(prop)


def test_a_lone_proposal_is_dropped_as_a_short_weak_track():
    poses = {T0 + k * 500_000_000: pose_from_xyz_yaw(0, 0, 0, 0) for k in range(8)}
    det = pd.DataFrame(columns=["timestamp_ns", "object_id", "x", "y", "z", "l", "w", "h", "yaw", "category", "score",
                                "num_points"])
    refined, raw = refine_log(det, poses, log_id="L", proposals=_static_proposals(1))
    assert refined.num_rows == 0 and raw.num_rows == 0


def test_proposals_missing_columns_say_how_to_fix():
    poses = {T0: pose_from_xyz_yaw(0, 0, 0, 0)}
    with pytest.raises(ValueError, match="log_proposals"):
        refine_log(pd.DataFrame(), poses, proposals=pd.DataFrame([{"timestamp_ns": T0, "x": 1.0}]))


def test_refine_overrides_reach_the_proposal_settings():
    from labeler.errors import ConfigError
    from labeler.refine.cli import _refine_cfg

    r = _refine_cfg(["proposals.enabled=true", "proposals.score=0.55", "proposals.score_by_class=truck=0.4,bus=0.6"])
    assert r.proposals == ProposalCfg(enabled=True, score=0.55, score_by_class={"truck": 0.4, "bus": 0.6})
    assert _refine_cfg(["proposals.enabled=false"]).proposals.enabled is False
    assert RefineCfg().proposals == ProposalCfg()
    with pytest.raises(ConfigError, match="true or false"):
        _refine_cfg(["proposals.enabled=maybe"])
    with pytest.raises(ConfigError, match=r"unknown setting.*proposals.<name>"):
        _refine_cfg(["proposals.nope=1"])


def _car_rows(n, x=0.0, score=0.6):
    return pd.DataFrame([{"timestamp_ns": T0 + k * 500_000_000, "object_id": "p000", "x": x, "y": 0.0, "z": -1.0,
                          "l": 4.5, "w": 1.9, "h": 1.6, "yaw": 0.0, "category": "car", "score": score,
                          "num_points": 90} for k in range(n)])


def test_a_proposal_never_lowers_a_detected_tracks_score_class_or_size():
    poses = {T0 + k * 500_000_000: pose_from_xyz_yaw(0, 0, 0, 0) for k in range(8)}
    det = _car_rows(2)                                               # the detector sees the car twice, then
    truck = {"x": 0.1, "y": 0.0, "z": -0.5, "l": 8.0, "w": 2.5, "h": 3.0, "yaw": 0.0, "category": "truck",
             "score": 0.35, "num_points": 60}                        # six proposals (an 8 m truck) carry it on
    prop = log_proposals({T0 + k * 500_000_000: pd.DataFrame([truck]) for k in range(2, 8)})
    both = refine_log(det, poses, log_id="L", proposals=prop)[0].to_pandas()
    assert both["track_id"].nunique() == 1 and (both["source"] == "proposal").sum() == 6
    assert set(both["category"]) == {"car"} and np.allclose(both["l"], 4.5)   # class and size: the detector's
    # score: the detector's boxes' 75th percentile, the proposals' frames counting as seen (8 frames)
    assert np.isclose(both["score"].iloc[0], 0.6 * (1 - np.exp(-8 / 4)))
    mixed = refine_log(det, poses, log_id="L", proposals=prop,
                       cfg=RefineCfg(proposals=ProposalCfg(detector_first=False)))[0].to_pandas()
    assert set(mixed["category"]) == {"truck"} and mixed["score"].iloc[0] < both["score"].iloc[0]


def test_a_proposal_only_track_never_suppresses_a_detected_box():
    poses = {T0 + k * 500_000_000: pose_from_xyz_yaw(0, 0, 0, 0) for k in range(8)}
    det = _car_rows(8, score=0.35)                                   # a weak car track
    props = _static_proposals(8, x=1.0, y=0.0)                       # a stronger proposal track overlapping it
    props["score"] = 0.9
    r = refine_log(det, poses, log_id="L", proposals=props)[0].to_pandas()
    assert (r["source"] == "detected").sum() == 8 and (r["source"] == "proposal").sum() == 0
