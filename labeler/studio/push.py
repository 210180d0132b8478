"""Create the review project and push :class:`ReviewTask` s with pre-annotations, idempotently by ``frame_key``.

Re-running a push is safe: a frame already in the project with the same data and prediction is left alone
("existing"), one whose prediction or data changed gets its predictions replaced / data patched ("updated"),
new frames are imported in batches ("created"). Transient errors (connection, 5xx) are retried with backoff;
after that a StudioError says the server is unreachable and that re-running resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from labeler.errors import StudioError
from labeler.studio.convert import prediction_result, region_id
from labeler.studio.labeling_config import BEV_IMAGE, build_labeling_config, camera_image_name
from labeler.studio.tasks import PushedTask, ReviewTask

log = logging.getLogger(__name__)

# shown for a camera the frame lacks (task data must hold every $variable of the config): a 1x1 PNG
MISSING_IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
RETRIES = 5  # attempts per call; waits 0.5, 1, 2, 4 s in between


def _retry(what: str, fn, *args, **kwargs):
    """Call ``fn`` retrying connection errors and 5xx with exponential backoff; 4xx -> StudioError at once."""
    for attempt in range(RETRIES):
        try:
            return fn(*args, **kwargs)
        except ApiError as e:
            if e.status_code is not None and e.status_code < 500:
                raise StudioError(f"Label Studio refused {what}: HTTP {e.status_code}: {str(e.body)[:500]}") from None
            err = f"HTTP {e.status_code}"
        except httpx.TransportError as e:
            err = type(e).__name__
        if attempt < RETRIES - 1:
            log.warning("%s failed (%s), retry %d/%d", what, err, attempt + 1, RETRIES - 1)
            time.sleep(0.5 * 2**attempt)
    raise StudioError(
        f"Label Studio is unreachable ({what} failed {RETRIES} times, last: {err}); "
        "start it (`labeler studio up`) and re-run: the push resumes where it stopped (pushed frames are skipped)"
    )


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def ensure_project(client: LabelStudio, title: str, classes: list[str], cameras: list[str]) -> int:
    """Id of the project titled ``title`` (lowest id if several), created if missing; its labeling config is
    updated when the classes or cameras changed."""
    config = build_labeling_config(list(classes), list(cameras))
    found = [p for p in _retry("listing projects", lambda: list(client.projects.list(title=title, page_size=100))) if p.title == title]
    if not found:
        p = _retry("creating the project", client.projects.create, title=title, label_config=config)
        log.info("created Label Studio project %d %r", p.id, title)
        ensure_priority_view(client, p.id)
        return p.id
    p = min(found, key=lambda p: p.id)
    current = _retry("reading the project", client.projects.get, id=p.id).label_config
    if current != config:
        _retry("updating the labeling config", client.projects.update, id=p.id, label_config=config)
        log.info("updated the labeling config of project %d", p.id)
    ensure_priority_view(client, p.id)
    return p.id


PRIORITY_VIEW = "review by priority"


def ensure_priority_view(client: LabelStudio, project_id: int) -> int:
    """A saved Data Manager tab listing the project's tasks by priority, highest first (created once)."""
    views = _retry("listing views", client.views.list, project=project_id)
    for v in views:
        if (v.data or {}).get("title") == PRIORITY_VIEW:
            return v.id
    v = _retry("creating the priority view", client.views.create, project=project_id,
               data={"title": PRIORITY_VIEW, "ordering": ["-tasks:data.priority"]})
    return v.id


def _relative(path, document_root) -> str:
    """``path`` relative to ``document_root`` (posix); StudioError when outside."""
    root = Path(document_root).expanduser().resolve()
    p = Path(path).expanduser().resolve()
    try:
        rel = p.relative_to(root)
    except ValueError:
        raise StudioError(
            f"{p} is outside the Label Studio document root {root}: Label Studio serves local files only from there; "
            "write the renders under it (or start the server with that folder as document root)"
        ) from None
    return rel.as_posix()


def local_file_url(path, document_root) -> str:
    """``/data/local-files/?d=<path relative to document_root>`` (URL-quoted)."""
    return "/data/local-files/?d=" + quote(_relative(path, document_root), safe="/")


