"""Lossless round trip: predictions pushed on non-square BEV grids, exported unchanged, converted back to the same
3D boxes (1 cm, 0.1 deg); an annotation that keeps every region pulls as all-accepted with the same boxes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from labeler.classes import CLASSES
from labeler.geometry.bev import BevGrid
from labeler.geometry.boxes import wrap_angle
from labeler.io.tables import read_table
from labeler.review.pull import pull_run
from labeler.studio.convert import parse_result
from labeler.studio.push import ensure_local_storage, ensure_project, export_tasks, push_tasks
from tests.review import CAMS, make_run_dir, make_task, uid, write_review_tasks

pytestmark = pytest.mark.studio

GRIDS = [BevGrid(-40.0, 60.0, -40.0, 40.0, 0.1),   # 800 x 1000 px (the default)
         BevGrid(-10.0, 70.0, -15.0, 25.0, 0.25)]  # 160 x 320 px, off-centre
YAWS = [0.3, 1.9, -2.6, -0.7, 0.0, math.pi / 2, -math.pi, -math.pi / 2]  # every quadrant and the axes


def _boxes(grid: BevGrid, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(YAWS)
    return np.column_stack([rng.uniform(grid.x_min_m + 3, grid.x_max_m - 3, n), rng.uniform(grid.y_min_m + 3, grid.y_max_m - 3, n),
                            rng.uniform(-1.5, 0.5, n), rng.uniform(0.5, 12, n), rng.uniform(0.4, 3, n),
                            rng.uniform(0.7, 3.5, n), YAWS])


def _close(a, b):
    a, b = np.asarray(a).reshape(-1, 7), np.asarray(b).reshape(-1, 7)
    np.testing.assert_allclose(a[:, :6], b[:, :6], atol=0.01, rtol=0)
    assert np.all(np.abs(wrap_angle(a[:, 6] - b[:, 6])) < math.radians(0.1))


def test_push_export_convert_back(studio, studio_client, tmp_path):
    if studio.document_root is None:
        pytest.skip("external server without LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    ls = studio_client
    assets = Path(studio.document_root) / f"rt-{uid()}"
    log_id = f"rt_{uid()}"
    cats = [CLASSES[i % len(CLASSES)] for i in range(len(YAWS))]
    tasks = [make_task(assets, log_id, 1000 + i, g, _boxes(g, i), cats, [f"o{k}" for k in range(len(YAWS))])
             for i, g in enumerate(GRIDS)]
    pid = ensure_project(ls, f"roundtrip {uid()}", list(CLASSES), CAMS)
    ensure_local_storage(ls, pid, str(assets), str(studio.document_root))
    pushed = push_tasks(ls, pid, tasks, str(studio.document_root))

    exported = {t["data"]["frame_key"]: t for t in export_tasks(ls, pid)}
    for t in tasks:
        e = exported[t.frame_key]
        grid = BevGrid(**e["data"]["bev_grid"])
        assert grid == t.bev_grid and grid.width_px != grid.height_px
        back = parse_result(e["predictions"][0]["result"], grid)
        by = {e["data"]["object_ids"][b["id"]]: b for b in back["bev"]}
        _close(np.stack([by[o]["box"] for o in t.object_ids]), t.boxes)
        assert [by[o]["label"] for o in t.object_ids] == cats

    # the reviewer submits every pre-annotation unchanged -> all accepted, labels == predictions
    for p in pushed:
        pred = ls.predictions.list(task=p.task_id)[0]
        ls.annotations.create(id=p.task_id, result=pred.result, parent_prediction=pred.id, lead_time=1.0)
    run = tmp_path / "runs" / "rt"
    make_run_dir(run, "run-rt", tasks, [])
    write_review_tasks(run, "run-rt", pid, tasks, pushed)
    pull_run(str(run), ls, export=False)
    log = read_table(str(run), "review_log").to_pylist()
    assert len(log) == 2 * len(YAWS) and {r["action"] for r in log} == {"accepted"}
    assert max(r["centre_shift_m"] for r in log) < 1e-6 and min(r["bev_iou"] for r in log) > 0.9999
    labels = read_table(str(run), "labels").to_pylist()
    for t in tasks:
        got = {r["object_id"]: [r[c] for c in "x y z l w h yaw".split()] for r in labels if r["timestamp_ns"] == t.timestamp_ns}
        _close(np.array([got[o] for o in t.object_ids]), t.boxes)
