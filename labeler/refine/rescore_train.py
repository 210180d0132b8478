"""``labeler train-rescorer``: train the box rescorer (:mod:`labeler.refine.rescore`) on simulated logs with ground
truth.

The logs must be unseen by the detector (its training logs give over-confident scores) and by the held-out logs
the effort benchmark reports on; the default is a batch of its own, ``<state>/rescorer_logs`` (seed 3000,
simulated when missing). Per log: the detector runs on every frame (cached like the effort benchmark's), the
detections above the score threshold are refined as the nightly job refines them (every frame as context), and
every refined box within ``max_range_m`` on a frame with ground truth is labelled right (1) when it is matched
one-to-one (Hungarian, BEV centre distance <= 2 m, as in the benchmark) to a ground-truth box of its class, else 0.
The last ``val_logs`` logs are held out to report the model against the hand-made track score.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os

import numpy as np
import pandas as pd

from labeler.refine.rescore import FEATURES, fit_scorer

RESCORER_SEED = 3000


def box_labels(pred: pd.DataFrame, gt: pd.DataFrame, match_dist_m: float = 2.0) -> np.ndarray:
    """1 for each row of ``pred`` matched one-to-one (Hungarian on BEV centre distance <= ``match_dist_m``) to a
    row of ``gt`` of the same ``category``, else 0 (one frame)."""
    from labeler.refine.efficiency import match_centres

    y = np.zeros(len(pred), dtype=np.int64)
    ri, ci = match_centres(pred[["x", "y"]].to_numpy(np.float64), gt[["x", "y"]].to_numpy(np.float64), match_dist_m)
    same = pred["category"].astype(str).to_numpy()[ri] == gt["category"].astype(str).to_numpy()[ci]
    y[ri[same]] = 1
    return y


def log_dataset(data: dict, refine_cfg, pred_min_score: float = 0.3, max_range_m: float = 50.0,
                frame_step: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, track score) of one collected log's refined boxes (``data``: effort-benchmark
    :func:`labeler.refine.efficiency.collect_log` output). Refinement sees every frame; boxes are labelled on
    every ``frame_step``-th frame."""
    from dataclasses import replace

    from labeler.refine.smoothing import refine_log

    preds = data["preds"]
    preds = preds[preds["score"] >= pred_min_score].reset_index(drop=True)
    grid = np.asarray(data["timestamps_ns"])
    cfg = replace(refine_cfg, rescore=replace(refine_cfg.rescore, enabled=False))
    refined, _, X = refine_log(preds, data["poses"], grid, cfg=cfg, log_id=data["log_id"], return_features=True)
    lab = refined.to_pandas()
    keep_ts = set(grid[::frame_step].tolist())
    gt = data["gt"]
    gt = gt[np.hypot(gt["x"], gt["y"]) < max_range_m]
    if "num_lidar_pts" in gt.columns:
        gt = gt[gt["num_lidar_pts"] != 0]
    y = np.zeros(len(lab), dtype=np.int64)
    use = np.zeros(len(lab), dtype=bool)
    gby = dict(tuple(gt.groupby("timestamp_ns")))
    empty = gt.iloc[:0]
    for t, g in lab.groupby("timestamp_ns"):
        if int(t) not in keep_ts:
            continue
        near = g[np.hypot(g["x"], g["y"]) < max_range_m]
        y[near.index] = box_labels(near, gby.get(t, empty))
        use[near.index] = True
    return X[use], y[use], lab["score"].to_numpy()[use]


def auc(y, s) -> float:
    """Area under the ROC curve (scikit-learn's); NaN when ``y`` holds one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=bool)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def average_precision(y, s) -> float:
    """Average precision of the ranking ``s`` for the positives ``y`` (scikit-learn's); NaN without positives."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=bool)
    return float(average_precision_score(y, s)) if y.any() else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="labeler train-rescorer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--state", default=argparse.SUPPRESS,
                    help="state folder (same as the global --state; default $LABELER_STATE or ./state): logs and the "
                         "prediction cache live under it")
    ap.add_argument("--logs", default=None, help="folder of simulated logs with ground truth, unseen by the detector "
                                                 "and the benchmark (default <state>/rescorer_logs, simulated when missing)")
    ap.add_argument("--num-logs", type=int, default=8, help="logs to simulate when --logs is missing (default 8)")
    ap.add_argument("--seed", type=int, default=RESCORER_SEED,
                    help=f"simulation seed of those logs (default {RESCORER_SEED}; the held-out logs use 0, the "
                         "detector's training logs 1000 and 2000)")
    ap.add_argument("--model", default="bev", help="detector whose boxes are rescored (registry name, default bev)")
    ap.add_argument("--config", default="pipelines/nightly.yaml",
                    help="pipeline YAML giving the score threshold and refinement settings (default pipelines/nightly.yaml)")
    ap.add_argument("--min-score", type=float, default=None,
                    help="detections under this score are dropped before refinement (default: the config's "
                         "model.score_threshold; use the same value the pipeline will run with)")
    ap.add_argument("--val-logs", type=int, default=2, help="last N logs held out to report the model (default 2; "
                                                            "the final model is then refit on every log)")
    ap.add_argument("--trees", type=int, default=200, help="boosting rounds (default 200)")
    ap.add_argument("--depth", type=int, default=3, help="tree depth (default 3)")
    ap.add_argument("--out", default=None, help="model JSON to write (default models/box_rescorer.json)")