def ensure_local_storage(client: LabelStudio, project_id: int, asset_root: str, document_root: str) -> int:
    """Id of the project's local-files import storage for ``asset_root`` (created if missing).

    ``asset_root`` must be an existing strict subfolder of the server's document root; images under it can then be
    served to the project. No sync is run (tasks are imported by :func:`push_tasks`).
    """
    root = Path(document_root).expanduser().resolve()
    asset = Path(asset_root).expanduser().resolve()
    if asset == root or root not in asset.parents:
        raise StudioError(f"asset folder {asset} must be a strict subfolder of the Label Studio document root {root}")
    if not asset.is_dir():
        raise StudioError(f"asset folder {asset} does not exist")
    for s in _retry("listing local storages", client.import_storage.local.list, project=project_id):
        if s.path and os.path.normpath(s.path) == str(asset):
            return s.id
    s = _retry(
        "creating a local storage",
        client.import_storage.local.create,
        project=project_id,
        path=str(asset),
        title=f"labeler assets {asset.name}",
        use_blob_urls=True,
    )
    return s.id


def _project_cameras(client: LabelStudio, project_id: int) -> set[str]:
    config = _retry("reading the project", client.projects.get, id=project_id).label_config
    names = {el.get("name", "") for el in ET.fromstring(config).iter("Image")}
    return {n[len("cam_") :] for n in names if n.startswith("cam_")}


def _payload(t: ReviewTask, document_root: str | None, cameras: set[str], uploader=None) -> dict:
    """Task data and the single prediction of one ReviewTask (validated).

    Image URLs are local-files URLs under ``document_root``, or uploads when ``uploader`` is given."""
    image_url = uploader.url if uploader is not None else (lambda path: local_file_url(path, document_root))
    if not str(t.frame_key).startswith(f"{t.log_id}/"):
        raise StudioError(f"frame_key {t.frame_key!r} must be '<log_id>/<timestamp_ns>' with log_id {t.log_id!r}")
    boxes = np.asarray(t.boxes, dtype=np.float64).reshape(-1, 7)
    n = len(boxes)
    if not (len(t.categories) == len(t.scores) == len(t.object_ids) == n):
        raise StudioError(f"{t.frame_key}: boxes ({n}), categories, scores and object_ids must have the same length")
    if not np.isfinite(boxes).all():
        raise StudioError(f"{t.frame_key}: boxes contain NaN/inf")
    unknown = {c.name for c in t.cameras} - cameras
    if unknown:
        raise StudioError(f"{t.frame_key}: cameras {sorted(unknown)} are not in the project's labeling config (ensure_project)")
    regions = {region_id(o): str(o) for o in t.object_ids}
    for c in t.cameras:
        regions.update({region_id(b[0], c.name): str(b[0]) for b in c.boxes})
    n_items = n + sum(len(c.boxes) for c in t.cameras)
    if len(regions) != n_items:
        raise StudioError(f"{t.frame_key}: object ids are not unique (per view)")
    data = {
        "frame_key": t.frame_key,
        "log_id": t.log_id,
        "timestamp_ns": int(t.timestamp_ns),
        "priority": float(t.priority),
        "reasons": "; ".join(t.reasons),
        "run_id": t.run_id,
        "model_version": t.model_version,
        BEV_IMAGE: image_url(t.bev_image_path),
        "bev_grid": t.bev_grid.to_dict(),
        "object_ids": regions,
    }
    for cam in sorted(cameras):
        data[camera_image_name(cam)] = MISSING_IMAGE  # a frame without this camera: the key must exist
    for c in t.cameras:
        data[camera_image_name(c.name)] = image_url(c.image_path)
    result = prediction_result(boxes, t.categories, t.object_ids, t.bev_grid, t.scores, t.cameras)
    score = float(np.mean(t.scores)) if n else 0.0
    # JSON round trip (once): compare what the server stores (plain floats, ints) with what it returns
    out = json.loads(json.dumps({"data": data, "predictions": [{"model_version": t.model_version, "score": score, "result": result}]}))
    out["data"]["pred_sha"] = hashlib.sha1(_canon(out["predictions"][0]).encode()).hexdigest()[:16]
    return out


