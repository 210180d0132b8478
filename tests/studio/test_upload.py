"""Review images uploaded to the server (remote servers cannot read our files): served back byte-exact, and a
re-push reuses the uploads (tasks stay unchanged)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import requests
from PIL import Image

from labeler.geometry.bev import BevGrid
from labeler.studio.push import ensure_project, push_tasks
from labeler.studio.tasks import CameraView, ReviewTask

pytestmark = pytest.mark.studio


def _task(tmp_path, i):
    ts = 1_700_000_000_000_000_000 + i * 100_000_000
    bev = tmp_path / f"{ts}_bev.png"
    Image.fromarray(np.full((80, 60, 3), 10 * i, np.uint8)).save(bev)
    cam = tmp_path / f"{ts}_front.jpg"
    Image.fromarray(np.full((48, 64, 3), 30 + i, np.uint8)).save(cam)
    grid = BevGrid(-4.0, 4.0, -3.0, 3.0, 0.1)
    return ReviewTask(frame_key=f"log_u/{ts}", log_id="log_u", timestamp_ns=ts, bev_image_path=str(bev), bev_grid=grid,
                      boxes=np.array([[1.0, 0.5, -1.0, 4.0, 1.8, 1.5, 0.3]]), categories=["car"], scores=[0.7],
                      object_ids=["p000"], cameras=[CameraView("front", str(cam), 64, 48, [("p000", 5, 6, 30, 40, "car", 0.7)])],
                      priority=1.0, reasons=["low_score"], model_version="m1", run_id=f"r{uuid.uuid4().hex[:4]}")


def test_upload_mode_serves_images_and_is_idempotent(studio, studio_client, tmp_path):
    pid = ensure_project(studio_client, f"upload test {uuid.uuid4().hex[:8]}", ["car"], ["front"])
    tasks = [_task(tmp_path, i) for i in range(2)]
    first = push_tasks(studio_client, pid, tasks, document_root=None)  # no document root: upload
    assert [p.status for p in first] == ["created", "created"]
    hdr = {k: v for k, v in studio_client._client_wrapper.get_headers().items() if k.lower() == "authorization"}
    for p, t in zip(first, tasks):
        data = studio_client.tasks.get(p.task_id).data
        assert data["bev"].startswith("/data/upload/") and data["cam_front"].startswith("/data/upload/")
        got = requests.get(studio.url + data["bev"], headers=hdr, timeout=30)
        assert got.status_code == 200 and got.content == open(t.bev_image_path, "rb").read()
    tasks2 = [_task(tmp_path, i) for i in range(2)]  # same images, new run id
    again = push_tasks(studio_client, pid, tasks2, document_root=None)
    assert [p.status for p in again] == ["existing", "existing"]
    assert [p.task_id for p in again] == [p.task_id for p in first]
