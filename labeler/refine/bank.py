"""A versioned corner-case bank (never forget a corner case) and the model gate that checks it.

Layout: ``<state>/bank/v<N>/`` (N = 1, 2, ...; a new version = the previous one plus new frames, never edited)::

    frames.parquet   log_id, timestamp_ns, log_path, kinds (list of corner-case kinds / review reasons), added_version
    labels.parquet   log_id, timestamp_ns, track_id, category, x, y, z, l, w, h, yaw (final labels, LiDAR frame)
    manifest.json    {"version": N, "parent": N-1 or null, "frames": ..., "labels": ..., "created_by": ...}

``labeler gate --model <new> [--baseline <current>]`` (:func:`gate`) runs both detectors on the bank frames and on
held-out logs and fails when the candidate's recall on the bank is below the baseline's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labeler.errors import LabelerError
from labeler.geometry.boxes import BOX_COLUMNS

FRAMES_SCHEMA = pa.schema([("log_id", pa.string()), ("timestamp_ns", pa.int64()), ("log_path", pa.string()),
                           ("kinds", pa.list_(pa.string())), ("added_version", pa.int64())])
LABELS_SCHEMA = pa.schema([("log_id", pa.string()), ("timestamp_ns", pa.int64()), ("track_id", pa.string()),
                           ("category", pa.string())] + [(c, pa.float64()) for c in BOX_COLUMNS])


class GateFailed(LabelerError):
    """The candidate model forgets corner cases the current model finds."""


# ------------------------------------------------------------------------------------------------ models


def resolve_model(spec):
    """A detector from ``spec``: a Detector instance (returned as is), a registry spec (``"geometric"``,
    ``"mmdet3d:<config>"``, ``"bev"`` once registered) or a geometric model with config overrides,
    ``"geometric:min_cluster_points=200,dbscan_eps_m=0.4"``."""
    if not isinstance(spec, str):
        return spec
    name, _, arg = spec.partition(":")
    if name == "geometric" and "=" in arg:
        from labeler.models.geometric import GeometricConfig, GeometricDetector

        types = {k: type(v) for k, v in GeometricConfig().__dict__.items()}
        over = {}
        for kv in arg.split(","):
            k, _, v = kv.partition("=")
            k = k.strip()
            if k not in types:
                raise LabelerError(f"model spec {spec!r}: unknown geometric option {k!r}; known: {sorted(types)}")
            t = types[k]
            over[k] = (v.strip().lower() in ("1", "true", "yes")) if t is bool else t(v)
        return GeometricDetector(**over)
    from labeler.models.registry import load_model

    return load_model(spec)


# ------------------------------------------------------------------------------------------------ bank


def bank_root(state: str) -> str:
    return os.path.join(str(state), "bank")


def versions(state: str) -> list[int]:
    root = bank_root(state)
    if not os.path.isdir(root):
        return []
    return sorted(int(m.group(1)) for d in os.listdir(root) if (m := re.fullmatch(r"v(\d+)", d))
                  and os.path.exists(os.path.join(root, d, "manifest.json")))


def latest_version(state: str) -> int | None:
    v = versions(state)
    return v[-1] if v else None


def read_bank(state: str, version: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(frames, labels, version) of bank ``version`` (default: the latest). Raises LabelerError when empty."""
    v = latest_version(state) if version is None else int(version)
    if v is None:
        raise LabelerError(f"no corner-case bank under {bank_root(state)}; add reviewed corner cases first "
                           "(labeler.refine.bank.add_frames)")
    d = os.path.join(bank_root(state), f"v{v}")
    if not os.path.exists(os.path.join(d, "manifest.json")):
        raise LabelerError(f"bank version v{v} does not exist under {bank_root(state)} (have {versions(state)})")
    return pq.read_table(os.path.join(d, "frames.parquet")).to_pandas(), pq.read_table(os.path.join(d, "labels.parquet")).to_pandas(), v


