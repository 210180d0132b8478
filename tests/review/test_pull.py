"""An annotator played through the API (move, delete, add, relabel, skip, bad frame) -> `labeler pull` -> the exact
review log and labels. Plus KITTI / nuScenes export conventions (pure)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from labeler.classes import CLASSES
from labeler.geometry.bev import BevGrid
from labeler.geometry.boxes import bev_iou
from labeler.geometry.camera import CameraCalib
from labeler.io.tables import read_table, write_part
from labeler.review.export import export_labels, kitti_lines
from labeler.review.pull import pull_run
from labeler.schemas import FRAME_SCORES, to_table
from labeler.studio.convert import bev_result_items, camera_result_item
from labeler.studio.push import ensure_local_storage, ensure_project, push_tasks
from tests.review import CAMS, make_run_dir, make_task, uid, write_review_tasks

GRID = BevGrid(x_min_m=-20.0, x_max_m=60.0, y_min_m=-30.0, y_max_m=30.0, m_per_px=0.5)  # 120 x 160 px
T0 = 1_700_000_000_000_000_000
A = [10.0, 5.0, -0.8, 4.5, 1.9, 1.6, 0.3]
B = [20.0, -5.0, -0.9, 4.0, 1.8, 1.5, -2.0]
C = [30.0, 10.0, -0.5, 8.0, 2.5, 3.0, 2.5]
D = [15.0, -15.0, -1.0, 0.6, 0.6, 1.7, -1.0]
NEW = [40.0, 0.0, -0.7, 4.2, 1.8, 1.5, 1.0]


def _verdict(v):
    return {"id": "verdict1", "from_name": "verdict", "to_name": "bev", "type": "choices", "value": {"choices": [v]}}


@pytest.mark.studio
def test_annotator_actions_to_review_log_and_labels(studio, studio_client, tmp_path, monkeypatch, capsys):
    if studio.document_root is None:
        pytest.skip("external server without LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    ls = studio_client
    assets = Path(studio.document_root) / f"review-{uid()}"
    log_id = f"log_{uid()}"
    cam0 = [("a", 3.5, 4.25, 30.0, 40.0, "car", 0.8), ("d", 40.0, 10.0, 50.0, 30.0, "pedestrian", 0.6)]
    f0 = make_task(assets, log_id, T0, GRID, [A, B, C, D], ["car", "car", "car", "pedestrian"], ["a", "b", "c", "d"], cam0)
    f1 = make_task(assets, log_id, T0 + 1, GRID, [A], ["car"], ["a"])
    f2 = make_task(assets, log_id, T0 + 2, GRID, [A, B], ["car", "car"], ["a", "b"])
    f3 = make_task(assets, log_id, T0 + 3, GRID, [C], ["car"], ["c"])
    auto = make_task(assets, log_id, T0 + 4, GRID, [B, D], ["car", "pedestrian"], ["b", "d"],
                     [("b", 1.0, 2.0, 10.0, 12.0, "car", 0.9)], scores=[0.95, 0.9])
    review = [f0, f1, f2, f3]
    run = tmp_path / "runs" / "test"
    make_run_dir(run, "run-T", review, [auto])
    write_part(str(run), FRAME_SCORES, to_table(FRAME_SCORES, [
        {"log_id": log_id, "timestamp_ns": f.timestamp_ns, "run_id": "run-T", "confidence": 0.5, "priority": 2.0,
         "reasons": ["rare_class:t0001", "tta_disagreement:t0002", "tta_disagreement:t0003"], "num_boxes": len(f.boxes),
         "decision": "review", "model_version": "det-v1", "labels_source": "raw"} for f in review]), "0")

    pid = ensure_project(ls, f"pull {uid()}", list(CLASSES), CAMS)
    ensure_local_storage(ls, pid, str(assets), str(studio.document_root))
    pushed = push_tasks(ls, pid, review, str(studio.document_root))
    write_review_tasks(run, "run-T", pid, review, pushed)
    tid = {p.frame_key: p.task_id for p in pushed}
    pred = {k: ls.predictions.list(task=t)[0] for k, t in tid.items()}
    me = ls.users.whoami().email

    # frame 0: move a by 0.5 m, delete b, relabel c, accept d, add one box; camera: move a by 10 px, delete d, add one
    moved = list(A)
    moved[0] += 0.5
    result = (bev_result_items(moved, "car", "a", GRID) + bev_result_items(C, "truck", "c", GRID)
              + bev_result_items(D, "pedestrian", "d", GRID) + bev_result_items(NEW, "car", "new1", GRID)
              + [camera_result_item("front", "a", 13.5, 4.25, 40.0, 40.0, "car", 64, 48),
                 {**camera_result_item("front", "x", 2.0, 3.0, 12.0, 20.0, "cyclist", 64, 48), "id": "front_new"},
                 _verdict("needs_fix")])
    a0 = ls.annotations.create(id=tid[f0.frame_key], result=result, parent_prediction=pred[f0.frame_key].id, lead_time=42.5)
    # frame 1: skipped
    ls.annotations.create(id=tid[f1.frame_key], result=[], was_cancelled=True, lead_time=5.0,
                          parent_prediction=pred[f1.frame_key].id)
    # frame 2: boxes untouched, frame marked bad
    a2 = ls.annotations.create(id=tid[f2.frame_key], result=list(pred[f2.frame_key].result) + [_verdict("bad_frame")],
                               parent_prediction=pred[f2.frame_key].id, lead_time=7.0)
    # frame 3: nobody looked at it yet

    res = pull_run(str(run), ls)
    assert (res.frames_reviewed, res.frames_skipped, res.frames_pending, res.frames_bad, res.frames_auto) == (2, 1, 1, 1, 1)

    rows = read_table(str(run), "review_log").to_pylist()
    got = [(r["timestamp_ns"] - T0, r["view"], r["object_id"], r["region_id"], r["action"], r["old_category"],
            r["new_category"], r["verdict"], r["annotation_id"], r["task_id"], r["reviewer"], r["lead_time_s"]) for r in rows]
    n0 = (a0.id, tid[f0.frame_key], me, 42.5)
    n2 = (a2.id, tid[f2.frame_key], me, 7.0)
    assert got == [
        (0, "bev", "a", "a", "edited", "car", "car", "needs_fix", *n0),
        (0, "bev", "b", "b", "deleted", "car", None, "needs_fix", *n0),
        (0, "bev", "c", "c", "relabelled", "car", "truck", "needs_fix", *n0),
        (0, "bev", "d", "d", "accepted", "pedestrian", "pedestrian", "needs_fix", *n0),
        (0, "bev", "human_new1", "new1", "added", None, "car", "needs_fix", *n0),
        (0, "front", "a", "front-a", "edited", "car", "car", "needs_fix", *n0),
        (0, "front", "d", "front-d", "deleted", "pedestrian", None, "needs_fix", *n0),
        (0, "front", "human_front_new", "front_new", "added", None, "cyclist", "needs_fix", *n0),
        (2, "bev", "a", "a", "accepted", "car", "car", "bad_frame", *n2),
        (2, "bev", "b", "b", "accepted", "car", "car", "bad_frame", *n2),
        (2, "frame", "", None, "bad_frame", None, None, "bad_frame", *n2),
    ]
    by = {(r["timestamp_ns"] - T0, r["view"], r["object_id"]): r for r in rows}
    ra = by[(0, "bev", "a")]
    assert ra["centre_shift_m"] == pytest.approx(0.5, abs=1e-9)
    assert ra["yaw_change_rad"] == pytest.approx(0.0, abs=1e-9) and ra["size_change_m"] == pytest.approx(0.0, abs=1e-9)
    assert ra["bev_iou"] == pytest.approx(bev_iou(np.array([A]), np.array([moved]))[0, 0], abs=1e-9)
    rc = by[(0, "bev", "c")]
    assert rc["centre_shift_m"] == pytest.approx(0, abs=1e-9) and rc["bev_iou"] == pytest.approx(1.0, abs=1e-9)
    assert by[(0, "bev", "d")]["bev_iou"] == pytest.approx(1.0, abs=1e-9)
    assert by[(0, "front", "a")]["centre_shift_px"] == pytest.approx(10.0, abs=1e-9)
    assert by[(0, "bev", "b")]["centre_shift_m"] is None

    frames = {r["timestamp_ns"] - T0: r for r in read_table(str(run), "review_frames").to_pylist()}
    assert [(k, f["status"], f["verdict"], f["lead_time_s"], f["skipped_lead_time_s"], f["num_predicted"], f["num_final"])
            for k, f in sorted(frames.items())] == [
        (0, "reviewed", "needs_fix", 42.5, 0.0, 4, 4), (1, "skipped", None, None, 5.0, 1, 0),
        (2, "reviewed", "bad_frame", 7.0, 0.0, 2, 2), (3, "pending", None, None, 0.0, 1, 0)]

    labels = read_table(str(run), "labels").to_pylist()
    assert [(r["timestamp_ns"] - T0, r["object_id"], r["category"], r["provenance"], r["score"], r["reviewer"],
             r["annotation_id"]) for r in labels] == [
        (0, "a", "car", "human", None, me, a0.id), (0, "c", "truck", "human", None, me, a0.id),
        (0, "d", "pedestrian", "human", None, me, a0.id), (0, "human_new1", "car", "human", None, me, a0.id),
        (4, "b", "car", "auto", 0.95, None, None), (4, "d", "pedestrian", "auto", 0.9, None, None)]
    for r, want in zip(labels, [moved, C, D, NEW, B, D]):
        np.testing.assert_allclose([r[c] for c in "x y z l w h".split()], want[:6], atol=1e-6)
        assert abs(math.remainder(r["yaw"] - want[6], 2 * math.pi)) < 1e-6
    assert all(r["model_version"] == "det-v1" and r["run_id"] == "run-T" for r in labels)
    l2 = read_table(str(run), "labels_2d").to_pylist()
    assert [(r["timestamp_ns"] - T0, r["camera"], r["object_id"], r["category"], r["provenance"]) for r in l2] == [
        (0, "front", "a", "car", "human"), (0, "front", "human_front_new", "cyclist", "human"), (4, "front", "b", "car", "auto")]
    np.testing.assert_allclose([l2[0][c] for c in ("x1", "y1", "x2", "y2")], [13.5, 4.25, 40.0, 40.0], atol=1e-9)

    # exports: frames 0 and 4 only (bad, skipped and pending frames excluded); no calibration -> LiDAR convention
    kdir = run / "labels" / "kitti" / log_id / "label_2"
    assert sorted(p.name for p in kdir.iterdir()) == [f"{T0}.txt", f"{T0 + 4}.txt"]
    assert len((kdir / f"{T0}.txt").read_text().splitlines()) == 4
    nus = json.loads((run / "labels" / "nuscenes_results.json").read_text())
    assert sorted(nus["results"]) == [f"{log_id}/{T0}", f"{log_id}/{T0 + 4}"]
    assert {b["detection_name"] for b in nus["results"][f"{log_id}/{T0}"]} == {"car", "truck", "pedestrian"}

    # `labeler pull` again (the CLI, server from the environment) gives the same tables (replaced, not appended)
    monkeypatch.setenv("LABEL_STUDIO_URL", studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio.api_key)
    assert _cli(["pull", "--run", str(run)]) == 0
    assert "edited 2" in capsys.readouterr().out
    assert read_table(str(run), "review_log").to_pylist() == rows
    assert _cli(["report", "review", "--run", str(run)]) == 0
    assert (run / "review" / "effort.png").exists() and "efficiency ratio" in capsys.readouterr().out

    # the CLI pull put the reviewed frame (not the bad one, not the skipped or pending ones) into the corner-case
    # bank of the run's state dir, with its final labels and why it was reviewed; pulling again adds nothing
    from labeler.refine.bank import read_bank

    bank_frames, bank_labels, version = read_bank(str(tmp_path))
    assert version == 1 and [(r.log_id, r.timestamp_ns - T0) for r in bank_frames.itertuples()] == [(log_id, 0)]
    assert list(bank_frames.kinds[0]) == ["rare_class", "tta_disagreement"]
    assert sorted(bank_labels.track_id) == ["a", "c", "d", "human_new1"]
    assert sorted(bank_labels.category) == ["car", "car", "pedestrian", "truck"]
    assert _cli(["pull", "--run", str(run)]) == 0 and read_bank(str(tmp_path))[2] == 1


def _cli(argv) -> int:
    import argparse

    from labeler.cli import build_parser
    from labeler.review import cli as review_cli

    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    if "pull" not in sub.choices:  # until labeler.cli calls review_cli.add_parsers(sub) itself
        review_cli.add_parsers(sub)
    args = p.parse_args(argv)
    return args.func(args)


def test_kitti_camera_and_lidar_conventions(tmp_path):
    # a KITTI-like rig: camera x = -lidar y, camera y = -lidar z, camera z = lidar x
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [0, 0, -1], [1, 0, 0]]
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    cal = CameraCalib("front", K, T, 640, 480)
    box = np.array([[10.0, 2.0, -1.0, 4.0, 2.0, 1.5, 0.4]])
    (line,) = kitti_lines(box, ["car"], cal)
    f = line.split()
    assert f[0] == "Car" and f[2] == "3"
    h, w, l, x, y, z, ry = map(float, f[8:15])
    assert (h, w, l) == (1.5, 2.0, 4.0)
    np.testing.assert_allclose([x, y, z], [-2.0, 1.0 + 0.75, 10.0], atol=1e-4)  # bottom centre in the camera frame
    assert ry == pytest.approx(-0.4 - math.pi / 2, abs=1e-6)  # the KITTI relation ry = -yaw - pi/2 for this rig
    assert float(f[3]) == pytest.approx(ry - math.atan2(x, z), abs=1e-5)
    x1, y1, x2, y2 = map(float, f[4:8])
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
    (lid,) = kitti_lines(box, ["car"], None)
    assert lid.split()[3] == "-10.00" and list(map(float, lid.split()[11:15])) == pytest.approx([10.0, 2.0, -1.75, 0.4])

    labels = [{"log_id": "L", "timestamp_ns": 5, "x": 10.0, "y": 2.0, "z": -1.0, "l": 4.0, "w": 2.0, "h": 1.5, "yaw": 0.4,
               "category": "cyclist", "score": None}]
    files = export_labels(str(tmp_path), labels, calibrations={"L": {"front": cal}}, frames=[("L", 6)])
    k = Path(files["kitti"])
    assert json.loads((k / "manifest.json").read_text()) == {"L/5": "camera:front", "L/6": "camera:front"}
    assert (k / "L" / "label_2" / "6.txt").read_text() == ""  # a frame without boxes still gets its (empty) file
    assert "Tr_velo_to_cam" in (k / "L" / "calib" / "5.txt").read_text()
    (b,) = json.loads(Path(files["nuscenes"]).read_text())["results"]["L/5"]
    assert b["size"] == [2.0, 4.0, 1.5] and b["detection_name"] == "bicycle" and b["detection_score"] == 1.0
    assert b["rotation"] == pytest.approx([math.cos(0.2), 0, 0, math.sin(0.2)])