def list_frame_tasks(client: LabelStudio, project_id: int, log_ids=None, page_size: int = 1000) -> dict[str, dict]:
    """``frame_key -> {"id", "data", "total_predictions"}`` of the project's tasks, all pages.

    With ``log_ids``, only tasks whose ``data.log_id`` is one of them are listed (filtered server-side: a push
    costs the size of its logs, not of the project). When a frame_key appears twice the lowest task id wins.
    """
    queries: list[str | None] = [None]
    if log_ids is not None:
        logs = sorted({str(x) for x in log_ids})
        queries = []
        for i in range(0, len(logs), 50):
            items = [{"filter": "filter:tasks:data.log_id", "operator": "equal", "type": "String", "value": x} for x in logs[i : i + 50]]
            queries.append(json.dumps({"filters": {"conjunction": "or", "items": items}}))
    out: dict[str, dict] = {}
    for q in queries:

        def _list(q=q):
            kw = {"query": q} if q else {}
            pager = client.tasks.list(project=project_id, include="id,data,total_predictions", page_size=page_size, **kw)
            return [{"id": t.id, "data": t.data, "total_predictions": t.total_predictions} for t in pager]

        for t in _retry("listing tasks", _list):
            key = (t.get("data") or {}).get("frame_key")
            if key is not None and (key not in out or t["id"] < out[key]["id"]):
                out[key] = t
    return out


# task-data keys that change with every run without changing what a reviewer sees (not compared, not re-patched)
VOLATILE_DATA_KEYS = frozenset({"run_id"})


def _stable(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in VOLATILE_DATA_KEYS}


def _same_prediction(old, new: dict) -> bool:
    return (
        _canon(old.model_version) == _canon(new["model_version"])
        and _canon(old.score) == _canon(new["score"])
        and _canon(old.result) == _canon(new["result"])
    )


def push_tasks(
    client: LabelStudio, project_id: int, tasks: list[ReviewTask], document_root: str | None, batch_size: int = 100,
    upload: bool = False,
) -> list[PushedTask]:
    """Push review tasks with one prediction each; idempotent by ``frame_key``. Returns one PushedTask per input
    task, in input order.

    Task data carries ``pred_sha`` (hash of the prediction): a frame whose data (hash included) is unchanged and that
    has exactly one prediction is "existing" without fetching it. Otherwise its predictions are fetched; if they
    differ they are deleted and the new one created, and changed data is patched ("updated").
    Also sets the project's ``model_version`` to the pushed one (the UI shows pre-annotations of that version only).
    Images are served by local-files storage under ``document_root``; with ``upload`` (or no document root, e.g. a
    remote server) they are uploaded instead (:mod:`labeler.studio.upload`).
    """
    keys = [t.frame_key for t in tasks]
    if len(set(keys)) != len(keys):
        raise StudioError("duplicate frame_key in the tasks to push")
    cameras = _project_cameras(client, project_id)
    uploader = None
    if upload or document_root is None:
        from labeler.studio.upload import ImageUploader

        uploader = ImageUploader(client)
    payloads = {t.frame_key: _payload(t, document_root, cameras, uploader) for t in tasks}
    existing = list_frame_tasks(client, project_id, log_ids={t.log_id for t in tasks})
    status: dict[str, tuple[int, str]] = {}

    for key, pl in payloads.items():
        ex = existing.get(key)
        if ex is None:
            continue
        same_data = _canon(_stable(ex["data"])) == _canon(_stable(pl["data"]))
        if same_data and ex["total_predictions"] == 1:
            status[key] = (ex["id"], "existing")
            continue
        new_pred = pl["predictions"][0]
        old = _retry("listing predictions", client.predictions.list, task=ex["id"])
        same_pred = len(old) == 1 and _same_prediction(old[0], new_pred)
        if not same_pred:
            for p in old:
                _retry("deleting an old prediction", client.predictions.delete, id=p.id)
            _retry("creating a prediction", client.predictions.create, task=ex["id"], **new_pred)
        if not same_data:
            _retry("updating task data", client.tasks.update, id=str(ex["id"]), data=pl["data"])
        status[key] = (ex["id"], "existing" if same_data and same_pred else "updated")

    new = [k for k in keys if k not in existing]
    created: dict[str, int] = {}  # frame_key -> task id, from import responses (batches imported in one go)
    for i in range(0, len(new), batch_size):
        batch = new[i : i + batch_size]
        created.update(_import_batch(client, project_id, [payloads[k] for k in batch], batch))
    if new and all(k in created for k in new):
        status.update({k: (created[k], "created") for k in new})
    elif new:  # a batch needed recovery: read the ids back
        ids = list_frame_tasks(client, project_id, log_ids={payloads[k]["data"]["log_id"] for k in new})
        missing = [k for k in new if k not in ids]
        if missing:
            raise StudioError(f"{len(missing)} imported frames not found in project {project_id} (e.g. {missing[0]}): re-run the push")
        status.update({k: (ids[k]["id"], "created") for k in new})

    versions = [t.model_version for t in tasks]
    if versions:
        proj = _retry("reading the project", client.projects.get, id=project_id)
        if proj.model_version != versions[-1]:
            _retry("setting the model version", client.projects.update, id=project_id, model_version=versions[-1])
    return [PushedTask(k, status[k][0], status[k][1]) for k in keys]


