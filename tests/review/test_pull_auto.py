"""Labels of auto-accepted frames in `labeler pull`: exactly what the run accepted (``accepted_3d``: refined or raw
boxes), 2D boxes from ``boxes_2d`` for raw labels and projected from the log's calibration for refined ones; older
runs (no ``accepted_3d``) keep every prediction. Pure: a run folder written here and a tiny simulated log."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from labeler.geometry.camera import boxes_to_2d
from labeler.io.tables import write_part, write_run_record
from labeler.logs.native import read_log_index
from labeler.review.pull import _auto_labels
from labeler.schemas import ACCEPTED_3D, to_table
from tests.review import make_run_dir, make_task

T0 = 1_700_000_000_000_000_000
RAW_A = [10.0, 2.0, -0.9, 4.5, 1.9, 1.6, 0.1]
RAW_B = [25.0, -4.0, -0.9, 4.4, 1.8, 1.5, 0.0]          # a raw box the refiner dropped: not a label
REFINED = [10.3, 2.1, -0.85, 4.6, 1.9, 1.6, 0.05]       # the refined box of raw a's track


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    from labeler.simulate import SimConfig, simulate_logs

    (path,) = simulate_logs(str(tmp_path_factory.mktemp("sim")), num_logs=1, seed=7,
                            cfg=SimConfig(duration_s=0.1, image_width=64, image_height=36), workers=1, progress=False)
    return path


def _write(tmp_path, log_id, inputs, with_accepted=True):
    run = tmp_path / "run"
    assets = tmp_path / "assets"
    from tests.review.test_pull import GRID

    t = make_task(assets, log_id, T0, GRID, [RAW_A, RAW_B], ["car", "car"], ["a", "b"],
                  cam_boxes=[("a", 10.0, 10.0, 20.0, 20.0, "car", 0.9), ("b", 30.0, 10.0, 40.0, 20.0, "car", 0.8)],
                  scores=[0.9, 0.8])
    make_run_dir(run, "run-A", [], [t])
    record = {"run_id": "run-A", "night": "test", "inputs": inputs}
    if with_accepted:
        record["labels_source"] = {log_id: "refined"}
        rows = [{"log_id": log_id, "timestamp_ns": T0, "object_id": "a", "run_id": "run-A", "source_table": "predictions_3d",
                 "track_id": "t0", **dict(zip("x y z l w h yaw".split(), RAW_A)), "category": "car", "score": 0.9,
                 "model_version": "m1"},
                {"log_id": log_id, "timestamp_ns": T0, "object_id": "r000", "run_id": "run-A", "source_table": "refined_3d",
                 "track_id": "t0", **dict(zip("x y z l w h yaw".split(), REFINED)), "category": "car", "score": 0.85,
                 "model_version": "m1"}]
        write_part(str(run), ACCEPTED_3D, to_table(ACCEPTED_3D, rows), "0")
    write_run_record(str(run), record)
    return str(run), record


def test_auto_labels_are_the_accepted_boxes_with_projected_2d(tmp_path, log):
    idx = read_log_index(log)
    run, record = _write(tmp_path, idx.log_id, [{"path": log, "format": "native"}])
    labels, labels_2d, keys = _auto_labels(run, "run-A", record)
    assert keys == {(idx.log_id, T0)}
    assert sorted(x["object_id"] for x in labels) == ["a", "r000"]  # raw b was not accepted
    refined = next(x for x in labels if x["object_id"] == "r000")
    assert [refined[c] for c in "x y z l w h yaw".split()] == REFINED
    # raw label a: its boxes_2d rows as written by the run; refined r000: projected with the log's calibration
    assert {x["object_id"] for x in labels_2d if x["object_id"] != "r000"} == {"a"}
    proj = {x["camera"]: x for x in labels_2d if x["object_id"] == "r000"}
    assert proj, "the refined box is in front of the front camera and must have a 2D box there"
    for cam, x in proj.items():
        bx, vis, _, depth = boxes_to_2d(idx.cameras[cam], np.array([REFINED]))
        assert vis[0] and depth[0] > 0
        assert np.allclose([x["x1"], x["y1"], x["x2"], x["y2"]], bx[0])


def test_refined_labels_keep_3d_when_the_log_is_gone_and_old_runs_keep_every_prediction(tmp_path, caplog):
    run, record = _write(tmp_path, "gone-log", [{"path": str(tmp_path / "nope"), "format": "native"}])
    with caplog.at_level(logging.WARNING, logger="labeler.review.pull"):
        labels, labels_2d, _ = _auto_labels(run, "run-A", record)
    assert sorted(x["object_id"] for x in labels) == ["a", "r000"]
    assert all(x["object_id"] == "a" for x in labels_2d)
    assert "gone-log" in caplog.text and "no 2D boxes" in caplog.text
    old_run, old_record = _write(tmp_path / "old", "old-log", [], with_accepted=False)
    labels, _, _ = _auto_labels(old_run, "run-A", old_record)
    assert sorted(x["object_id"] for x in labels) == ["a", "b"]
