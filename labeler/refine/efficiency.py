"""``labeler bench efficiency``: how much human effort the pre-labels save, measured on ground truth.

Protocol (documented in docs/refinement.md):

* held-out simulated logs with ground truth; the detector runs on every frame once (cached, keyed on the model
  version); detections under ``pred_min_score`` are dropped (the pipeline's ``model.score_threshold``); the
  *evaluation frames* are every ``frame_step``-th frame (the pipeline's keyframes); refinement sees every
  ``refine_step``-th frame's detections (1: keyframes + 10 Hz context as in pipelines/nightly.yaml);
* each strategy orders the evaluation frames for review and a budget (fraction of evaluation frames) is sent
  to review; the reviewer is simulated by the ground truth: a reviewed frame ends exactly right, an auto-accepted
  frame keeps its pre-labels (boxes with score >= ``accept_score``);
* **final box error rate** = (missed + spurious + poorly matched) / GT boxes, over all evaluation frames, where
  per frame pre-labels and GT boxes (both within ``max_range_m`` of the LiDAR, GT with >= 1 LiDAR point) are
  matched one-to-one by the Hungarian method on BEV centre distance (<= ``match_dist_m``); a matched pair is
  poorly matched when its BEV IoU < ``iou_threshold`` or its class differs; unmatched GT = missed, unmatched
  pre-label = spurious;
* **human seconds** under :class:`labeler.review.effort.CostModel` (the review module's assumptions): a reviewed
  frame costs ``frame_s`` + ``verify_s`` per correct box + ``edit_3d_s`` per badly placed box + ``relabel_s`` per
  wrong class (well placed) + ``add_3d_s`` per missed box + ``delete_s`` per spurious box; an auto-accepted
  frame costs nothing; **from scratch** = ``frame_s`` per frame + ``scratch_3d_s`` per GT box, every frame;
* **corner-case coverage**: an injected corner case (corner_cases.parquet) is an *event* (a track kind:
  one (kind, track); a frame kind: a run of consecutive frames); reported per event (>= 1 of its evaluation frames
  reviewed) and per frame (share of its evaluation frames reviewed).

Pure functions first; :func:`collect` (I/O: reads logs, runs the model, caches) and :func:`run_benchmark` last.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from labeler.geometry.boxes import BOX_COLUMNS, bev_iou
from labeler.refine.propagate import PropagateCfg
from labeler.refine.smoothing import RefineCfg
from labeler.review.effort import CostModel

DEFAULT_BUDGETS = (0.0, 0.02, 0.05, 0.10, 0.20, 0.50, 1.0)
STRATEGIES = ("random", "score_only", "all_signals")


@dataclass(frozen=True)
class BenchCfg:
    frame_step: int = 5                   # evaluation frames: every N-th (5: the pipeline's 2 Hz keyframes)
    pred_min_score: float = 0.3           # detections below are dropped before anything else, as the pipeline's
                                          # model.score_threshold does (pipelines/nightly.yaml: 0.3)
    accept_score: float = 0.3             # auto-accepted pre-labels need this score ...
    accept_raw: dict = field(default_factory=dict)      # ... or this per class (class -> score), single-frame boxes
    accept_refined: dict = field(default_factory=dict)  # ... and for refined boxes
    match_dist_m: float = 2.0
    iou_threshold: float = 0.5
    max_range_m: float = 50.0
    min_gap_s: float = 1.0
    spread_s: float = 0.0                 # all-signals selection spreads picks over each log (select_diverse spread_s)
    budgets: tuple[float, ...] = DEFAULT_BUDGETS
    seed: int = 0
    refine: RefineCfg = field(default_factory=RefineCfg)
    refine_step: int = 0                  # detections fed to refinement: every N-th frame (0: frame_step, i.e. the
                                          # keyframes the pipeline runs the detector on; 1: every 10 Hz sweep)
    propagate: PropagateCfg = field(default_factory=PropagateCfg)  # enabled: also rows where the reviewed frames'
                                          # labels are propagated along the refined tracks (labeler/refine/propagate.py)

    def accept_mask(self, labels: pd.DataFrame, refined: bool) -> np.ndarray:
        by = self.accept_refined if refined else self.accept_raw
        thr = labels["category"].map(lambda c: float(by.get(str(c), self.accept_score))).to_numpy(np.float64)
        return labels["score"].to_numpy(np.float64) >= thr


# ------------------------------------------------------------------------------------------------ matching


@dataclass
class FrameOutcome:
    """What a reviewer would do to one frame's pre-labels to make them equal the ground truth."""

    num_gt: int
    correct: int
    edited: int       # matched, BEV IoU < threshold (box must be moved / resized / turned)
    relabelled: int   # matched, box fine, class wrong
    missed: int
    spurious: int

    @property
    def errors(self) -> int:
        return self.edited + self.relabelled + self.missed + self.spurious


