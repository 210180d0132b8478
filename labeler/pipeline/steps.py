"""The pipeline's Dask tasks. Each is a function of small, picklable inputs that reads its own data.

* :func:`inspect_log` - read a log's index: frame count, or a whole-log quarantine row.
* :func:`process_chunk` - ingest -> filter -> pre-label 3D -> project 2D -> score, for frames [start, stop) of a
  log; writes its predictions_3d / boxes_2d parts and returns the small per-frame rows.
* :func:`labeler.pipeline.logstep.refine_and_score_log` - after all chunks of a log: offboard refinement and the
  per-frame uncertainty signals (one task per log);
* :func:`prepare_review` - render the review assets of the selected frames of one chunk and build the
  Label Studio tasks.
"""

from __future__ import annotations

import functools
import posixpath
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from labeler.errors import InputError, LabelerError
from labeler.geometry.bev import BevGrid
from labeler.geometry.camera import boxes_to_2d
from labeler.io.tables import read_table, table_dir, write_part
from labeler.logs.registry import open_log
from labeler.pipeline import filters
from labeler.pipeline.rules import compile_rules
from labeler.pipeline.config import FilterCfg, ModelCfg, RenderCfg, ScoringCfg
from labeler.pipeline.scoring import score_frame
from labeler.refine.proposals import ProposalCfg
from labeler.refine.signals import SignalCfg
from labeler.schemas import BOXES_2D, CONTEXT_3D, PREDICTIONS_3D, REFINED_3D, to_table


@dataclass(frozen=True)
class Chunk:
    log_path: str
    format: str
    log_id: str
    index: int
    start: int
    stop: int

    @property
    def part(self) -> str:
        return f"{self.log_id}-{self.index:05d}"


@dataclass
class LogInfo:
    log_path: str
    format: str
    log_id: str
    num_frames: int
    quarantine: dict | None = None   # a whole-log quarantine row when the log is unreadable
    detector_frames: int = -1        # estimate: frames the detector will see (keyframes + context); -1 unknown


@dataclass
class ChunkResult:
    chunk: Chunk
    frames: list[dict] = field(default_factory=list)       # FRAMES rows (outcome filled in later for kept frames)
    quarantine: list[dict] = field(default_factory=list)   # QUARANTINE rows
    scores: list[dict] = field(default_factory=list)       # FRAME_SCORES rows (decision filled in later)
    num_predictions: int = 0
    model_version: str = ""
    # per kept frame, the inputs of the log-level signals: timestamp_ns, world_from_lidar (4x4 list), health flags,
    # above-ground clusters ((K, 6) list, see labeler.refine.signals.above_ground_clusters), ego speed, cluster
    # proposals (list of labeler.refine.proposals.frame_proposals rows, or None when refine.proposals is off)
    signal_inputs: list[dict] = field(default_factory=list)
    poses_known: bool = True      # the log has ego poses and is a time sequence (refinement needs both)
    context_poses: dict = field(default_factory=dict)  # timestamp_ns -> world_from_lidar of tracking-context frames


def _count_lidar_files(log_path: str) -> int:
    try:
        fs, root = fsspec.core.url_to_fs(log_path)
        d = posixpath.join(root, "lidar")
        return len([p for p in fs.ls(d, detail=False) if p.endswith(".bin")]) if fs.exists(d) else 0
    except OSError:
        return 0


def detector_frames(idx, fcfg: FilterCfg, context_hz: float = 0.0) -> int:
    """How many of a log's frames the detector will see, from its poses alone (the pose decisions; the health
    filters and rules, which need the frames, can only drop more): kept keyframes plus, with ``context_hz``, the
    tracking-context frames between them. The pipeline orders logs by it (``cluster.submission_order``)."""
    poses_known = bool(getattr(idx, "has_poses", True))
    decisions = filters.pose_decisions(idx.timestamps_ns, idx.world_from_ego, fcfg, poses_known,
                                       bool(getattr(idx, "sequential", True)))
    n = sum(d is None for d in decisions)
    if context_hz > 0:
        period_ns, last = 0.9e9 / context_hz, None
        for t, d in zip(np.asarray(idx.timestamps_ns, dtype=np.int64).tolist(), decisions):
            if d is None or (d == filters.DROP_NOT_KEYFRAME and (last is None or t - last >= period_ns)):
                n += d is not None
                last = t
    return int(n)


