"""Project set-up and idempotent task push against a real server, read back through an export."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from label_studio_sdk import LabelStudio
from PIL import Image

from labeler.classes import CLASSES
from labeler.errors import StudioError
from labeler.geometry.bev import BevGrid
from labeler.geometry.boxes import wrap_angle
from labeler.studio.convert import parse_result, region_id
from labeler.studio.labeling_config import build_labeling_config
from labeler.studio.push import MISSING_IMAGE, ensure_local_storage, ensure_project, export_tasks, list_frame_tasks, push_tasks
from labeler.studio.server import free_port
from labeler.studio.tasks import CameraView, ReviewTask

pytestmark = pytest.mark.studio

GRID = BevGrid(x_min_m=-20.0, x_max_m=60.0, y_min_m=-30.0, y_max_m=30.0, m_per_px=0.5)  # 120 x 160 px
CAMS = ["front", "rear"]


@pytest.fixture(scope="module")
def assets(studio):
    """Renders under the document root (a strict subfolder, as local storage needs)."""
    if studio.document_root is None:
        pytest.skip("external server without LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    root = Path(studio.document_root) / f"renders-{uuid.uuid4().hex[:6]}"
    (root / "log_a").mkdir(parents=True)
    return root


def _task(assets: Path, i: int, shift: float = 0.0) -> ReviewTask:
    ts = 1_700_000_000_123_456_789 + i * 100_000_000
    bev = assets / "log_a" / f"{ts}_bev.png"
    if not bev.exists():
        Image.new("RGB", (GRID.width_px, GRID.height_px), (i * 40, 20, 20)).save(bev)
    cams = []
    for cam in CAMS[: 1 + i % 2]:  # frame 0 and 2 lack the rear camera
        p = assets / "log_a" / f"{ts}_{cam}.jpg"
        if not p.exists():
            Image.new("RGB", (64, 48), (0, 90, 0)).save(p)
        cams.append(CameraView(cam, str(p), 64, 48, [(f"trk_{i}_0", 3.5, 4.25, 30.0, 40.0, "car", 0.8)]))
    rng = np.random.default_rng(i)
    n = 3
    boxes = np.column_stack(
        [
            rng.uniform(-19, 59, n),
            rng.uniform(-29, 29, n),
            rng.uniform(-1, 1, n),
            rng.uniform(3, 6, n),
            rng.uniform(1.5, 2.5, n),
            rng.uniform(1.4, 3.0, n),
            rng.uniform(-math.pi, math.pi, n),
        ]
    )
    boxes[0, :2] = [59.2, -29.4]  # partly outside the image corner
    boxes[:, 0] += shift
    return ReviewTask(
        frame_key=f"log_a/{ts}",
        log_id="log_a",
        timestamp_ns=ts,
        bev_image_path=str(bev),
        bev_grid=GRID,
        boxes=boxes,
        categories=["car", "truck", "pedestrian"],
        scores=[0.9, 0.5, 0.31],
        object_ids=[f"trk_{i}_{k}" for k in range(n - 1)] + [f"uuid-{i}-4c1b-9e0d-0123456789ab"],
        cameras=cams,
        priority=0.5 + i,
        reasons=["low_score", f"rare & odd <{i}>"],
        model_version="det-v1",
        run_id="run-1",
    )


def _same_boxes(a, b, tol=1e-6):
    a, b = np.asarray(a).reshape(-1, 7), np.asarray(b).reshape(-1, 7)
    np.testing.assert_allclose(a[:, :6], b[:, :6], atol=tol, rtol=0)
    assert np.all(np.abs(wrap_angle(a[:, 6] - b[:, 6])) < tol)


def test_push_idempotent_update_and_export(studio, studio_client, assets):
    ls = studio_client
    title = f"review {uuid.uuid4().hex[:6]}"
    pid = ensure_project(ls, title, list(CLASSES), CAMS)
    assert ensure_project(ls, title, list(CLASSES), CAMS) == pid
    sid = ensure_local_storage(ls, pid, str(assets), str(studio.document_root))
    assert ensure_local_storage(ls, pid, str(assets), str(studio.document_root)) == sid

    tasks = [_task(assets, i) for i in range(3)]
    first = push_tasks(ls, pid, tasks, str(studio.document_root), batch_size=2)
    assert [p.status for p in first] == ["created"] * 3
    assert [p.frame_key for p in first] == [t.frame_key for t in tasks]
    assert len({p.task_id for p in first}) == 3

    again = push_tasks(ls, pid, tasks, str(studio.document_root))
    assert [(p.task_id, p.status) for p in again] == [(p.task_id, "existing") for p in first]
    assert len(list(ls.tasks.list(project=pid))) == 3

    tasks[1] = _task(assets, 1, shift=0.25)
    third = push_tasks(ls, pid, tasks, str(studio.document_root))
    assert [p.status for p in third] == ["existing", "updated", "existing"]
    assert [p.task_id for p in third] == [p.task_id for p in first]
    preds = ls.predictions.list(task=first[1].task_id)
    assert len(preds) == 1
    # near-edge rotated boxes have corners outside [0, 100] %: the server keeps them (no validation drops them)
    rects = [r["value"] for r in preds[0].result if r["type"] == "rectanglelabels" and r["from_name"] == "bev_box"]
    assert len(rects) == 3 and any(not (0 <= v["x"] <= 100 and 0 <= v["y"] <= 100) for v in rects)
    got = parse_result(preds[0].result, GRID)
    _same_boxes(np.stack([b["box"] for b in got["bev"]]), tasks[1].boxes)
    assert ls.projects.get(id=pid).model_version == "det-v1"

    # pagination: every frame found with a tiny page size
    assert set(list_frame_tasks(ls, pid, page_size=2)) == {t.frame_key for t in tasks}
    assert set(list_frame_tasks(ls, pid, log_ids=["log_a"], page_size=2)) == {t.frame_key for t in tasks}
    assert list_frame_tasks(ls, pid, log_ids=["log_b"]) == {}

    # export with full predictions and convert back
    exported = {t["data"]["frame_key"]: t for t in export_tasks(ls, pid)}
    assert set(exported) == {t.frame_key for t in tasks}
    for t in tasks:
        e = exported[t.frame_key]
        assert len(e["predictions"]) == 1
        pred = e["predictions"][0]
        assert pred["model_version"] == "det-v1" and pred["score"] == pytest.approx(np.mean(t.scores))
        grid = BevGrid(**e["data"]["bev_grid"])
        p = parse_result(pred["result"], grid)
        ids = e["data"]["object_ids"]
        by_obj = {ids[b["id"]]: b for b in p["bev"]}
        for k, oid in enumerate(t.object_ids):
            _same_boxes(by_obj[oid]["box"], t.boxes[k])
            assert by_obj[oid]["label"] == t.categories[k]
            assert by_obj[oid]["score"] == pytest.approx(t.scores[k])
        assert set(p["cameras"]) == {c.name for c in t.cameras}
        for c in t.cameras:
            np.testing.assert_allclose(p["cameras"][c.name][0]["xyxy"], c.boxes[0][1:5], atol=1e-9)
            assert ids[p["cameras"][c.name][0]["id"]] == c.boxes[0][0]
        assert e["data"]["timestamp_ns"] == t.timestamp_ns and e["data"]["priority"] == t.priority
        assert e["data"]["reasons"] == "; ".join(t.reasons)
        if len(t.cameras) == 1:
            assert e["data"]["cam_rear"] == MISSING_IMAGE  # the key exists for frames without that camera
        else:
            assert e["data"]["cam_rear"].startswith("/data/local-files/?d=renders-")
        assert region_id(t.object_ids[-1]) in ids

    # the BEV image is served to an authenticated client, and only to one
    url = studio.url + exported[tasks[0].frame_key]["data"]["bev"]
    headers = ls._client_wrapper.get_headers()
    r = requests.get(url, headers={"Authorization": headers["Authorization"]}, timeout=30)
    assert r.status_code == 200 and r.content == Path(tasks[0].bev_image_path).read_bytes()
    assert requests.get(url, timeout=30).status_code in (401, 403)


def test_push_changes_data_only(studio, studio_client, assets):
    ls = studio_client
    pid = ensure_project(ls, f"review {uuid.uuid4().hex[:6]}", list(CLASSES), CAMS)
    ensure_local_storage(ls, pid, str(assets), str(studio.document_root))
    t = _task(assets, 7)
    (created,) = push_tasks(ls, pid, [t], str(studio.document_root))
    (pred_before,) = ls.predictions.list(task=created.task_id)
    t.priority = 99.0
    (upd,) = push_tasks(ls, pid, [t], str(studio.document_root))
    assert (upd.task_id, upd.status) == (created.task_id, "updated")
    assert ls.tasks.get(id=str(created.task_id)).data["priority"] == 99.0
    assert [p.id for p in ls.predictions.list(task=created.task_id)] == [pred_before.id]  # prediction untouched
    # a prediction deleted by hand comes back on the next push
    ls.predictions.delete(id=ls.predictions.list(task=created.task_id)[0].id)
    (again,) = push_tasks(ls, pid, [t], str(studio.document_root))
    assert (again.task_id, again.status) == (created.task_id, "updated")
    assert len(ls.predictions.list(task=created.task_id)) == 1
    assert push_tasks(ls, pid, [t], str(studio.document_root))[0].status == "existing"


def test_project_config_follows_cameras(studio_client):
    ls = studio_client
    title = f"cfg {uuid.uuid4().hex[:6]}"
    pid = ensure_project(ls, title, ["car"], ["front"])
    assert ensure_project(ls, title, ["car", "bus"], ["front", "left"]) == pid
    assert ls.projects.get(id=pid).label_config == build_labeling_config(["car", "bus"], ["front", "left"])


def test_image_outside_document_root(studio, studio_client, assets, tmp_path):
    ls = studio_client
    pid = ensure_project(ls, f"review {uuid.uuid4().hex[:6]}", list(CLASSES), CAMS)
    t = _task(assets, 0)
    t.bev_image_path = str(tmp_path / "elsewhere.png")
    if Path(studio.document_root) in tmp_path.parents:
        pytest.skip("tmp_path lies under the document root")
    with pytest.raises(StudioError, match="outside the Label Studio document root"):
        push_tasks(ls, pid, [t], str(studio.document_root))
    with pytest.raises(StudioError, match="strict subfolder"):
        ensure_local_storage(ls, pid, str(studio.document_root), str(studio.document_root))
    assert list(ls.tasks.list(project=pid)) == []


def test_unreachable_server_says_rerun(studio, assets):
    dead = LabelStudio(base_url=f"http://127.0.0.1:{free_port()}", api_key="not-a-jwt", timeout=5)
    with pytest.raises(StudioError, match=r"(?s)unreachable.*re-run"):
        push_tasks(dead, 1, [_task(assets, 0)], str(studio.document_root))


def test_priority_view_and_class_list_update_keep_tasks(studio, studio_client, assets):
    """The project has one saved view ordered by priority; a new class list updates the config, tasks stay."""
    from labeler.studio.push import PRIORITY_VIEW

    title = f"view test {uuid.uuid4().hex[:8]}"
    pid = ensure_project(studio_client, title, ["car", "truck", "pedestrian"], CAMS)
    ensure_local_storage(studio_client, pid, str(assets), str(studio.document_root))
    push_tasks(studio_client, pid, [_task(assets, 0), _task(assets, 1)], document_root=str(studio.document_root))
    assert ensure_project(studio_client, title, ["car", "truck", "pedestrian", "animal"], CAMS) == pid
    views = [v for v in studio_client.views.list(project=pid) if (v.data or {}).get("title") == PRIORITY_VIEW]
    assert len(views) == 1 and views[0].data["ordering"] == ["-tasks:data.priority"]
    assert 'value="animal"' in studio_client.projects.get(id=pid).label_config
    assert len(list(studio_client.tasks.list(project=pid))) == 2