def match_centres(pred_xy, gt_xy, match_dist_m: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one Hungarian matching on BEV centre distance; pairs farther than ``match_dist_m`` never match.
    Returns (prediction rows, ground-truth rows) of the matched pairs."""
    p = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2)
    g = np.asarray(gt_xy, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0 or len(g) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    D = np.hypot(p[:, None, 0] - g[None, :, 0], p[:, None, 1] - g[None, :, 1])
    C = np.where(D <= match_dist_m, D, 1e6)
    ri, ci = linear_sum_assignment(C)
    ok = C[ri, ci] < 1e6
    return ri[ok], ci[ok]


def match_frame(pred_boxes, pred_cats, gt_boxes, gt_cats, match_dist_m: float = 2.0,
                iou_threshold: float = 0.5) -> FrameOutcome:
    """One-to-one Hungarian matching on BEV centre distance (:func:`match_centres`)."""
    pb = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 7)
    gb = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 7)
    pc = np.asarray(pred_cats, dtype=object).reshape(-1)
    gc = np.asarray(gt_cats, dtype=object).reshape(-1)
    if len(pb) == 0 or len(gb) == 0:
        return FrameOutcome(len(gb), 0, 0, 0, len(gb), len(pb))
    ri, ci = match_centres(pb[:, :2], gb[:, :2], match_dist_m)
    correct = edited = relabel = 0
    for i, j in zip(ri, ci):
        iou = bev_iou(pb[i:i + 1], gb[j:j + 1])[0, 0]
        if iou < iou_threshold:
            edited += 1
        elif str(pc[i]) != str(gc[j]):
            relabel += 1
        else:
            correct += 1
    return FrameOutcome(len(gb), correct, edited, relabel, len(gb) - len(ri), len(pb) - len(ri))


def review_seconds(o: FrameOutcome, cm: CostModel = CostModel()) -> float:
    """Human seconds to review one frame to exactly right (see the module docstring)."""
    return (cm.frame_s + cm.verify_s * o.correct + cm.edit_3d_s * o.edited + cm.relabel_s * o.relabelled
            + cm.add_3d_s * o.missed + cm.delete_s * o.spurious)


def scratch_seconds(num_gt: int, num_frames: int, cm: CostModel = CostModel()) -> float:
    return cm.frame_s * num_frames + cm.scratch_3d_s * num_gt


def budget_point(outcomes: list[FrameOutcome], selected, cm: CostModel = CostModel()) -> dict:
    """Final error rate and human seconds when the frames in ``selected`` are reviewed (to exactly right)."""
    sel = np.asarray(selected, dtype=bool)
    n_gt = sum(o.num_gt for o in outcomes)
    err = sum(o.errors for o, s in zip(outcomes, sel) if not s)
    parts = {k: sum(getattr(o, k) for o, s in zip(outcomes, sel) if not s) for k in ("missed", "spurious", "edited", "relabelled")}
    human = sum(review_seconds(o, cm) for o, s in zip(outcomes, sel) if s)
    scratch = scratch_seconds(n_gt, len(outcomes), cm)
    return {"frames_reviewed": int(sel.sum()), "error_rate": err / max(1, n_gt), "errors": err, **parts,
            "human_s": human, "scratch_s": scratch, "savings_x": scratch / human if human > 0 else float("inf")}


def corner_events(cc: pd.DataFrame, eval_ts: dict[str, set[int]], gap_s: float = 1.5) -> pd.DataFrame:
    """Corner-case events over evaluation frames: rows ``log_id, kind, event, timestamp_ns`` (one per frame of
    the event). ``cc`` has ``log_id, timestamp_ns, kind, track_id`` (null for frame kinds)."""
    rows = []
    for (log, kind), g in cc.groupby(["log_id", "kind"], sort=True):
        g = g[g["timestamp_ns"].isin(eval_ts.get(log, set()))]
        if g.empty:
            continue
        if g["track_id"].notna().any():
            for tid, h in g.groupby(g["track_id"].fillna("")):
                for t in sorted(set(h["timestamp_ns"])):
                    rows.append((log, kind, f"{log}|{kind}|{tid}", int(t)))
        else:
            ts = sorted(set(int(t) for t in g["timestamp_ns"]))
            k = 0
            for a, t in enumerate(ts):
                if a and t - ts[a - 1] > gap_s * 1e9:
                    k += 1
                rows.append((log, kind, f"{log}|{kind}|{k}", t))
    return pd.DataFrame(rows, columns=["log_id", "kind", "event", "timestamp_ns"]).drop_duplicates()


def corner_coverage(events: pd.DataFrame, selected_keys: set[tuple[str, int]]) -> dict:
    """Share of corner-case events with >= 1 reviewed frame, share of corner-case frames reviewed, and the events
    no reviewed frame reached (``missed_events``: ``log|kind|event`` names)."""
    if events.empty:
        return {"events": 0, "event_coverage": float("nan"), "frame_coverage": float("nan"), "missed_events": []}
    hit = np.array([(l, int(t)) in selected_keys for l, t in zip(events["log_id"], events["timestamp_ns"])])
    ev = pd.Series(hit).groupby(events["event"].to_numpy()).any()
    frames = events.drop_duplicates(["log_id", "timestamp_ns"])
    fhit = np.array([(l, int(t)) in selected_keys for l, t in zip(frames["log_id"], frames["timestamp_ns"])])
    return {"events": int(len(ev)), "event_coverage": float(ev.mean()), "corner_frames": int(len(frames)),
            "frame_coverage": float(fhit.mean()), "missed_events": sorted(str(e) for e in ev.index[~ev.to_numpy()])}


# ------------------------------------------------------------------------------------------------ priorities


def score_only_priority(scores) -> float:
    """The score-only baseline: 1 - geometric mean of the frame's box scores (the pipeline's confidence without
    reasons); a frame without boxes gets 0.1."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return 0.1
    return float(1.0 - np.exp(np.mean(np.log(np.clip(s, 1e-3, 1.0)))))


