"""``labeler pull``: export a run's Label Studio annotations, convert them back to 3D boxes, and write the review
log (what the reviewer did to every box) and the final labels (human + auto-accepted). See docs/review.md.

A reviewed frame's boxes are joined to its prediction by Label Studio region id (task data ``object_ids`` maps a
region id to our object id). A predicted box is

* ``deleted`` when its region is gone from the annotation;
* ``relabelled`` when its class changed (shift / yaw / IoU columns still say how far it moved);
* ``edited`` when its centre moved more than :data:`SHIFT_M` (1 cm), its yaw more than :data:`YAW_RAD` (0.1 deg),
  or any of l, w, h changed by more than :data:`SIZE_M` (1 cm);
* ``accepted`` otherwise. A region only in the annotation is ``added``.

Camera boxes use 1 px for both centre shift and size change. The annotation used for a task is its newest
non-cancelled one (a ``ground_truth`` annotation wins); cancelled (skipped) annotations only add their lead time.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa

from labeler.classes import TYPICAL_SIZE_M
from labeler.errors import StudioError
from labeler.geometry.bev import BevGrid
from labeler.geometry.boxes import bev_iou, wrap_angle
from labeler.io.tables import read_run_record, read_table, table_dir, write_part
from labeler.review.tables import LABELS, LABELS_2D, REVIEW_FRAMES, REVIEW_LOG
from labeler.schemas import to_table
from labeler.studio.convert import parse_result

log = logging.getLogger(__name__)

SHIFT_M = 0.01  # centre shift above which a box counts as edited, metres
YAW_RAD = math.radians(0.1)  # yaw change above which a box counts as edited
SIZE_M = 0.01  # l / w / h change above which a box counts as edited, metres
SHIFT_PX = 1.0  # camera boxes: centre shift / size change above which a box counts as edited, pixels
LIDAR_HEIGHT_M = 1.84  # ground is ~this far below the LiDAR: z guess for an added box without z_m (simulator rig)

ACTIONS = ("accepted", "edited", "relabelled", "added", "deleted", "bad_frame")


@dataclass
class PullResult:
    run_dir: str
    frames_reviewed: int = 0
    frames_skipped: int = 0
    frames_pending: int = 0
    frames_bad: int = 0
    frames_auto: int = 0
    actions: dict = field(default_factory=dict)
    labels: int = 0
    labels_2d: int = 0
    bank_version: int | None = None   # corner-case bank version written by this pull (None: nothing new / off)
    bank_frames: int = 0              # reviewed frames added to the bank
    propagated: int = 0               # auto-accepted frames' labels confirmed / corrected / added by a review
    files: dict = field(default_factory=dict)

    def format(self) -> str:
        acts = ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items())) or "none"
        lines = [
            f"pulled {self.run_dir}",
            f"  frames reviewed {self.frames_reviewed} (bad {self.frames_bad}), skipped {self.frames_skipped}, "
            f"pending {self.frames_pending}, auto-accepted {self.frames_auto}",
            f"  box actions     {acts}",
            f"  labels          {self.labels} 3D, {self.labels_2d} 2D"
            + (f" ({self.propagated} 3D propagated from reviewed frames)" if self.propagated else ""),
        ]
        if self.bank_version is not None:
            lines.append(f"  corner-case bank v{self.bank_version}: +{self.bank_frames} reviewed frames")
        lines += [f"  {k:<15} {v}" for k, v in self.files.items()]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- pure analysis


def _choose_annotation(anns: list[dict]) -> dict | None:
    done = [a for a in anns if not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at") or a.get("created_at") or ""), int(a["id"])))


def _choose_prediction(task: dict, ann: dict | None) -> dict | None:
    preds = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if ann is not None:
        pp = ann.get("parent_prediction")
        for p in preds:
            if p.get("id") == pp:
                return p
        if isinstance(ann.get("prediction"), dict) and ann["prediction"].get("result") is not None and ann["prediction"].get("id") == pp:
            return ann["prediction"]
    return max(preds, key=lambda p: int(p.get("id") or 0)) if preds else None


def _fill_zh(box: np.ndarray, ref: np.ndarray | None, label: str | None, frame_boxes: list[np.ndarray]) -> np.ndarray:
    """NaN z / height of an annotated box: from the matched prediction, else the class's typical height standing
    on the frame's median box bottom (else on the ground ``LIDAR_HEIGHT_M`` below the LiDAR)."""
    b = box.copy()
    if ref is not None:
        if not np.isfinite(b[2]):
            b[2] = ref[2]
        if not np.isfinite(b[5]):
            b[5] = ref[5]
    if not np.isfinite(b[5]):
        b[5] = TYPICAL_SIZE_M.get(label or "", (0, 0, 1.5))[2]
    if not np.isfinite(b[2]):
        bottoms = [f[2] - f[5] / 2 for f in frame_boxes if np.isfinite(f[2]) and np.isfinite(f[5])]
        b[2] = (float(np.median(bottoms)) if bottoms else -LIDAR_HEIGHT_M) + b[5] / 2
    return b