def add_frames(state: str, frames: pd.DataFrame, labels: pd.DataFrame, created_by: str = "") -> int:
    """Write a new bank version = the latest one + ``frames`` (``log_id, timestamp_ns, log_path, kinds``) with
    their final ``labels`` (``log_id, timestamp_ns, track_id, category, x..yaw``). Frames already in the bank
    keep their labels (a frame is never silently relabelled). Returns the new version number."""
    prev = latest_version(state)
    if prev is not None:
        f0, l0, _ = read_bank(state, prev)
    else:
        f0 = pd.DataFrame({c: pd.Series(dtype=object) for c in FRAMES_SCHEMA.names})
        l0 = pd.DataFrame({c: pd.Series(dtype=object) for c in LABELS_SCHEMA.names})
    new_v = (prev or 0) + 1
    have = set(zip(f0["log_id"], f0["timestamp_ns"].astype(np.int64)))
    fr = frames.copy()
    fr["timestamp_ns"] = fr["timestamp_ns"].astype(np.int64)
    fr = fr[[k not in have for k in zip(fr["log_id"], fr["timestamp_ns"])]].drop_duplicates(["log_id", "timestamp_ns"])
    fr["added_version"] = new_v
    fr["kinds"] = [list(k) if k is not None else [] for k in fr["kinds"]]
    keys = set(zip(fr["log_id"], fr["timestamp_ns"]))
    lb = labels.copy()
    lb["timestamp_ns"] = lb["timestamp_ns"].astype(np.int64)
    lb = lb[[k in keys for k in zip(lb["log_id"], lb["timestamp_ns"])]]
    lb["track_id"] = lb["track_id"].astype(str)
    frames_all = pd.concat([f0, fr[FRAMES_SCHEMA.names]], ignore_index=True)
    labels_all = pd.concat([l0, lb[LABELS_SCHEMA.names]], ignore_index=True)
    d = os.path.join(bank_root(state), f"v{new_v}")
    tmp = d + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frames_all, schema=FRAMES_SCHEMA, preserve_index=False), os.path.join(tmp, "frames.parquet"))
    pq.write_table(pa.Table.from_pandas(labels_all, schema=LABELS_SCHEMA, preserve_index=False), os.path.join(tmp, "labels.parquet"))
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump({"version": new_v, "parent": prev, "frames": int(len(frames_all)), "labels": int(len(labels_all)),
                   "new_frames": int(len(fr)), "created_by": created_by}, f, indent=1)
    os.replace(tmp, d)
    return new_v