def inspect_log(log_path: str, format: str, run_id: str, fcfg: FilterCfg | None = None,
                context_hz: float = 0.0) -> LogInfo:
    """Read a log's index (and with ``fcfg``, estimate its :func:`detector_frames`). An unreadable log becomes one
    quarantine row covering all its frames."""
    try:
        idx = _index(log_path, format)
        return LogInfo(log_path, format, idx.log_id, len(idx),
                       detector_frames=detector_frames(idx, fcfg, context_hz) if fcfg is not None else -1)
    except InputError as e:
        n = _count_lidar_files(log_path)
        log_id = posixpath.basename(str(log_path).rstrip("/"))
        row = {"log_id": log_id, "timestamp_ns": None, "run_id": run_id, "file": e.file, "stage": "ingest",
               "cause": e.what, "detail": f"whole log quarantined: {e.detail}", "frames_affected": n}
        return LogInfo(log_path, format, log_id, n, quarantine=row)


@functools.lru_cache(maxsize=8)
def _index(log_path: str, format: str):
    return open_log(log_path, format)


_MODEL_CACHE: dict[str, object] = {}


def loaded_models() -> int:
    """How many detectors this worker process holds (diagnostics: a model is loaded once per worker)."""
    return len(_MODEL_CACHE)


def get_model(cfg: ModelCfg):
    """The detector for ``cfg``, loaded once per worker process (not per frame)."""
    key = repr(cfg)
    if key not in _MODEL_CACHE:
        from labeler.models.registry import load_model

        _MODEL_CACHE[key] = load_model(cfg.name, checkpoint=cfg.checkpoint, trusted=cfg.trusted, device=cfg.device,
                                       score_threshold=cfg.score_threshold, tta=cfg.tta or None,
                                       threads=cfg.threads, fit_points=cfg.fit_points or None)
    return _MODEL_CACHE[key]


