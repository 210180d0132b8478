"""Helpers shared by the review tests: tiny run dirs, review tasks, and private Label Studio servers."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from labeler.geometry.bev import BevGrid
from labeler.io.tables import write_part, write_run_record
from labeler.schemas import BOXES_2D, FRAMES, PREDICTIONS_3D, REVIEW_TASKS, to_table
from labeler.studio.tasks import CameraView, ReviewTask

CAMS = ["front"]


def make_task(assets: Path, log_id: str, ts: int, grid: BevGrid, boxes, cats, oids, cam_boxes=(), run_id="run-T",
              scores=None) -> ReviewTask:
    """A ReviewTask with a BEV render (and a 64x48 front camera image when ``cam_boxes`` is given)."""
    d = assets / log_id
    d.mkdir(parents=True, exist_ok=True)
    bev = d / f"{ts}_bev.png"
    if not bev.exists():
        Image.new("RGB", (grid.width_px, grid.height_px), (30, 30, 30)).save(bev)
    cams = []
    if cam_boxes:
        p = d / f"{ts}_front.jpg"
        if not p.exists():
            Image.new("RGB", (64, 48), (0, 90, 0)).save(p)
        cams.append(CameraView("front", str(p), 64, 48, list(cam_boxes)))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    return ReviewTask(frame_key=f"{log_id}/{ts}", log_id=log_id, timestamp_ns=ts, bev_image_path=str(bev), bev_grid=grid,
                      boxes=boxes, categories=list(cats), scores=list(scores or [0.5] * len(boxes)), object_ids=list(oids),
                      cameras=cams, priority=1.0, reasons=["test"], model_version="det-v1", run_id=run_id)


def make_run_dir(run_dir: Path, run_id: str, review: list[ReviewTask], auto: list[ReviewTask]) -> None:
    """A run dir with run.json, frames, predictions_3d and boxes_2d for review + auto-accepted frames."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_record(str(run_dir), {"run_id": run_id, "night": "test", "inputs": []})
    frames, preds, b2d = [], [], []
    for outcome, tasks in (("review", review), ("auto_accepted", auto)):
        for t in tasks:
            frames.append({"log_id": t.log_id, "timestamp_ns": t.timestamp_ns, "run_id": run_id, "frame_index": 0,
                           "lidar_file": "x.bin", "num_points": 1, "ego_x_m": 0.0, "ego_y_m": 0.0, "ego_yaw_rad": 0.0,
                           "ego_speed_mps": 0.0, "cameras": [c.name for c in t.cameras], "tags": [], "filter_reason": None,
                           "outcome": outcome, "pipeline_version": "t"})
            for b, c, s, o in zip(t.boxes, t.categories, t.scores, t.object_ids):
                preds.append({"log_id": t.log_id, "timestamp_ns": t.timestamp_ns, "object_id": o, "run_id": run_id,
                              **dict(zip("x y z l w h yaw".split(), map(float, b))), "category": c, "score": float(s),
                              "num_points": 10, "model_name": "m", "model_version": t.model_version})
            for cam in t.cameras:
                for o, x1, y1, x2, y2, c, s in cam.boxes:
                    b2d.append({"log_id": t.log_id, "timestamp_ns": t.timestamp_ns, "object_id": o, "camera": cam.name,
                                "run_id": run_id, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "truncation": 0.0,
                                "depth_m": 10.0, "category": c, "score": s, "model_version": t.model_version})
    write_part(str(run_dir), FRAMES, to_table(FRAMES, frames), "0")
    write_part(str(run_dir), PREDICTIONS_3D, to_table(PREDICTIONS_3D, preds), "0")
    write_part(str(run_dir), BOXES_2D, to_table(BOXES_2D, b2d), "0")


def write_review_tasks(run_dir: Path, run_id: str, project_id: int, tasks: list[ReviewTask], pushed) -> None:
    by = {p.frame_key: p for p in pushed}
    rows = [{"log_id": t.log_id, "timestamp_ns": t.timestamp_ns, "run_id": run_id, "frame_key": t.frame_key,
             "project_id": project_id, "task_id": by[t.frame_key].task_id, "status": by[t.frame_key].status,
             "bev_image": t.bev_image_path, "camera_images": [c.image_path for c in t.cameras], "priority": t.priority,
             "num_predictions": len(t.boxes), "model_version": t.model_version} for t in tasks]
    write_part(str(run_dir), REVIEW_TASKS, to_table(REVIEW_TASKS, rows), "0")


def clone_studio_state(studio, dst: Path) -> bool:
    """Copy the session server's Label Studio data (db via SQLite's backup API, its SECRET_KEY .env, password and
    token) into ``dst`` so a second server starts in seconds instead of running migrations. False when the session
    server's state is not local (then start a fresh one)."""
    src = Path(studio.state_dir) / "label-studio"
    dbs = list(src.glob("*.sqlite3"))
    if not studio.started_here or not dbs:
        return False
    out = dst / "label-studio"
    out.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and p.suffix != ".sqlite3" and not p.name.startswith(("server.", ".lock")) and "sqlite3-" not in p.name:
            shutil.copy2(p, out / p.name)
    for db in dbs:
        with sqlite3.connect(db) as s, sqlite3.connect(out / db.name) as d:
            s.backup(d)
    return True


def uid() -> str:
    return uuid.uuid4().hex[:6]


def private_server(studio, dst: Path, **kw):
    """Start a second Label Studio server on its own state dir ``dst`` (a clone of the session server's data when
    possible: ~10 s instead of ~60 s of migrations). Returns (ServerInfo, api_key). Caller stops it."""
    from labeler.studio.server import free_port, start_server

    clone_studio_state(studio, dst)
    info = start_server(dst, port=free_port(), wait_s=300, document_root=dst, **kw)
    return info, info.token_file.read_text().strip()