def corner_case_frames(log_path: str, frame_step: int = 1, kinds=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Corner-case frames of a simulated log (corner_cases.parquet) with their ground truth as final labels,
    ready for :func:`add_frames` (what a reviewed corner-case frame looks like after review: exactly right)."""
    from labeler.eval.groundtruth import map_category
    from labeler.logs.native import read_log_index

    idx = read_log_index(log_path)
    if idx.corner_cases is None or idx.annotations is None:
        return pd.DataFrame(columns=FRAMES_SCHEMA.names), pd.DataFrame(columns=LABELS_SCHEMA.names)
    cc = idx.corner_cases.to_pandas()
    if kinds is not None:
        cc = cc[cc["kind"].isin(list(kinds))]
    step_ts = set(int(t) for t in idx.timestamps_ns[::frame_step])
    cc = cc[cc["timestamp_ns"].isin(step_ts)]
    fr = cc.groupby("timestamp_ns")["kind"].apply(lambda s: sorted(set(s))).reset_index().rename(columns={"kind": "kinds"})
    fr["log_id"] = idx.log_id
    fr["log_path"] = str(log_path)
    ann = idx.annotations.to_pandas()
    ann = ann[ann["timestamp_ns"].isin(set(fr["timestamp_ns"]))].copy()
    ann["category"] = [map_category(c) for c in ann["category"]]
    ann["log_id"] = idx.log_id
    return fr, ann


# ------------------------------------------------------------------------------------------------ gate


def recall(pred: pd.DataFrame, gt: pd.DataFrame, classes, match_dist_m: float = 2.0, min_score: float = 0.3,
           max_range_m: float = 50.0) -> float:
    """Share of GT boxes (classes the detector knows, within range) matched one-to-one by a same-class prediction
    scoring >= ``min_score`` within ``match_dist_m`` (BEV centre distance, Hungarian per frame)."""
    from scipy.optimize import linear_sum_assignment

    g = gt[gt["category"].isin(list(classes)) & (np.hypot(gt["x"], gt["y"]) < max_range_m)]
    p = pred[pred["score"] >= min_score]
    if len(g) == 0:
        return float("nan")
    hit = 0
    pb = dict(tuple(p.groupby(["log_id", "timestamp_ns", "category"])))
    for key, gg in g.groupby(["log_id", "timestamp_ns", "category"]):
        pp = pb.get(key)
        if pp is None:
            continue
        D = np.hypot(pp["x"].to_numpy()[:, None] - gg["x"].to_numpy()[None], pp["y"].to_numpy()[:, None] - gg["y"].to_numpy()[None])
        C = np.where(D <= match_dist_m, D, 1e6)
        ri, ci = linear_sum_assignment(C)
        hit += int((C[ri, ci] < 1e6).sum())
    return hit / len(g)


def _predict_frames(model, keys: list[tuple[str, int, str]]) -> pd.DataFrame:
    """Run ``model`` on the frames ``(log_id, timestamp_ns, log_path)``; rows per box (LiDAR frame)."""
    from labeler.logs.native import read_log_index

    rows = []
    by_log: dict[str, list[int]] = {}
    for log_id, ts, path in keys:
        by_log.setdefault(path, []).append(int(ts))
    for path, tss in by_log.items():
        idx = read_log_index(path)
        pos = {int(t): i for i, t in enumerate(idx.timestamps_ns)}
        for t in sorted(set(tss)):
            if t not in pos:
                raise LabelerError(f"bank frame {idx.log_id}/{t} is not in log {path} any more")
            fr = idx.load_frame(pos[t], with_images=False)
            det = model.predict([fr])[0]
            for k in range(len(det)):
                rows.append({"log_id": idx.log_id, "timestamp_ns": t, **dict(zip(BOX_COLUMNS, map(float, det.boxes[k]))),
                             "category": str(det.categories[k]), "score": float(det.scores[k])})
    return pd.DataFrame(rows, columns=["log_id", "timestamp_ns", *BOX_COLUMNS, "category", "score"])


@dataclass
class GateResult:
    passed: bool
    bank_version: int
    bank_frames: int
    candidate: dict            # {"name", "version", "bank_recall", "heldout_recall", "heldout_map"}
    baseline: dict
    tolerance: float
    message: str = ""
    per_kind: dict = field(default_factory=dict)  # kind -> (candidate recall, baseline recall)


def _heldout_keys(log_paths, frame_step: int) -> tuple[list[tuple[str, int, str]], pd.DataFrame]:
    from labeler.eval.groundtruth import gt_table
    from labeler.logs.native import read_log_index

    keys, gts = [], []
    for p in log_paths:
        idx = read_log_index(p)
        ts = [int(t) for t in idx.timestamps_ns[::frame_step]]
        keys += [(idx.log_id, t, str(p)) for t in ts]
        gts.append(gt_table(str(p), "native", ts).to_pandas())
    return keys, (pd.concat(gts, ignore_index=True) if gts else pd.DataFrame())


def gate(candidate, baseline="geometric", state: str = "./state", heldout_logs=(), frame_step: int = 10,
         tolerance: float = 0.0, bank_version: int | None = None) -> GateResult:
    """Evaluate ``candidate`` and ``baseline`` (specs for :func:`resolve_model` or Detector instances) on the
    latest bank (or ``bank_version``) and on every ``frame_step``-th frame of ``heldout_logs``. Fails
    (``passed = False``) when the candidate's bank recall < baseline's bank recall - ``tolerance``."""
    from labeler.eval.detection import EvalConfig, evaluate

    frames, labels, v = read_bank(state, bank_version)
    keys = list(zip(frames["log_id"], frames["timestamp_ns"].astype(np.int64), frames["log_path"]))
    hk, hgt = _heldout_keys(list(heldout_logs), frame_step) if heldout_logs else ([], pd.DataFrame())
    out = {}
    per_kind: dict[str, list[float]] = {}
    for role, spec in (("candidate", candidate), ("baseline", baseline)):
        m = resolve_model(spec)
        pb = _predict_frames(m, keys)
        info = {"name": spec if isinstance(spec, str) else getattr(m, "name", "?"), "version": getattr(m, "version", "?"),
                "bank_recall": recall(pb, labels, m.classes)}
        kinds = frames.explode("kinds")
        for kind, g in kinds.groupby("kinds"):
            ks = set(zip(g["log_id"], g["timestamp_ns"].astype(np.int64)))
            sel = [k in ks for k in zip(labels["log_id"], labels["timestamp_ns"].astype(np.int64))]
            per_kind.setdefault(kind, []).append(recall(pb, labels[sel], m.classes))
        if hk:
            ph = _predict_frames(m, hk)
            info["heldout_recall"] = recall(ph, hgt, m.classes)
            info["heldout_map"] = evaluate(ph, hgt, EvalConfig()).mean_ap if len(ph) else 0.0
        out[role] = info
    c, b = out["candidate"]["bank_recall"], out["baseline"]["bank_recall"]
    passed = bool(c >= b - tolerance)
    ho = ""
    if hk:
        ho = (f"; held-out recall {out['candidate']['heldout_recall']:.3f} vs {out['baseline']['heldout_recall']:.3f}, "
              f"mAP {out['candidate']['heldout_map']:.3f} vs {out['baseline']['heldout_map']:.3f}")
    if passed:
        msg = (f"PASS: candidate {out['candidate']['name']} recall on corner-case bank v{v} ({len(frames)} frames) "
               f"{c:.3f} >= baseline {out['baseline']['name']} {b:.3f} - tolerance {tolerance:g}{ho}")
    else:
        worst = sorted(((k, vals[0] - vals[1]) for k, vals in per_kind.items() if len(vals) == 2 and np.isfinite(vals[0] - vals[1])),
                       key=lambda x: x[1])[:3]
        msg = (f"FAIL: candidate {out['candidate']['name']} forgets corner cases: recall on corner-case bank v{v} "
               f"({len(frames)} frames) {c:.3f} < baseline {out['baseline']['name']} {b:.3f} - tolerance {tolerance:g}; "
               f"largest drops by kind: " + ", ".join(f"{k} {d:+.3f}" for k, d in worst) + ho)
    return GateResult(passed, v, len(frames), out["candidate"], out["baseline"], tolerance, msg,
                      {k: tuple(vals) for k, vals in per_kind.items()})