def _import_batch(client: LabelStudio, project_id: int, payloads: list[dict], keys: list[str]) -> dict[str, int]:
    """Import one batch; after a failed attempt, re-check which frames arrived so a retry never duplicates.

    Returns ``frame_key -> task id`` when the whole batch went in with one call (ids in request order), else {}.
    """
    todo = list(zip(keys, payloads))
    for attempt in range(RETRIES):
        try:
            r = client.projects.import_tasks(id=project_id, request=[p for _, p in todo], return_task_ids=True)
            ids = getattr(r, "task_ids", None) or []
            if attempt == 0 and len(ids) == len(todo):
                return dict(zip((k for k, _ in todo), (int(i) for i in ids)))
            return {}
        except ApiError as e:
            if e.status_code is not None and e.status_code < 500:
                raise StudioError(f"Label Studio refused the import: HTTP {e.status_code}: {str(e.body)[:500]}") from None
        except httpx.TransportError:
            pass
        time.sleep(0.5 * 2**attempt)
        try:
            present = list_frame_tasks(client, project_id, log_ids={p["data"]["log_id"] for _, p in todo})
        except StudioError:
            continue
        todo = [(k, p) for k, p in todo if k not in present]
        if not todo:
            return {}
    raise StudioError(
        "Label Studio is unreachable (importing tasks failed); start it (`labeler studio up`) and re-run: "
        "the push resumes where it stopped (pushed frames are skipped)"
    )


def export_tasks(client: LabelStudio, project_id: int, full_predictions: bool = True, timeout_s: float = 600) -> list[dict]:
    """All tasks of the project as exported JSON (a snapshot export), with full predictions when asked.

    Each task: ``{id, data, annotations: [{result, was_cancelled, ...}], predictions: [{result, model_version, ...}]}``
    (the quick ``exports.as_json`` gives prediction ids only). Filter ``was_cancelled`` annotations (skips).
    """
    opts = {"predictions": {"only_id": not full_predictions}}
    snap = _retry("creating an export", client.projects.exports.create, id=project_id, serialization_options=opts)
    deadline = time.monotonic() + timeout_s
    while True:
        st = str(_retry("polling the export", client.projects.exports.get, id=project_id, export_pk=snap.id).status)
        if st == "completed":
            break
        if st == "failed" or time.monotonic() > deadline:
            raise StudioError(f"export {snap.id} of project {project_id} {st if st == 'failed' else 'timed out'}")
        time.sleep(0.5)

    def _download():
        return b"".join(client.projects.exports.download(id=project_id, export_pk=snap.id, export_type="JSON"))

    return json.loads(_retry("downloading the export", _download))