def select(strategy: str, frames: pd.DataFrame, budget: float, cfg: BenchCfg) -> np.ndarray:
    """Mask of ``frames`` (columns log_id, timestamp_ns, score_priority, signal_priority, reasons) to review."""
    from labeler.refine.signals import budget_frames, select_by_priority, select_diverse

    n = len(frames)
    if strategy == "random":
        rng = np.random.default_rng(cfg.seed)
        k = budget_frames(n, budget)
        m = np.zeros(n, dtype=bool)
        m[rng.permutation(n)[:k]] = True
        return m
    if strategy == "score_only":
        return select_by_priority(frames["log_id"].tolist(), frames["timestamp_ns"].to_numpy(),
                                  frames["score_priority"].to_numpy(), budget, cfg.min_gap_s)
    if strategy == "all_signals":
        return select_diverse(frames["log_id"].tolist(), frames["timestamp_ns"].to_numpy(),
                              frames["base_priority"].to_numpy(), list(frames["reasons"]), budget, min_gap_s=cfg.min_gap_s,
                              spread_s=cfg.spread_s)
    raise ValueError(f"unknown strategy {strategy!r}; known: {STRATEGIES}")


# ------------------------------------------------------------------------------------------------ I/O


def _cache_path(cache_dir: str | None, log_path: str, tag: str) -> str | None:
    """``<cache_dir>/<log name>-<tag>-<mtime of frames.parquet>.pkl`` (None without a cache dir): a log rewritten
    in place gets a new key."""
    if not cache_dir:
        return None
    os.makedirs(cache_dir, exist_ok=True)
    st = os.stat(os.path.join(str(log_path), "frames.parquet"))
    return os.path.join(cache_dir, f"{os.path.basename(str(log_path).rstrip('/'))}-{tag}-{int(st.st_mtime)}.pkl")


