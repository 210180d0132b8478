"""``labeler pull``'s review propagation: each log's reviewed frames (their final labels) carried to the log's
auto-accepted frames along the run's refined tracks and by LiDAR registration
(:func:`labeler.refine.propagate.propagate`). I/O only: reads the run's tables and the log's keyframes.

A label it confirms, corrects or adds has provenance ``propagated``; one it leaves as the run accepted it stays
``auto``; a refined box whose track a reviewer deleted nearby is dropped. Logs without refinement
(``labels_source`` raw), without a good reviewed frame, or whose input cannot be opened any more keep the run's
auto labels (the last with a warning naming the log).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from labeler.geometry.boxes import BOX_COLUMNS
from labeler.io.tables import read_table
from labeler.refine.propagate import PROVENANCE, PropagateCfg, propagate

log = logging.getLogger(__name__)

KEYFRAME_OUTCOMES = ("auto_accepted", "review")


def propagate_cfg_of(record: dict) -> PropagateCfg:
    """The run's ``review.propagate`` settings (its config snapshot in run.json); disabled when absent."""
    import dataclasses

    d = ((record.get("config") or {}).get("review") or {}).get("propagate") or {}
    known = {f.name for f in dataclasses.fields(PropagateCfg)}
    return PropagateCfg(**{k: v for k, v in d.items() if k in known})


class LogFrames:
    """Poses (``timestamp_ns -> world_from_lidar``, a read-only mapping) and LiDAR points (call with a timestamp) of
    one log's keyframes, loaded on first use; points of the ``keep`` most recent frames stay in memory."""

    def __init__(self, source, frame_index: dict[int, int], keep: int = 64):
        self.source, self.frame_index, self.keep = source, {int(k): int(v) for k, v in frame_index.items()}, keep
        self._poses: dict[int, np.ndarray] = {}
        self._points: OrderedDict[int, np.ndarray] = OrderedDict()

    def _load(self, t: int) -> None:
        if t not in self.frame_index:
            raise KeyError(f"timestamp_ns={t} is not a keyframe of log {getattr(self.source, 'log_id', '?')}")
        fr = self.source.load_frame(self.frame_index[t], with_images=False)
        self._poses[t] = np.asarray(fr.world_from_lidar, dtype=np.float64)
        self._points[t] = np.asarray(fr.points[:, :3], dtype=np.float64)
        while len(self._points) > self.keep:
            self._points.popitem(last=False)

    def __getitem__(self, t) -> np.ndarray:
        t = int(t)
        if t not in self._poses:
            self._load(t)
        return self._poses[t]

    def __call__(self, t) -> np.ndarray:
        t = int(t)
        if t not in self._points:
            self._load(t)
        self._points.move_to_end(t)
        return self._points[t]


def propagate_run(run_dir: str, record: dict, run_id: str, frames: list[dict], human: list[dict], auto: list[dict],
                  auto_2d: list[dict], auto_keys: set, cfg: PropagateCfg) -> tuple[list[dict], list[dict], int]:
    """(auto labels, auto 2D labels, number of propagated labels) after propagating the good reviewed frames
    (``frames``: review_frames rows, ``human``: their labels) to the auto-accepted frames ``auto_keys``."""
    import pandas as pd

    from labeler.review.pull import _open_inputs, _project_refined

    if not cfg.enabled:
        return auto, auto_2d, 0
    good = {(f["log_id"], int(f["timestamp_ns"])) for f in frames
            if f["status"] == "reviewed" and f["verdict"] != "bad_frame"}
    refined_logs = {lid for lid, s in (record.get("labels_source") or {}).items() if s == "refined"}
    logs = sorted({l for l, _ in good} & {l for l, _ in auto_keys} & refined_logs)
    if not logs:
        return auto, auto_2d, 0
    refined = read_table(run_dir, "refined_3d").to_pandas()
    acc = read_table(run_dir, "accepted_3d").to_pandas()
    ftab = read_table(run_dir, "frames").to_pandas()
    sources = _open_inputs(record, set(logs))
    reviewed_any = {(f["log_id"], int(f["timestamp_ns"])) for f in frames}
    n_prop = 0
    for lid in logs:
        if lid not in sources:
            log.warning("review propagation skipped for log %s: its input could not be opened", lid)
            continue
        kf = ftab[(ftab["log_id"] == lid) & ftab["outcome"].isin(KEYFRAME_OUTCOMES)]
        lf = LogFrames(sources[lid][1], dict(zip(kf["timestamp_ns"].astype("int64"), kf["frame_index"])))
        rf = refined[(refined["log_id"] == lid) & refined["timestamp_ns"].isin(set(lf.frame_index))].reset_index(drop=True)
        a = acc[(acc["log_id"] == lid) & (acc["source_table"] == "refined_3d")]
        accepted = set(zip(a["timestamp_ns"].astype("int64"), a["object_id"]))
        accept = np.array([(int(t), o) in accepted for t, o in zip(rf["timestamp_ns"], rf["object_id"])], dtype=bool)
        rts = sorted(t for l, t in good if l == lid)
        rev = pd.DataFrame([x for x in human if x["log_id"] == lid and (lid, int(x["timestamp_ns"])) in good],
                           columns=["timestamp_ns", *BOX_COLUMNS, "category"])
        todo = sorted(t for l, t in auto_keys if l == lid and (l, t) not in reviewed_any)
        out = propagate(rf, rev, rts, lf, todo, accept, cfg, frame_points=lf)
        mv = dict(zip(zip(rf["timestamp_ns"].astype("int64"), rf["object_id"]), rf["model_version"]))
        before = {(x["timestamp_ns"], x["object_id"]): x for x in auto if x["log_id"] == lid}
        rows = []
        for r in out.itertuples(index=False):
            key = (int(r.timestamp_ns), r.object_id)
            if r.provenance != PROVENANCE and key in before:
                rows.append(before[key])
                continue
            rows.append({"log_id": lid, "timestamp_ns": int(r.timestamp_ns), "object_id": str(r.object_id), "run_id": run_id,
                         **{c: float(getattr(r, c)) for c in BOX_COLUMNS}, "category": str(r.category),
                         "provenance": PROVENANCE, "score": float(r.score), "uncertainty": None,
                         "model_version": mv.get(key, f"review:{run_id}"), "reviewer": None, "annotation_id": None,
                         "task_id": None})
            n_prop += 1
        todo_set = {(lid, t) for t in todo}
        auto = [x for x in auto if (x["log_id"], x["timestamp_ns"]) not in todo_set] + rows
        prov = {(x["timestamp_ns"], x["object_id"]): x["provenance"] for x in rows}
        projected = _project_refined(rows, record, run_id, sources)
        for x in projected:
            x["provenance"] = prov.get((x["timestamp_ns"], x["object_id"]), x["provenance"])
        auto_2d = [x for x in auto_2d if (x["log_id"], x["timestamp_ns"]) not in todo_set] + projected
    return auto, auto_2d, n_prop
