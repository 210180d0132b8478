"""The pipeline's per-log Dask tasks, run once all chunks of a log are done (pure over the log's rows, plus
reading/writing the log's own table parts).

* :func:`refine_and_score_log` - offboard refinement of the log's predictions (``refine_log``: tracks, one size
  per track, smoothing, gaps filled, with ``refine.proposals`` the kept frames' cluster proposals tracked too;
  written to ``refined_3d`` and ``tracks_3d`` next to the raw ``predictions_3d``) and the per-frame uncertainty signals (:func:`labeler.refine.signals.frame_signals`:
  score band, TTA disagreement, likely false positives, rarity, track flicker, above-ground clusters no kept label
  explains, ego stopped, sensor health) -> frame priority with reasons.
* :func:`write_accepted` - after selection: the labels of the log's auto-accepted frames with their provenance
  (``accepted_3d``: source table and row, track, model version).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from labeler.geometry.boxes import BOX_COLUMNS
from labeler.io.tables import write_part
from labeler.pipeline.config import SelectionCfg
from labeler.refine.proposals import PROPOSAL_COLUMNS, log_proposals
from labeler.refine.signals import SignalCfg, frame_signals, stopped_frames, track_flicker
from labeler.refine.smoothing import RefineCfg, refine_log
from labeler.schemas import ACCEPTED_3D, CONTEXT_3D, PREDICTIONS_3D, REFINED_3D, TRACKS_3D, to_table


@dataclass
class LogSignals:
    """Per kept frame of one log: the signal priority, reasons and which boxes are its pre-labels."""

    log_id: str
    labels_source: str                                   # refined | raw
    frames: list[dict] = field(default_factory=list)     # timestamp_ns, priority, base_priority, reasons, uncertain_boxes
    num_refined: int = 0
    num_tracks: int = 0


def _accept_mask(df: pd.DataFrame, scfg: SelectionCfg) -> np.ndarray:
    if len(df) == 0:
        return np.zeros(0, dtype=bool)
    thr = df["category"].map(lambda c: scfg.accept_threshold(c)).to_numpy(np.float64)
    return df["score"].to_numpy(np.float64) >= thr


def read_log_predictions(run_dir: str, parts: list[str], table: str = PREDICTIONS_3D.name) -> pd.DataFrame:
    """The predictions_3d (or context_3d) rows of one log (its chunks' parts)."""
    from labeler.pipeline.steps import _read_part

    tables = [_read_part(run_dir, table, p) for p in parts]
    return pa.concat_tables(tables).to_pandas() if tables else PREDICTIONS_3D.schema.empty_table().to_pandas()


def refine_and_score_log(results: list, run_id: str, run_dir: str, rcfg: RefineCfg, sigcfg: SignalCfg,
                         scfg: SelectionCfg) -> LogSignals:
    """Refine one log and score its kept frames (``results``: the log's :class:`~labeler.pipeline.steps.ChunkResult`
    objects, in any order). Writes ``refined_3d`` / ``tracks_3d`` part ``<log_id>`` when refinement runs.

    Refinement runs when ``rcfg.enabled`` and the log has poses and is a time sequence; it tracks at whatever rate
    the detector ran (the keyframes: every tracker/refiner duration is in seconds, docs/refinement.md)."""
    results = sorted(results, key=lambda r: r.chunk.index)
    log_id = results[0].chunk.log_id
    inputs = {d["timestamp_ns"]: d for r in results for d in r.signal_inputs}
    times = np.array(sorted(inputs), dtype=np.int64)
    model_version = next((r.model_version for r in results if r.model_version), "")
    preds = read_log_predictions(run_dir, [r.chunk.part for r in results])
    refine = rcfg.enabled and all(r.poses_known for r in results) and len(times) > 0
    out = LogSignals(log_id, "refined" if refine else "raw")
    if refine:
        poses = {t: np.asarray(inputs[t]["world_from_lidar"], dtype=np.float64) for t in times.tolist()}
        ctx_poses = {int(t): np.asarray(T, dtype=np.float64) for r in results for t, T in r.context_poses.items()}
        ctx = read_log_predictions(run_dir, [r.chunk.part for r in results], CONTEXT_3D.name) if ctx_poses else preds.iloc[:0]
        inp = pd.concat([preds, ctx], ignore_index=True) if len(ctx) else preds
        props = log_proposals({t: pd.DataFrame(inputs[t].get("proposals") or [], columns=PROPOSAL_COLUMNS[2:])
                               for t in times.tolist()}) if rcfg.proposals.enabled else None
        refined, raw = refine_log(inp, {**ctx_poses, **poses}, np.array(sorted(set(times.tolist()) | set(ctx_poses))),
                                  cfg=rcfg, log_id=log_id, proposals=props)
        if ctx_poses:  # refined boxes and raw rows of the kept frames only (context frames are not labelled)
            keyframes = pa.array(times)
            refined = refined.filter(pa.compute.is_in(refined.column("timestamp_ns"), value_set=keyframes))
        labels = refined.to_pandas()
        raw = raw.to_pandas()
        flick = track_flicker(raw, sigcfg.min_hits)
        on_key = raw["timestamp_ns"].isin(set(times.tolist())).to_numpy()
        raw, flick, inp = raw[on_key], flick[on_key], inp[on_key]
        write_part(run_dir, REFINED_3D, to_table(REFINED_3D, {
            **{c: refined.column(c).to_pylist() for c in REFINED_SCHEMA_COLUMNS},
            "run_id": [run_id] * len(labels), "model_version": [model_version] * len(labels)}), log_id)
        write_part(run_dir, TRACKS_3D, to_table(TRACKS_3D, {
            "log_id": raw["log_id"].tolist(), "timestamp_ns": raw["timestamp_ns"].tolist(),
            "object_id": raw["object_id"].tolist(), "run_id": [run_id] * len(raw),
            "track_id": [None if not isinstance(t, str) else t for t in raw["track_id"]],
            "kept": raw["kept"].tolist(), "yaw_flipped": raw["yaw_flipped"].tolist(),
            "short_track": flick["short_track"].tolist(), "class_switch": flick["class_switch"].tolist(),
            "model_version": [model_version] * len(raw)}), log_id)
        raw = pd.concat([raw, flick], axis=1)
        raw["uncertainty"] = inp["uncertainty"].to_numpy(np.float64) if len(inp) else np.zeros(0)
        out.num_refined, out.num_tracks = len(labels), int(labels["track_id"].nunique()) if len(labels) else 0
    else:
        labels, raw = preds, preds
    kept = labels[_accept_mask(labels, scfg)]
    by_ts = dict(tuple(raw.groupby("timestamp_ns"))) if len(raw) else {}
    kept_by_ts = dict(tuple(kept.groupby("timestamp_ns"))) if len(kept) else {}
    empty = raw.iloc[:0]
    # the ego stands where it is slow at a keyframe and at the log's keyframes within stopped_hold_s of it
    stopped = dict(zip(times.tolist(), stopped_frames(
        times, [inputs[t]["speed_mps"] for t in times.tolist()], sigcfg.stopped_speed_mps, sigcfg.stopped_hold_s).tolist()))
    for t in times.tolist():
        r = by_ts.get(t, empty)
        k = kept_by_ts.get(t, kept.iloc[:0])
        info = inputs[t]
        unc = r["uncertainty"].to_numpy(np.float64) if "uncertainty" in r and r["uncertainty"].notna().any() else None
        sig = frame_signals(
            r["score"].to_numpy(np.float64), r["num_points"].to_numpy(np.int64), r["category"].tolist(),
            r[list(BOX_COLUMNS)].to_numpy(np.float64), uncertainty=unc,
            track_ids=r["track_id"].where(r["track_id"].notna(), None).tolist() if refine else None,
            flicker=r[["short_track", "class_switch", "yaw_flip"]] if refine else None,
            clusters=None if info["clusters"] is None else np.asarray(info["clusters"], dtype=np.float64).reshape(-1, 6),
            health_flags=info["health"], stopped=stopped[t],
            explain_boxes=k[list(BOX_COLUMNS)].to_numpy(np.float64), cfg=sigcfg)
        out.frames.append({"timestamp_ns": t, "priority": sig.priority, "reasons": sig.reasons,
                           "base_priority": sigcfg.per_box_weight * sig.uncertain_boxes,
                           "uncertain_boxes": sig.uncertain_boxes})
    return out


REFINED_SCHEMA_COLUMNS = [c for c in REFINED_3D.columns if c not in ("run_id", "model_version")]


def write_accepted(log_id: str, parts: list[str], timestamps_ns: list[int], labels_source: str, run_id: str,
                   run_dir: str, scfg: SelectionCfg) -> int:
    """Write ``accepted_3d`` part ``<log_id>``: the pre-labels (score >= the accept score of their class) of the
    log's auto-accepted frames, each naming the table and row it comes from. Returns the row count."""
    from labeler.pipeline.steps import _read_part

    wanted = sorted(set(int(t) for t in timestamps_ns))
    flt = [("timestamp_ns", "in", wanted)] if wanted else None
    if labels_source == "refined":
        df = _read_part(run_dir, REFINED_3D.name, log_id, flt).to_pandas() if wanted else pd.DataFrame()
        table = REFINED_3D.name
    else:
        df = pd.concat([_read_part(run_dir, PREDICTIONS_3D.name, p, flt).to_pandas() for p in parts]) if wanted else pd.DataFrame()
        table = PREDICTIONS_3D.name
    if len(df):
        df = df[df["timestamp_ns"].isin(wanted)]
        df = df[_accept_mask(df, scfg)]
    n = len(df)
    cols = {"log_id": [log_id] * n, "timestamp_ns": df["timestamp_ns"].tolist() if n else [],
            "object_id": df["object_id"].tolist() if n else [], "run_id": [run_id] * n, "source_table": [table] * n,
            "track_id": (df["track_id"].tolist() if "track_id" in df else [None] * n) if n else [],
            **{c: df[c].tolist() if n else [] for c in BOX_COLUMNS},
            "category": df["category"].tolist() if n else [], "score": df["score"].tolist() if n else [],
            "model_version": df["model_version"].tolist() if n else []}
    write_part(run_dir, ACCEPTED_3D, to_table(ACCEPTED_3D, cols), log_id)
    return n