def run(args) -> int:
    from labeler.pipeline.config import load_config
    from labeler.refine.cli import _state
    from labeler.refine.efficiency import collect_log
    from labeler.refine.rescore import DEFAULT_MODEL
    from labeler.simulate import SimConfig, simulate_logs

    state = _state(args)
    root = args.logs or os.path.join(state, "rescorer_logs")
    if not os.path.isdir(root) or not any(n.startswith("sim-") for n in os.listdir(root)):
        print(f"simulating {args.num_logs} logs (seed {args.seed}) into {root}")
        simulate_logs(root, args.num_logs, args.seed, SimConfig(duration_s=20.0), workers=1, progress=True)
    logs = sorted(os.path.join(root, n) for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "frames.parquet")))
    if len(logs) <= args.val_logs:
        raise SystemExit(f"train-rescorer: {root} holds {len(logs)} logs; need more than --val-logs {args.val_logs}")
    pcfg = load_config(args.config)
    rcfg = pcfg.refine
    thr = float(pcfg.model.score_threshold if args.min_score is None else args.min_score)
    parts = []
    from tqdm import tqdm

    cache = os.path.join(state, "cache", "efficiency")
    for p in tqdm(logs, desc="logs (detector + refinement)", unit="log"):
        d = collect_log(p, args.model, 5, cache)
        parts.append((d["model_version"],) + log_dataset(d, rcfg, thr))
    versions = {v for v, *_ in parts}
    n_tr = len(logs) - args.val_logs
    Xtr = np.concatenate([x for _, x, _, _ in parts[:n_tr]])
    ytr = np.concatenate([y for _, _, y, _ in parts[:n_tr]])
    Xva = np.concatenate([x for _, x, _, _ in parts[n_tr:]])
    yva = np.concatenate([y for _, _, y, _ in parts[n_tr:]])
    sva = np.concatenate([s for _, _, _, s in parts[n_tr:]])
    m = fit_scorer(Xtr, ytr, args.trees, args.depth)
    pva = m.predict(Xva)
    report = {"val_boxes": len(yva), "val_right": float(yva.mean()),
              "val_auc_model": auc(yva, pva), "val_auc_track_score": auc(yva, sva),
              "val_ap_model": average_precision(yva, pva), "val_ap_track_score": average_precision(yva, sva)}
    print(f"validation ({args.val_logs} logs, {len(yva)} boxes, {100 * yva.mean():.1f} % right): "
          f"AUC model {report['val_auc_model']:.3f} vs track score {report['val_auc_track_score']:.3f}; "
          f"AP {report['val_ap_model']:.3f} vs {report['val_ap_track_score']:.3f}")
    X = np.concatenate([Xtr, Xva])
    y = np.concatenate([ytr, yva])
    digest = hashlib.sha1(np.ascontiguousarray(X).tobytes() + y.tobytes()).hexdigest()[:8]
    meta = {"version": f"rescorer-0.1.0+{digest}", "detector_version": sorted(versions),
            "trained_on": {"logs": [os.path.basename(p) for p in logs], "seed": args.seed, "boxes": len(y),
                           "right": float(y.mean()), "config": args.config, "score_threshold": thr},
            "validation": report, "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    final = fit_scorer(X, y, args.trees, args.depth, meta=meta)
    out = final.save(args.out or DEFAULT_MODEL)
    print(f"wrote {out} ({final.version}, {len(final.trees)} trees, {len(y)} boxes from {len(logs)} logs, "
          f"features: {', '.join(FEATURES)})")
    return 0