def _iou_2d(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def analyse_task(task: dict, *, run_id: str, project_id: int, reviewer_names: dict | None = None) -> dict:
    """Review log rows, frame row and final labels of one exported task (pure).

    Returns ``{"frame": row, "log": [rows], "labels": [rows], "labels_2d": [rows]}`` (labels empty unless the frame
    is reviewed and not bad).
    """
    data = task["data"]
    key = data["frame_key"]
    log_id, ts = str(data["log_id"]), int(data["timestamp_ns"])
    grid = BevGrid(**data["bev_grid"])
    ids: dict = data.get("object_ids") or {}
    anns = task.get("annotations") or []
    ann = _choose_annotation(anns)
    pred = _choose_prediction(task, ann)
    p = parse_result(pred["result"], grid) if pred else {"bev": [], "cameras": {}, "verdict": None}
    model_version = str((pred or {}).get("model_version") or data.get("model_version") or "")
    skipped_lt = float(sum(float(a.get("lead_time") or 0.0) for a in anns if a.get("was_cancelled")))
    frame = {
        "log_id": log_id, "timestamp_ns": ts, "run_id": run_id, "frame_key": key, "project_id": int(project_id),
        "task_id": int(task["id"]), "status": "pending" if not anns else "skipped", "verdict": None,
        "annotation_id": None, "reviewer": None, "lead_time_s": None, "skipped_lead_time_s": skipped_lt,
        "num_predicted": len(p["bev"]), "num_final": 0,
    }
    out = {"frame": frame, "log": [], "labels": [], "labels_2d": []}
    if ann is None:
        return out
    a = parse_result(ann.get("result") or [], grid)
    who = ann.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    reviewer = str((reviewer_names or {}).get(who, who))
    lead = ann.get("lead_time")
    lead = float(lead) if lead is not None else None
    verdict = a["verdict"]
    frame.update(status="reviewed", verdict=verdict, annotation_id=int(ann["id"]), reviewer=reviewer, lead_time_s=lead,
                 num_final=len(a["bev"]))
    common = {"log_id": log_id, "timestamp_ns": ts, "run_id": run_id, "frame_key": key, "verdict": verdict,
              "project_id": int(project_id), "task_id": int(task["id"]), "annotation_id": int(ann["id"]),
              "reviewer": reviewer, "lead_time_s": lead, "model_version": model_version}
    empty = {"centre_shift_m": None, "yaw_change_rad": None, "size_change_m": None, "bev_iou": None,
             "centre_shift_px": None, "iou_2d": None}

    # BEV boxes
    pb = {r["id"]: r for r in p["bev"]}
    ab = {r["id"]: r for r in a["bev"]}
    pred_boxes = [r["box"] for r in p["bev"]]
    finals: dict[str, tuple[np.ndarray, str]] = {}
    for rid, r in ab.items():
        ref = pb[rid]["box"] if rid in pb else None
        finals[rid] = (_fill_zh(r["box"], ref, r["label"], pred_boxes), r["label"])
    for rid in list(pb) + [r for r in ab if r not in pb]:
        oid = str(ids.get(rid, rid)) if rid in pb else f"human_{rid}"
        row = {**common, **empty, "view": "bev", "object_id": oid, "region_id": rid,
               "old_category": pb[rid]["label"] if rid in pb else None,
               "new_category": finals[rid][1] if rid in finals else None}
        if rid not in finals:
            row["action"] = "deleted"
        elif rid not in pb:
            row["action"] = "added"
        else:
            b0, b1 = pb[rid]["box"], finals[rid][0]
            shift = float(np.linalg.norm(b1[:3] - b0[:3]))
            dyaw = float(wrap_angle(b1[6] - b0[6]))
            dsize = float(np.max(np.abs(b1[3:6] - b0[3:6])))
            row.update(centre_shift_m=shift, yaw_change_rad=dyaw, size_change_m=dsize,
                       bev_iou=float(bev_iou(b0[None], b1[None])[0, 0]))
            if row["old_category"] != row["new_category"]:
                row["action"] = "relabelled"
            elif shift > SHIFT_M or abs(dyaw) > YAW_RAD or dsize > SIZE_M:
                row["action"] = "edited"
            else:
                row["action"] = "accepted"
        out["log"].append(row)
        if rid in finals:
            b, lab = finals[rid]
            out["labels"].append({
                "log_id": log_id, "timestamp_ns": ts, "object_id": oid, "run_id": run_id,
                **{c: float(v) for c, v in zip(("x", "y", "z", "l", "w", "h", "yaw"), b)},
                "category": lab, "provenance": "human", "score": None, "uncertainty": None,
                "model_version": model_version, "reviewer": reviewer, "annotation_id": int(ann["id"]),
                "task_id": int(task["id"])})

    # camera boxes
    for cam in sorted(set(p["cameras"]) | set(a["cameras"])):
        pc = {r["id"]: r for r in p["cameras"].get(cam, [])}
        ac = {r["id"]: r for r in a["cameras"].get(cam, [])}
        for rid in list(pc) + [r for r in ac if r not in pc]:
            oid = str(ids.get(rid, rid)) if rid in pc else f"human_{rid}"
            row = {**common, **empty, "view": cam, "object_id": oid, "region_id": rid,
                   "old_category": pc[rid]["label"] if rid in pc else None,
                   "new_category": ac[rid]["label"] if rid in ac else None}
            if rid not in ac:
                row["action"] = "deleted"
            elif rid not in pc:
                row["action"] = "added"
            else:
                q0, q1 = np.asarray(pc[rid]["xyxy"], float), np.asarray(ac[rid]["xyxy"], float)
                c0, c1 = (q0[:2] + q0[2:]) / 2, (q1[:2] + q1[2:]) / 2
                shift = float(np.linalg.norm(c1 - c0))
                dsize = float(np.max(np.abs((q1[2:] - q1[:2]) - (q0[2:] - q0[:2]))))
                row.update(centre_shift_px=shift, iou_2d=_iou_2d(q0, q1))
                if row["old_category"] != row["new_category"]:
                    row["action"] = "relabelled"
                elif shift > SHIFT_PX or dsize > SHIFT_PX:
                    row["action"] = "edited"
                else:
                    row["action"] = "accepted"
            out["log"].append(row)
            if rid in ac and ac[rid]["xyxy"] is not None:
                x1, y1, x2, y2 = (float(v) for v in ac[rid]["xyxy"])
                out["labels_2d"].append({
                    "log_id": log_id, "timestamp_ns": ts, "object_id": oid, "camera": cam, "run_id": run_id,
                    "x1": x1, "y1": y1, "x2": x2, "y2": y2, "category": ac[rid]["label"], "provenance": "human",
                    "score": None, "model_version": model_version, "reviewer": reviewer,
                    "annotation_id": int(ann["id"])})

    if verdict == "bad_frame":
        out["log"].append({**common, **empty, "view": "frame", "object_id": "", "region_id": None,
                           "action": "bad_frame", "old_category": None, "new_category": None})
        out["labels"], out["labels_2d"] = [], []
    return out


# ----------------------------------------------------------------------------------------------- run level


def _replace_table(run_dir: str, spec, rows: list[dict]) -> str:
    fs, d = fsspec.core.url_to_fs(table_dir(run_dir, spec.name))
    if fs.exists(d):
        fs.rm(d, recursive=True)
    return write_part(run_dir, spec, to_table(spec, rows), "0")


def _auto_labels(run_dir: str, run_id: str, record: dict | None = None) -> tuple[list[dict], list[dict], set]:
    """Labels of the run's auto-accepted frames.

    Runs that record what they accepted (``accepted_3d``, written since refinement joined the pipeline) give
    exactly those boxes (refined or raw, see its ``source_table``); their 2D boxes are the raw rows of
    ``boxes_2d`` for raw labels and, for refined labels, the refined 3D boxes projected with the log's camera
    calibration. Older runs: every prediction of the frame (``predictions_3d`` and ``boxes_2d``).
    """
    import pyarrow.compute as pc

    frames = read_table(run_dir, "frames")
    auto = frames.filter(pc.equal(frames.column("outcome"), "auto_accepted"))
    keys = set(zip(auto.column("log_id").to_pylist(), auto.column("timestamp_ns").to_pylist()))
    if not keys:
        return [], [], keys
    preds = read_table(run_dir, "predictions_3d").to_pylist()
    has_unc = preds and "uncertainty" in preds[0]
    boxes_2d = [r for r in read_table(run_dir, "boxes_2d").to_pylist() if (r["log_id"], r["timestamp_ns"]) in keys]
    if record is not None and "labels_source" in record:
        unc = {(r["log_id"], r["timestamp_ns"], r["object_id"]): r.get("uncertainty") for r in preds} if has_unc else {}
        acc = [r for r in read_table(run_dir, "accepted_3d").to_pylist() if (r["log_id"], r["timestamp_ns"]) in keys]
        labels = [{
            "log_id": r["log_id"], "timestamp_ns": r["timestamp_ns"], "object_id": r["object_id"], "run_id": run_id,
            **{c: r[c] for c in ("x", "y", "z", "l", "w", "h", "yaw")}, "category": r["category"], "provenance": "auto",
            "score": r["score"], "model_version": r["model_version"], "reviewer": None, "annotation_id": None, "task_id": None,
            "uncertainty": unc.get((r["log_id"], r["timestamp_ns"], r["object_id"])) if r["source_table"] == "predictions_3d" else None}
            for r in acc]
        raw_ids = {(r["log_id"], r["timestamp_ns"], r["object_id"]) for r in acc if r["source_table"] == "predictions_3d"}
        labels_2d = [_auto_2d(r, run_id) for r in boxes_2d if (r["log_id"], r["timestamp_ns"], r["object_id"]) in raw_ids]
        labels_2d += _project_refined([r for r in acc if r["source_table"] != "predictions_3d"], record, run_id)
        return labels, labels_2d, keys
    labels = [{
        "log_id": r["log_id"], "timestamp_ns": r["timestamp_ns"], "object_id": r["object_id"], "run_id": run_id,
        **{c: r[c] for c in ("x", "y", "z", "l", "w", "h", "yaw")}, "category": r["category"], "provenance": "auto",
        "score": r["score"], "uncertainty": r["uncertainty"] if has_unc else None, "model_version": r["model_version"],
        "reviewer": None, "annotation_id": None, "task_id": None}
        for r in preds if (r["log_id"], r["timestamp_ns"]) in keys]
    return labels, [_auto_2d(r, run_id) for r in boxes_2d], keys


def _auto_2d(r: dict, run_id: str) -> dict:
    return {"log_id": r["log_id"], "timestamp_ns": r["timestamp_ns"], "object_id": r["object_id"], "camera": r["camera"],
            "run_id": run_id, **{c: r[c] for c in ("x1", "y1", "x2", "y2")}, "category": r["category"],
            "provenance": "auto", "score": r["score"], "model_version": r["model_version"], "reviewer": None,
            "annotation_id": None}


def _open_inputs(record: dict, wanted: set[str]) -> dict:
    """``{log_id: (input path, LogSource)}`` of the run's inputs holding the ``wanted`` logs. An input that cannot be
    opened any more (moved, deleted) is skipped with a warning naming it: the pull goes on without it."""
    from labeler.logs.registry import open_log

    out: dict = {}
    for inp in record.get("inputs", []):
        if wanted <= set(out):
            break
        try:
            src = open_log(inp["path"], inp["format"])
        except Exception as e:  # a moved or deleted input must not stop the pull
            log.warning("cannot open the run's input %s (%s): %s", inp["path"], inp["format"], e)
            continue
        if src.log_id in wanted:
            out[src.log_id] = (inp["path"], src)
    return out


def _project_refined(rows: list[dict], record: dict, run_id: str, sources: dict | None = None) -> list[dict]:
    """2D boxes of accepted refined 3D boxes in every camera of their log (calibration from the log itself;
    ``sources``: logs already opened by :func:`_open_inputs`). A log that cannot be opened any more keeps its 3D
    labels without 2D boxes, with a warning naming it."""
    from labeler.geometry.camera import boxes_to_2d

    if not rows:
        return []
    wanted = {r["log_id"] for r in rows}
    if sources is None or not wanted <= set(sources):
        sources = _open_inputs(record, wanted)
    cameras = {lid: src.cameras for lid, (_, src) in sources.items() if lid in wanted}
    for lid in sorted(wanted - set(cameras)):
        log.warning("auto-accepted refined labels of log %s have no 2D boxes: its input could not be opened", lid)
    out = []
    for lid, cams in cameras.items():
        mine = [r for r in rows if r["log_id"] == lid]
        boxes = np.array([[r[c] for c in ("x", "y", "z", "l", "w", "h", "yaw")] for r in mine], dtype=np.float64)
        for cam, calib in cams.items():
            bx, vis, _, depth = boxes_to_2d(calib, boxes)
            for k in np.nonzero(vis & (depth > 0))[0]:
                r = mine[k]
                out.append({"log_id": lid, "timestamp_ns": r["timestamp_ns"], "object_id": r["object_id"], "camera": cam,
                            "run_id": run_id, "x1": float(bx[k, 0]), "y1": float(bx[k, 1]), "x2": float(bx[k, 2]),
                            "y2": float(bx[k, 3]), "category": r["category"], "provenance": "auto", "score": r["score"],
                            "model_version": r["model_version"], "reviewer": None, "annotation_id": None})
    return out


def _reviewer_names(client) -> dict:
    try:
        return {u.id: (u.email or u.username or str(u.id)) for u in client.users.list()}
    except Exception as e:  # names are a nicety: fall back to user ids
        log.warning("cannot list Label Studio users (%s): reviewers are user ids", e)
        return {}


def state_of_run(run_dir) -> Path:
    """``<state>`` of a run dir ``<state>/runs/<night>``."""
    return Path(run_dir).expanduser().resolve().parent.parent


def _client_for(run_dir):
    from labeler.studio.client import connect

    return connect(state_dir=state_of_run(run_dir))


def pull_run(run_dir: str, client=None, *, export: bool = True, exported_tasks: dict | None = None,
             bank_state: str | None = None, propagate=None) -> PullResult:
    """Pull the run's review results: writes tables review_log, review_frames, labels, labels_2d (replacing
    earlier pulls) and, with ``export``, KITTI label files and a nuScenes-style JSON under ``<run>/labels/``.

    Args:
        run_dir: ``<state>/runs/<night>`` (needs run.json; review_tasks says which Label Studio tasks are the run's).
        client: an SDK client; default: :func:`labeler.studio.client.connect` with env / the state dir's server.
        exported_tasks: ``{project_id: [exported task dicts]}`` instead of exporting (tests / benchmarks).
        bank_state: state dir of the corner-case bank (:mod:`labeler.refine.bank`): every reviewed frame (not a
            bad frame) is added with its final labels and its review reasons as a new bank version, so
            ``labeler gate`` checks new models on it. None: the bank is left alone.
        propagate: :class:`labeler.refine.propagate.PropagateCfg` for carrying the reviewed frames' labels to the
            log's auto-accepted frames (:mod:`labeler.review.propagation`); None: the run's ``review.propagate``.
    """
    from labeler.studio.push import export_tasks

    run_dir = str(run_dir)
    record = read_run_record(run_dir)
    run_id = record["run_id"]
    rt = read_table(run_dir, "review_tasks").to_pylist()
    res = PullResult(run_dir=run_dir)
    lock_path = Path(run_dir) / ".pull.lock"
    with open(lock_path, "w") as lock:  # one pull of a run at a time (webhook + CLI)
        fcntl.flock(lock, fcntl.LOCK_EX)
        by_pid: dict[int, list[dict]] = {}
        for r in rt:
            by_pid.setdefault(int(r["project_id"]), []).append(r)
        names: dict = {}
        if by_pid and exported_tasks is None:
            client = client or _client_for(run_dir)
            names = _reviewer_names(client)
        logs, frames, labels, labels_2d = [], [], [], []
        for pid, rows in sorted(by_pid.items()):
            tasks = exported_tasks[pid] if exported_tasks is not None else export_tasks(client, pid, full_predictions=True)
            by_id = {int(t["id"]): t for t in tasks}
            by_key = {}
            for t in sorted(tasks, key=lambda t: int(t["id"]), reverse=True):
                by_key[(t.get("data") or {}).get("frame_key")] = t
            for r in rows:
                t = by_id.get(int(r["task_id"]))
                if t is None or (t.get("data") or {}).get("frame_key") != r["frame_key"]:
                    t = by_key.get(r["frame_key"])
                if t is None:
                    raise StudioError(f"task {r['task_id']} ({r['frame_key']}) of run {run_id} is not in project {pid} "
                                      "any more: was it deleted in Label Studio?")
                o = analyse_task(t, run_id=run_id, project_id=pid, reviewer_names=names)
                frames.append(o["frame"])
                logs += o["log"]
                labels += o["labels"]
                labels_2d += o["labels_2d"]
        auto, auto_2d, auto_keys = _auto_labels(run_dir, run_id, record)
        from labeler.review.propagation import propagate_cfg_of, propagate_run

        pcfg = propagate if propagate is not None else propagate_cfg_of(record)
        auto, auto_2d, res.propagated = propagate_run(run_dir, record, run_id, frames, labels, auto, auto_2d, auto_keys, pcfg)
        reviewed = {(f["log_id"], f["timestamp_ns"]) for f in frames}
        labels = [x for x in auto if (x["log_id"], x["timestamp_ns"]) not in reviewed] + labels
        labels_2d = [x for x in auto_2d if (x["log_id"], x["timestamp_ns"]) not in reviewed] + labels_2d
        labels.sort(key=lambda x: (x["log_id"], x["timestamp_ns"], x["object_id"]))
        labels_2d.sort(key=lambda x: (x["log_id"], x["timestamp_ns"], x["camera"], x["object_id"]))
        logs.sort(key=lambda x: (x["log_id"], x["timestamp_ns"], x["view"] != "bev", x["view"], x["object_id"]))
        frames.sort(key=lambda x: (x["log_id"], x["timestamp_ns"]))
        for spec, rows in ((REVIEW_LOG, logs), (REVIEW_FRAMES, frames), (LABELS, labels), (LABELS_2D, labels_2d)):
            res.files[spec.name] = _replace_table(run_dir, spec, rows)
        if export:
            from labeler.review.export import export_labels

            good = {(f["log_id"], f["timestamp_ns"]) for f in frames if f["status"] == "reviewed" and f["verdict"] != "bad_frame"}
            res.files.update(export_labels(run_dir, labels, record=record, frames=good | (auto_keys - reviewed)))
    res.frames_reviewed = sum(f["status"] == "reviewed" for f in frames)
    res.frames_skipped = sum(f["status"] == "skipped" for f in frames)
    res.frames_pending = sum(f["status"] == "pending" for f in frames)
    res.frames_bad = sum(f["verdict"] == "bad_frame" for f in frames)
    res.frames_auto = len(auto_keys - reviewed)
    for r in logs:
        res.actions[r["action"]] = res.actions.get(r["action"], 0) + 1
    res.labels, res.labels_2d = len(labels), len(labels_2d)
    if bank_state is not None and res.frames_reviewed:
        res.bank_version, res.bank_frames = _add_to_bank(run_dir, record, frames, labels, bank_state)
    return res


def _add_to_bank(run_dir: str, record: dict, frames: list[dict], labels: list[dict], state: str) -> tuple[int | None, int]:
    """Reviewed frames (not bad frames) and their final labels into the corner-case bank; their ``kinds`` are the
    reasons the frame was sent to review (``frame_scores``). Returns (new bank version or None, frames added)."""
    import pandas as pd

    from labeler.refine.bank import add_frames, latest_version, read_bank

    good = {(f["log_id"], f["timestamp_ns"]) for f in frames if f["status"] == "reviewed" and f["verdict"] != "bad_frame"}
    if latest_version(state) is not None:
        f0, _, _ = read_bank(state)
        good -= set(zip(f0["log_id"], f0["timestamp_ns"].astype("int64")))
    if not good:
        return None, 0
    paths = {lid: path for lid, (path, _) in _open_inputs(record, {k[0] for k in good}).items()}
    scores = read_table(run_dir, "frame_scores").to_pylist()
    why = {(r["log_id"], r["timestamp_ns"]): sorted({x.split(":")[0] for x in r["reasons"]}) for r in scores}
    fr = pd.DataFrame([{"log_id": k[0], "timestamp_ns": k[1], "log_path": paths.get(k[0], ""), "kinds": why.get(k, [])}
                       for k in sorted(good)])
    lb = pd.DataFrame([{"log_id": x["log_id"], "timestamp_ns": x["timestamp_ns"], "track_id": x["object_id"],
                        "category": x["category"], **{c: x[c] for c in ("x", "y", "z", "l", "w", "h", "yaw")}}
                       for x in labels if (x["log_id"], x["timestamp_ns"]) in good],
                      columns=["log_id", "timestamp_ns", "track_id", "category", "x", "y", "z", "l", "w", "h", "yaw"])
    return add_frames(state, fr, lb, created_by=f"labeler pull {record.get('run_id', '')}"), len(fr)


def run_dir_of(state: str | None, night: str | None, run: str | None) -> str:
    """The run dir from ``--run`` or ``--state`` + ``--night`` (default night 'demo')."""
    if run:
        return str(Path(run).expanduser().resolve())
    st = state or os.environ.get("LABELER_STATE") or "./state"
    return str(Path(st).expanduser().resolve() / "runs" / (night or "demo"))


def table_rows(run_dir: str, spec) -> pa.Table:
    """Read one of the review tables of a run."""
    return read_table(run_dir, spec.name)


__all__ = ["ACTIONS", "PullResult", "SHIFT_M", "SIZE_M", "YAW_RAD", "analyse_task", "pull_run", "run_dir_of"]