def process_chunk(chunk: Chunk, run_id: str, run_dir: str, pipeline_version: str, fcfg: FilterCfg,
                  mcfg: ModelCfg, scfg: ScoringCfg, sigcfg: SignalCfg = SignalCfg(), context_hz: float = 0.0,
                  proposals: ProposalCfg | None = None) -> ChunkResult:
    """Ingest, filter, pre-label, project and score frames [start, stop) of one log; also the per-frame inputs
    of the log-level signals that need the points (above-ground clusters), since the points live only here.

    ``context_hz`` > 0: frames dropped only for the keyframe rate also go through the detector (at most that rate)
    and their boxes are written to ``context_3d``: tracking context for refinement, not labels.

    ``proposals`` enabled: each kept frame's clusters also get the geometric model's box, and the ones no detection
    explains go to the log-level refinement as cluster proposals (``signal_inputs[...]["proposals"]``)."""
    from labeler.refine.proposals import cluster_boxes, frame_proposals
    from labeler.refine.signals import above_ground_clusters

    idx = _index(chunk.log_path, chunk.format)
    poses_known = bool(getattr(idx, "has_poses", True))
    decisions = filters.pose_decisions(idx.timestamps_ns, idx.world_from_ego, fcfg, poses_known,
                                       bool(getattr(idx, "sequential", True)))
    speed = filters.ego_speed_mps(idx.timestamps_ns, idx.world_from_ego) if poses_known else np.full(len(idx), np.nan)
    model = get_model(mcfg)
    drop_rules = compile_rules(fcfg.drop_rules, "filter.drop_rules")
    flag_rules = compile_rules(fcfg.flag_rules, "filter.flag_rules")
    res = ChunkResult(chunk, model_version=model.version,
                      poses_known=poses_known and bool(getattr(idx, "sequential", True)))
    kept = []  # (frame, flags)
    context: list = []  # frames run through the detector only as tracking context
    ctx_rows: list[dict] = []
    period_ns = int(1e9 / context_hz) if context_hz > 0 else None
    last_used = None
    for i in range(chunk.start, chunk.stop):
        ts = int(idx.timestamps_ns[i])
        try:
            # readers return frames sorted by time (stable): a repeated timestamp belongs to its first frame
            if i > 0 and ts == int(idx.timestamps_ns[i - 1]):
                raise InputError(idx.lidar_file(i), "duplicate_timestamp", "another frame of the log has the same timestamp; the first one is kept", ts)
            if i > 0 and ts < int(idx.timestamps_ns[i - 1]):
                raise InputError(idx.lidar_file(i), "timestamp_out_of_order", "timestamp is before the previous frame's", ts)
            frame = idx.load_frame(i)
        except InputError as e:
            res.quarantine.append({"log_id": idx.log_id, "timestamp_ns": ts, "run_id": run_id, "file": e.file,
                                   "stage": "ingest", "cause": e.what, "detail": e.detail, "frames_affected": 1})
            continue
        drop, flags = filters.lidar_health(frame.points, fcfg)
        means = filters.image_means(frame.images)
        cam_flags = filters.camera_health(frame.images, ts, frame.camera_timestamps_ns, fcfg, means)
        if drop is None and cam_flags and fcfg.drop_broken_camera_frames:
            drop = filters.DROP_CAMERA_BROKEN
        tags, brightness = filters.scenario_tags(frame.images, float(speed[i]), fcfg, means)
        fields = {"speed_mps": float(speed[i]), "num_points": int(len(frame.points)), "frame_index": i, "log_id": idx.log_id,
                  "brightness": brightness, "hour": int(ts // 3_600_000_000_000 % 24), "tags": tags}
        if drop is None:
            drop = next((f"rule:{r.name}" for r in drop_rules if r(fields)), None)
        if drop is None:
            drop = decisions[i]
        T = frame.world_from_ego
        row = {"log_id": idx.log_id, "timestamp_ns": ts, "run_id": run_id, "frame_index": i,
               "lidar_file": frame.lidar_file, "num_points": int(len(frame.points)),
               "ego_x_m": float(T[0, 3]), "ego_y_m": float(T[1, 3]), "ego_yaw_rad": float(np.arctan2(T[1, 0], T[0, 0])),
               "ego_speed_mps": float(speed[i]), "cameras": sorted(frame.images), "tags": tags,
               "filter_reason": drop, "outcome": "filtered" if drop else "pending", "pipeline_version": pipeline_version}
        res.frames.append(row)
        if drop is None:
            kept.append((frame, flags + cam_flags, row, fields))
            last_used = ts
        elif (period_ns and drop == filters.DROP_NOT_KEYFRAME
              and (last_used is None or ts - last_used >= 0.9 * period_ns)):
            context.append(frame)
            last_used = ts
            if len(context) >= max(1, mcfg.batch_frames):
                ctx_rows += _context_rows(model, context, run_id, mcfg, res)
                context = []
    if context:
        ctx_rows += _context_rows(model, context, run_id, mcfg, res)
    preds, b2d = [], []
    for s in range(0, len(kept), max(1, mcfg.batch_frames)):
        batch = kept[s : s + mcfg.batch_frames]
        try:
            dets = model.predict([f for f, _, _, _ in batch])
        except LabelerError as e:
            raise LabelerError(f"model {mcfg.name} failed on log {idx.log_id}: {e}") from e
        for (frame, flags, row, fields), det in zip(batch, dets):
            keep = np.asarray(det.scores) >= mcfg.score_threshold
            boxes = np.asarray(det.boxes)[keep]
            cats = np.asarray(det.categories)[keep]
            scores = np.asarray(det.scores, dtype=np.float64)[keep]
            npts = np.asarray(det.num_points)[keep]
            # model-derived scenario tags, then the flag rules, which may use them
            row["tags"] = fields["tags"] = list(row["tags"]) + filters.model_tags(cats, scores, boxes, fcfg)
            flags = flags + [f"rule:{r.name}" for r in flag_rules if r(fields)]
            unc = None if getattr(det, "uncertainty", None) is None else np.asarray(det.uncertainty, dtype=np.float64)[keep]
            ids = [f"p{k:03d}" for k in range(len(boxes))]
            for k in range(len(boxes)):
                b = boxes[k]
                preds.append({"log_id": frame.log_id, "timestamp_ns": frame.timestamp_ns, "object_id": ids[k], "run_id": run_id,
                              "x": b[0], "y": b[1], "z": b[2], "l": b[3], "w": b[4], "h": b[5], "yaw": b[6],
                              "category": str(cats[k]), "score": float(scores[k]), "num_points": int(npts[k]),
                              "uncertainty": None if unc is None else float(unc[k]),
                              "model_name": model.name, "model_version": model.version})
            for cam, calib in frame.cameras.items():
                if cam not in frame.images or not len(boxes):
                    continue
                bx, vis, trunc, depth = boxes_to_2d(calib, boxes)
                for k in np.nonzero(vis & (depth > 0))[0]:
                    b2d.append({"log_id": frame.log_id, "timestamp_ns": frame.timestamp_ns, "object_id": ids[k], "camera": cam,
                                "run_id": run_id, "x1": bx[k, 0], "y1": bx[k, 1], "x2": bx[k, 2], "y2": bx[k, 3],
                                "truncation": float(trunc[k]), "depth_m": float(depth[k]), "category": str(cats[k]),
                                "score": float(scores[k]), "model_version": model.version})
            props = None
            if proposals is not None and proposals.enabled:  # one clustering pass for the signal and the proposals
                cb = cluster_boxes(frame.points, fit_min_points=proposals.min_points)
                clusters = cb.clusters if sigcfg.above_ground_clusters else None
                props = frame_proposals(cb, boxes, proposals).to_dict("records")
            else:
                clusters = above_ground_clusters(frame.points) if sigcfg.above_ground_clusters else None
            res.signal_inputs.append({"timestamp_ns": int(frame.timestamp_ns),
                                      "world_from_lidar": np.asarray(frame.world_from_lidar, dtype=np.float64).tolist(),
                                      "health": list(flags), "speed_mps": float(row["ego_speed_mps"]),
                                      "clusters": None if clusters is None else clusters.tolist(),
                                      "proposals": props})
            fs_ = score_frame(boxes, cats, scores, npts, flags, scfg, uncertainty=unc)
            res.scores.append({"log_id": frame.log_id, "timestamp_ns": frame.timestamp_ns, "run_id": run_id,
                               "confidence": fs_.confidence, "priority": fs_.priority, "reasons": fs_.reasons,
                               "num_boxes": int(len(boxes)), "decision": "pending", "model_version": model.version})
    write_part(run_dir, PREDICTIONS_3D, to_table(PREDICTIONS_3D, preds), chunk.part)
    write_part(run_dir, CONTEXT_3D, to_table(CONTEXT_3D, ctx_rows), chunk.part)
    write_part(run_dir, BOXES_2D, to_table(BOXES_2D, b2d), chunk.part)
    res.num_predictions = len(preds)
    return res


def _context_rows(model, frames: list, run_id: str, mcfg: ModelCfg, res: ChunkResult) -> list[dict]:
    """Detections of tracking-context frames as context_3d rows; their poses go to ``res.context_poses``."""
    try:
        dets = model.predict(frames)
    except LabelerError as e:
        raise LabelerError(f"model {mcfg.name} failed on log {frames[0].log_id}: {e}") from e
    rows = []
    for frame, det in zip(frames, dets):
        res.context_poses[int(frame.timestamp_ns)] = np.asarray(frame.world_from_lidar, dtype=np.float64).tolist()
        unc = getattr(det, "uncertainty", None)
        for k in np.nonzero(np.asarray(det.scores) >= mcfg.score_threshold)[0]:
            b = np.asarray(det.boxes)[k]
            rows.append({"log_id": frame.log_id, "timestamp_ns": int(frame.timestamp_ns), "object_id": f"p{k:03d}",
                         "run_id": run_id, **dict(zip(("x", "y", "z", "l", "w", "h", "yaw"), map(float, b))),
                         "category": str(det.categories[k]), "score": float(det.scores[k]),
                         "num_points": int(det.num_points[k]), "uncertainty": None if unc is None else float(unc[k]),
                         "model_name": model.name, "model_version": model.version})
    return rows


def prepare_review(chunk: Chunk, timestamps_ns: list[int], priorities: list[float], reasons: list[list[str]],
                   run_id: str, run_dir: str, rcfg: RenderCfg, labels_source: str = "raw", min_score: float = 0.0,
                   model_version: str = ""):
    """Render BEV images and copy camera images of the selected frames; return Label Studio ReviewTasks.

    The pre-annotations are the frame's ``labels_source`` boxes scoring at least ``min_score``: ``raw``
    (predictions_3d and its boxes_2d) or ``refined`` (refined_3d, the log's part; 2D boxes projected here).
    ``model_version`` names the detector on tasks whose frame has no box to show."""
    from labeler.render import render_bev
    from labeler.studio.tasks import CameraView, ReviewTask

    idx = _index(chunk.log_path, chunk.format)
    grid = BevGrid(rcfg.x_min_m, rcfg.x_max_m, rcfg.y_min_m, rcfg.y_max_m, rcfg.m_per_px)
    wanted = set(int(t) for t in timestamps_ns)
    flt = [("timestamp_ns", "in", sorted(wanted))] if wanted else None
    refined = labels_source == "refined"
    if refined:
        preds = _read_part(run_dir, REFINED_3D.name, chunk.log_id, flt)
        p2d = None
    else:
        preds = _read_part(run_dir, PREDICTIONS_3D.name, chunk.part, flt)
        p2d = _read_part(run_dir, BOXES_2D.name, chunk.part, flt)
        p2d = p2d.filter(pc.greater_equal(p2d.column("score"), min_score))
    preds = preds.filter(pc.greater_equal(preds.column("score"), min_score))
    pos: dict[int, int] = {}
    for i, t in enumerate(idx.timestamps_ns):
        pos.setdefault(int(t), i)  # a duplicated timestamp: the first frame is the one kept
    out = []
    for ts, prio, why in zip(timestamps_ns, priorities, reasons):
        i = pos[int(ts)]
        frame = idx.load_frame(i, with_images=True)
        asset_dir = Path(run_dir) / "assets" / frame.log_id / str(frame.timestamp_ns)
        asset_dir.mkdir(parents=True, exist_ok=True)
        bev_path = asset_dir / "bev.png"
        Image.fromarray(render_bev(frame.points, grid, rcfg.color_by, ground_z_m=-float(frame.ego_from_lidar[2, 3]) if frame.ego_from_lidar[2, 3] else -1.8)).save(bev_path)
        fp = preds.filter(pc.equal(preds.column("timestamp_ns"), int(ts)))
        boxes = np.stack([fp.column(c).to_numpy() for c in ("x", "y", "z", "l", "w", "h", "yaw")], axis=1) if fp.num_rows else np.zeros((0, 7))
        views = []
        for cam, img in sorted(frame.images.items()):
            src = frame.image_files.get(cam, "")
            if src.lower().endswith((".jpg", ".jpeg", ".png")):
                dst = asset_dir / f"cam_{cam}{Path(src).suffix.lower()}"
                with fsspec.open(src, "rb") as fsrc, open(dst, "wb") as fdst:
                    shutil.copyfileobj(fsrc, fdst)
            else:  # images that live inside a container (e.g. a ROS bag)
                dst = asset_dir / f"cam_{cam}.jpg"
                Image.fromarray(img).save(dst, quality=92)
            calib = frame.cameras[cam]
            if refined:
                cam_boxes = _project(calib, boxes, fp)
            else:
                f2 = p2d.filter(pc.and_(pc.equal(p2d.column("timestamp_ns"), int(ts)), pc.equal(p2d.column("camera"), cam)))
                cam_boxes = [(r["object_id"], r["x1"], r["y1"], r["x2"], r["y2"], r["category"], r["score"]) for r in f2.to_pylist()]
            views.append(CameraView(name=cam, image_path=str(dst), width=calib.width, height=calib.height, boxes=cam_boxes))
        out.append(ReviewTask(frame_key=frame.key, log_id=frame.log_id, timestamp_ns=frame.timestamp_ns,
                              bev_image_path=str(bev_path), bev_grid=grid, boxes=boxes,
                              categories=fp.column("category").to_pylist(), scores=fp.column("score").to_pylist(),
                              object_ids=fp.column("object_id").to_pylist(), cameras=views, priority=float(prio),
                              reasons=list(why),
                              model_version=fp.column("model_version")[0].as_py() if fp.num_rows else model_version,
                              run_id=run_id))
    return out


def _project(calib, boxes: np.ndarray, labels: pa.Table) -> list[tuple]:
    """2D boxes of ``boxes`` (rows of ``labels``) visible in one camera: (object_id, x1, y1, x2, y2, class, score)."""
    if not len(boxes):
        return []
    bx, vis, _, depth = boxes_to_2d(calib, boxes)
    ids, cats, scores = (labels.column(c).to_pylist() for c in ("object_id", "category", "score"))
    return [(ids[k], float(bx[k, 0]), float(bx[k, 1]), float(bx[k, 2]), float(bx[k, 3]), cats[k], float(scores[k]))
            for k in np.nonzero(vis & (depth > 0))[0]]


def _read_part(run_dir: str, name: str, part: str, filters_=None) -> pa.Table:
    import pyarrow.parquet as pq

    from labeler.schemas import TABLES

    path = posixpath.join(table_dir(run_dir, name), f"part-{part}.parquet")
    with fsspec.open(path, "rb") as f:
        return pq.read_table(f, filters=filters_, schema=TABLES[name].schema)


__all__ = ["Chunk", "ChunkResult", "LogInfo", "inspect_log", "process_chunk", "prepare_review", "get_model", "read_table"]