def _model_key(model_spec: str) -> str:
    return hashlib.sha1(model_spec.encode()).hexdigest()[:10]


def collect_log(log_path: str, model_spec: str, frame_step: int, cache_dir: str | None = None) -> dict:
    """Run the model on every frame of one log; keep poses, GT, corner cases, and for evaluation frames the
    sensor-health flags and above-ground clusters. Cached as a pickle in ``cache_dir`` (keyed by log, model,
    step)."""
    from labeler.logs.native import read_log_index
    from labeler.pipeline import filters
    from labeler.pipeline.config import FilterCfg
    from labeler.refine.bank import resolve_model
    from labeler.refine.signals import above_ground_clusters

    model = resolve_model(model_spec)
    # keyed by the model's version (it hashes the weights: retrained weights never reuse stale predictions) and by
    # the filter settings the sensor-health flags come from
    version = str(getattr(model, "version", ""))
    fcfg = FilterCfg()
    path = _cache_path(cache_dir, log_path, f"{_model_key(model_spec + '|' + version + '|' + repr(fcfg))}-{frame_step}")
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    idx = read_log_index(log_path)
    rows, eval_info = [], {}
    poses = {}
    for i in range(len(idx)):
        is_eval = i % frame_step == 0
        fr = idx.load_frame(i, with_images=is_eval)
        poses[int(fr.timestamp_ns)] = fr.world_from_lidar
        det = model.predict([fr])[0]
        unc = getattr(det, "uncertainty", None)
        for k in range(len(det)):
            rows.append({"log_id": idx.log_id, "timestamp_ns": int(fr.timestamp_ns), "object_id": f"p{k:03d}",
                         **dict(zip(BOX_COLUMNS, map(float, det.boxes[k]))), "category": str(det.categories[k]),
                         "score": float(det.scores[k]), "num_points": int(det.num_points[k]),
                         "uncertainty": float(unc[k]) if unc is not None else np.nan})
        if is_eval:
            _, flags = filters.lidar_health(fr.points, fcfg)
            flags = flags + filters.camera_health(fr.images, fr.timestamp_ns, fr.camera_timestamps_ns, fcfg)
            eval_info[int(fr.timestamp_ns)] = {"health": flags, "clusters": above_ground_clusters(fr.points)}
    ann = idx.annotations.to_pandas() if idx.annotations is not None else pd.DataFrame()
    cc = idx.corner_cases.to_pandas() if idx.corner_cases is not None else pd.DataFrame(columns=["timestamp_ns", "kind", "track_id"])
    from labeler.eval.groundtruth import map_category

    if len(ann):
        ann["category"] = [map_category(c) for c in ann["category"]]
        ann["log_id"] = idx.log_id
    cc["log_id"] = idx.log_id
    if "track_id" not in cc.columns:
        cc["track_id"] = None
    out = {"log_id": idx.log_id, "path": str(log_path), "timestamps_ns": idx.timestamps_ns.copy(),
           "world_from_ego": idx.world_from_ego.copy(), "poses": poses,
           "preds": pd.DataFrame(rows, columns=["log_id", "timestamp_ns", "object_id", *BOX_COLUMNS, "category", "score",
                                                "num_points", "uncertainty"]),
           "gt": ann, "corner_cases": cc, "eval": eval_info, "model_version": getattr(model, "version", model_spec)}
    if path:
        with open(path, "wb") as f:
            pickle.dump(out, f)
    return out


def collect_cluster_boxes(log_path: str, frame_step: int, cache_dir: str | None = None) -> dict:
    """``timestamp_ns -> ClusterBoxes`` (:func:`labeler.refine.proposals.cluster_boxes`) of every evaluation frame
    of one log, for cluster proposals (the pipeline clusters its kept frames, the benchmark's evaluation frames).
    Cached as a pickle in ``cache_dir`` (keyed by log, step, the geometric model's version and the log's mtime)."""
    from labeler.logs.native import read_log_index
    from labeler.models.geometric import GeometricDetector
    from labeler.refine.proposals import cluster_boxes

    path = _cache_path(cache_dir, log_path, f"clusterboxes-{GeometricDetector(large_end_faces=True).version}-{frame_step}")
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    idx = read_log_index(log_path)
    out = {}
    for i in range(0, len(idx), frame_step):
        fr = idx.load_frame(i, with_images=False)
        out[int(fr.timestamp_ns)] = cluster_boxes(fr.points)
    if path:
        with open(path, "wb") as f:
            pickle.dump(out, f)
    return out


def bench_proposals(data: dict, preds: pd.DataFrame, cfg: BenchCfg) -> pd.DataFrame | None:
    """The log's cluster proposals (``cfg.refine.proposals``) on its evaluation frames: clusters unexplained by
    that frame's detections (``preds``, already above ``pred_min_score``); None when proposals are off."""
    from labeler.refine.proposals import frame_proposals, log_proposals

    pcfg = cfg.refine.proposals
    if not pcfg.enabled:
        return None
    cbs = data.get("cluster_boxes")
    if cbs is None:
        raise ValueError("refine.proposals.enabled needs the evaluation frames' cluster boxes: run_benchmark "
                         "collects them (collect_cluster_boxes) into data['cluster_boxes']")
    by_ts = dict(tuple(preds.groupby("timestamp_ns")))
    empty = preds.iloc[:0]
    return log_proposals({t: frame_proposals(cb, by_ts.get(t, empty)[list(BOX_COLUMNS)].to_numpy(np.float64), pcfg)
                          for t, cb in cbs.items()})


def _in_range(df: pd.DataFrame, r: float) -> pd.DataFrame:
    return df[np.hypot(df["x"], df["y"]) < r]


def prepare_log(data: dict, refine: bool, cfg: BenchCfg, class_counts=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pre-labels at evaluation frames, per-evaluation-frame table with priorities and reasons) of one log,
    with or without refinement."""
    from labeler.refine.signals import SignalCfg, ego_stopped, frame_signals, track_flicker
    from labeler.refine.smoothing import refine_log

    preds = data["preds"]
    preds = preds[preds["score"] >= cfg.pred_min_score].reset_index(drop=True)
    eval_ts = sorted(data["eval"])
    scfg = SignalCfg()
    stopped = dict(zip(data["timestamps_ns"].tolist(), ego_stopped(
        data["timestamps_ns"], data["world_from_ego"], scfg.stopped_speed_mps, scfg.stopped_hold_s).tolist()))
    if refine:
        step = cfg.refine_step or cfg.frame_step
        grid = np.asarray(data["timestamps_ns"])[::step]
        inp = preds[preds["timestamp_ns"].isin(set(grid.tolist()))].reset_index(drop=True)
        props = bench_proposals(data, inp, cfg)
        if props is not None:
            props = props[props["timestamp_ns"].isin(set(grid.tolist()))]
        refined, raw = refine_log(inp, data["poses"], grid, cfg=cfg.refine, log_id=data["log_id"], proposals=props)
        labels = refined.to_pandas()
        raw = raw.to_pandas()
        flick = track_flicker(raw, scfg.min_hits)
        raw = pd.concat([raw, flick], axis=1)
        raw["uncertainty"] = inp["uncertainty"].to_numpy() if len(inp) else []
    else:
        labels = preds.copy()
        raw = None
    labels = labels[labels["timestamp_ns"].isin(set(eval_ts))]
    frows = []
    by_ts = dict(tuple(labels.groupby("timestamp_ns")))
    raw_by_ts = dict(tuple(raw.groupby("timestamp_ns"))) if raw is not None else {}
    for t in eval_ts:
        lab = by_ts.get(t, labels.iloc[:0])
        lab = _in_range(lab, cfg.max_range_m + 5)
        acc = lab[cfg.accept_mask(lab, refine)]
        info = data["eval"][t]
        if refine:
            # raw boxes carry the per-detection signals (flicker, TTA); refined boxes the final ones
            r = raw_by_ts.get(t, raw.iloc[:0] if raw is not None else None)
            r = _in_range(r, cfg.max_range_m + 5)
            tids = r["track_id"].where(r["track_id"].notna(), None).tolist()
            sig_raw = frame_signals(r["score"].to_numpy(), r["num_points"].to_numpy(), r["category"].tolist(),
                                    r[list(BOX_COLUMNS)].to_numpy(), track_ids=tids,
                                    uncertainty=r["uncertainty"].to_numpy() if r["uncertainty"].notna().any() else None,
                                    flicker=r[["short_track", "class_switch", "yaw_flip"]], clusters=info["clusters"],
                                    health_flags=info["health"], stopped=stopped.get(t, False), class_counts=class_counts,
                                    explain_boxes=acc[list(BOX_COLUMNS)].to_numpy(), cfg=scfg)
            sig = sig_raw
            # misses judged against the refined boxes (interpolation may explain a cluster)
        else:
            sig = frame_signals(lab["score"].to_numpy(), lab["num_points"].to_numpy(), lab["category"].tolist(),
                                lab[list(BOX_COLUMNS)].to_numpy(),
                                uncertainty=lab["uncertainty"].to_numpy() if lab["uncertainty"].notna().any() else None,
                                clusters=info["clusters"], health_flags=info["health"], stopped=stopped.get(t, False),
                                class_counts=class_counts, explain_boxes=acc[list(BOX_COLUMNS)].to_numpy(), cfg=scfg)
        frows.append({"log_id": data["log_id"], "timestamp_ns": int(t), "score_priority": score_only_priority(acc["score"]),
                      "signal_priority": sig.priority, "base_priority": 0.05 * sig.uncertain_boxes, "reasons": sig.reasons})
    return labels, pd.DataFrame(frows)


def gt_at(data: dict, cfg: BenchCfg) -> pd.DataFrame:
    g = data["gt"]
    if g is None or len(g) == 0:
        return pd.DataFrame(columns=["log_id", "timestamp_ns", *BOX_COLUMNS, "category"])
    g = g[g["timestamp_ns"].isin(set(data["eval"]))]
    g = _in_range(g, cfg.max_range_m)
    if "num_lidar_pts" in g.columns:
        g = g[g["num_lidar_pts"] != 0]
    return g


def outcomes_for(labels: pd.DataFrame, gt: pd.DataFrame, frames: pd.DataFrame, cfg: BenchCfg,
                 refined: bool = False) -> list[FrameOutcome]:
    return final_outcomes(labels[cfg.accept_mask(labels, refined)], gt, frames, cfg)


def final_outcomes(final: pd.DataFrame, gt: pd.DataFrame, frames: pd.DataFrame, cfg: BenchCfg) -> list[FrameOutcome]:
    """Per evaluation frame (``frames``' order), the outcome of the ``final`` labels against the ground truth."""
    lab = _in_range(final, cfg.max_range_m)
    lb = dict(tuple(lab.groupby(["log_id", "timestamp_ns"])))
    gb = dict(tuple(gt.groupby(["log_id", "timestamp_ns"])))
    out = []
    empty = pd.DataFrame(columns=[*BOX_COLUMNS, "category"])
    for key in zip(frames["log_id"], frames["timestamp_ns"]):
        p, g = lb.get(key, empty), gb.get(key, empty)
        out.append(match_frame(p[list(BOX_COLUMNS)].to_numpy(np.float64), p["category"].to_numpy(),
                               g[list(BOX_COLUMNS)].to_numpy(np.float64), g["category"].to_numpy(),
                               cfg.match_dist_m, cfg.iou_threshold))
    return out


def propagated_labels(labels: pd.DataFrame, gt: pd.DataFrame, reviewed: set, datas: list[dict],
                      cfg: BenchCfg) -> pd.DataFrame:
    """Final labels of every log's unreviewed evaluation frames when the ``reviewed`` ``(log_id, timestamp_ns)``
    frames are reviewed (ending exactly right: their ground truth) and their labels are propagated along the refined
    tracks (:func:`labeler.refine.propagate.propagate`, with each log's LiDAR points loaded as it asks for them)."""
    from labeler.refine.propagate import propagate

    finals = []
    for d in datas:
        lid = d["log_id"]
        lab = labels[labels["log_id"] == lid].reset_index(drop=True)
        rts = [t for (l, t) in reviewed if l == lid]
        g = gt[(gt["log_id"] == lid) & gt["timestamp_ns"].isin(set(rts))]
        if "frame_points" not in d:   # the log's LiDAR points, loaded as the propagation asks for them
            from labeler.logs.native import read_log_index
            from labeler.review.propagation import LogFrames

            src = read_log_index(d["path"])
            d["frame_points"] = LogFrames(src, {int(t): i for i, t in enumerate(src.timestamps_ns)})
        fin = propagate(lab, g, rts, d["poses"], sorted(d["eval"]), cfg.accept_mask(lab, True), cfg.propagate,
                        frame_points=d["frame_points"])
        fin["log_id"] = lid
        finals.append(fin)
    return pd.concat(finals, ignore_index=True)


def propagated_outcomes(labels: pd.DataFrame, gt: pd.DataFrame, frames: pd.DataFrame, selected, datas: list[dict],
                        cfg: BenchCfg, outs: list[FrameOutcome]) -> list[FrameOutcome]:
    """Outcomes when the ``selected`` frames are reviewed and their labels propagated (:func:`propagated_labels`).
    Reviewed frames keep their outcome in ``outs`` (it prices their review)."""
    sel = np.asarray(selected, dtype=bool)
    reviewed = {(l, int(t)) for l, t, s in zip(frames["log_id"], frames["timestamp_ns"], sel) if s}
    after = final_outcomes(propagated_labels(labels, gt, reviewed, datas, cfg), gt, frames, cfg)
    return [o if s else a for o, a, s in zip(outs, after, sel)]


@dataclass
class BenchResult:
    rows: list[dict]                       # one per (refine, strategy, budget)
    map: dict[str, float]                  # single_frame / refined nuScenes-style mAP
    scratch_s: float
    num_frames: int
    num_gt: int
    corner: dict = field(default_factory=dict)
    cost_model: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def run_benchmark(log_paths: list[str], model_spec: str = "geometric", cfg: BenchCfg = BenchCfg(),
                  cache_dir: str | None = None, cm: CostModel = CostModel(), progress=None) -> BenchResult:
    """The whole benchmark (see the module docstring)."""
    from labeler.eval.detection import EvalConfig, evaluate

    datas = []
    for p in log_paths:
        if progress:
            progress(f"collect {p}")
        datas.append(collect_log(p, model_spec, cfg.frame_step, cache_dir))
        if cfg.refine.proposals.enabled:
            datas[-1] = {**datas[-1], "cluster_boxes": collect_cluster_boxes(p, cfg.frame_step, cache_dir)}
    gt = pd.concat([gt_at(d, cfg) for d in datas], ignore_index=True)
    eval_ts = {d["log_id"]: set(d["eval"]) for d in datas}
    cc = pd.concat([d["corner_cases"] for d in datas], ignore_index=True)
    events = corner_events(cc, eval_ts)
    rows, maps = [], {}
    for refine in (False, True):
        labs, frs = zip(*[prepare_log(d, refine, cfg) for d in datas])
        labels = pd.concat(labs, ignore_index=True)
        frames = pd.concat(frs, ignore_index=True)
        frames["base_priority"] = frames["base_priority"]
        res = evaluate(labels[["log_id", "timestamp_ns", *BOX_COLUMNS, "category", "score"]],
                       gt[["log_id", "timestamp_ns", *BOX_COLUMNS, "category", "num_lidar_pts"]], EvalConfig())
        maps["refined" if refine else "single_frame"] = res.mean_ap
        maps[("refined" if refine else "single_frame") + "_car"] = res.class_ap["car"]
        outs = outcomes_for(labels, gt, frames, cfg, refine)
        for strategy in STRATEGIES:
            for b in cfg.budgets:
                m = select(strategy, frames, b, cfg)
                keys = {(l, int(t)) for l, t, s in zip(frames["log_id"], frames["timestamp_ns"], m) if s}
                pt = budget_point(outs, m, cm)
                cov = corner_coverage(events, keys)
                rows.append({"refine": refine, "propagate": False, "strategy": strategy, "budget": b, **pt, **cov})
                if refine and cfg.propagate.enabled:
                    pp = budget_point(propagated_outcomes(labels, gt, frames, m, datas, cfg, outs), m, cm)
                    rows.append({"refine": refine, "propagate": True, "strategy": strategy, "budget": b, **pp, **cov})
    n_gt = sum(o.num_gt for o in outs)
    return BenchResult(rows, maps, scratch_seconds(n_gt, len(frames), cm), len(frames), n_gt,
                       {"events": int(events["event"].nunique()) if len(events) else 0,
                        "kinds": events.groupby("kind")["event"].nunique().to_dict() if len(events) else {}},
                       asdict(cm), {**asdict(cfg), "model": model_spec, "logs": [str(p) for p in log_paths]})


def format_table(r: BenchResult) -> str:
    c = r.config
    step = c.get("refine_step") or c.get("frame_step")
    lines = [f"logs: {', '.join(os.path.basename(str(p)) for p in c.get('logs', []))}; refinement on every {step}-th frame's "
             f"detections; accept score {c.get('accept_score')}, per class single-frame {c.get('accept_raw') or '-'}, "
             f"refined {c.get('accept_refined') or '-'}",
             f"model {r.config.get('model')}: {r.num_frames} evaluation frames, {r.num_gt} GT boxes, "
             f"{r.corner.get('events')} corner-case events {r.corner.get('kinds')}; from scratch {r.scratch_s:.0f} s",
             f"nuScenes-style mAP: single-frame {r.map['single_frame']:.3f}, refined {r.map['refined']:.3f} "
             f"(+{100 * (r.map['refined'] - r.map['single_frame']):.1f} points); car AP {r.map['single_frame_car']:.3f} -> {r.map['refined_car']:.3f}",
             "",
             "| refine | selection | budget | frames | box error | missed | spurious | bad box/class | human s | scratch / human | corner events reviewed | corner frames reviewed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r.rows:
        ref = ("yes + review propagated" if x.get("propagate") else "yes") if x["refine"] else "no"
        lines.append(f"| {ref} | {x['strategy']} | {100 * x['budget']:.0f}% | {x['frames_reviewed']} | "
                     f"{100 * x['error_rate']:.1f}% | {x['missed']} | {x['spurious']} | {x['edited'] + x['relabelled']} | "
                     f"{x['human_s']:.0f} | {x['savings_x']:.1f}x | {100 * x['event_coverage']:.0f}% | {100 * x['frame_coverage']:.0f}% |")
    lines.append("")
    for x in r.rows:
        if abs(x["budget"] - 0.10) < 1e-9 and x.get("missed_events"):
            if x.get("propagate"):
                continue
            lines.append(f"corner-case events no reviewed frame reached at 10 %, {'refined' if x['refine'] else 'single-frame'} "
                         f"{x['strategy']}: {', '.join(x['missed_events'])}")
    return "\n".join(lines)


def plot(r: BenchResult, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    df = pd.DataFrame(r.rows)
    if "propagate" not in df.columns:
        df["propagate"] = False
    for (refine, prop, strategy), g in df.groupby(["refine", "propagate", "strategy"]):
        style = ":" if prop else "-" if refine else "--"
        lab = f"{strategy}{' + refine' if refine else ''}{' + propagated' if prop else ''}"
        x = 100 * g["budget"]
        axes[0].plot(x, 100 * g["error_rate"], style, marker="o", label=lab)
        axes[1].plot(x, g["human_s"] / 3600, style, marker="o", label=lab)
        axes[2].plot(x, 100 * g["event_coverage"], style, marker="o", label=lab)
    axes[1].axhline(r.scratch_s / 3600, color="k", lw=1, label="from scratch")
    axes[0].set(xlabel="review budget (% of frames)", ylabel="final box error (%)", title="error rate vs budget")
    axes[1].set(xlabel="review budget (% of frames)", ylabel="human hours", title="human cost vs budget", yscale="log")
    axes[2].set(xlabel="review budget (% of frames)", ylabel="% corner-case events reviewed", title="corner cases reached")
    for a in axes:
        a.grid(alpha=0.3)
        a.set_xscale("symlog", linthresh=2)
        a.set_xlim(0, 105)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def to_json(r: BenchResult) -> str:
    return json.dumps({"rows": r.rows, "map": r.map, "scratch_s": r.scratch_s, "num_frames": r.num_frames,
                       "num_gt": r.num_gt, "corner": r.corner, "cost_model": r.cost_model, "config": r.config},
                      indent=1, default=float)
