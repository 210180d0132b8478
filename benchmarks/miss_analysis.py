"""What the misses left after refinement look like, and how many an above-ground cluster lies on.

``python benchmarks/miss_analysis.py --log-index 0,1 [--refine proposals.enabled=true ...]``

Same settings as the efficiency benchmark's reproduce command (benchmarks/results/efficiency_bev.md): BEV model,
pipelines/nightly.yaml (score threshold, refinement with the 10 Hz context, refined accept scores). At budget 0
(nothing reviewed) every evaluation frame's accepted refined labels are matched to the GT as the benchmark does
(Hungarian on BEV centre distance <= 2 m). For each missed GT box: class, LiDAR points, distance, whether a
refined box under the accept score is within 2 m (a threshold miss, not a detector miss) and whether an
above-ground cluster (:func:`labeler.refine.signals.above_ground_clusters`, cached per evaluation frame) has its
centre in the GT box's BEV footprint (grown by 0.5 m) and is unexplained by the accepted labels
(:func:`labeler.refine.signals.unexplained_clusters`): the upper bound of what class-agnostic cluster proposals
could recover. Only use the tuning logs (0,1) for choices.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from labeler.geometry.boxes import BOX_COLUMNS
from labeler.refine import cli as rcli
from labeler.refine.efficiency import BenchCfg, _in_range, collect_cluster_boxes, collect_log, gt_at, prepare_log
from labeler.refine.signals import unexplained_clusters

ACCEPT_RAW = "car=0.45,truck=0.45,bus=0.45,pedestrian=0.55,cyclist=0.7,traffic_cone=0.45"


def missed_gt(pred: pd.DataFrame, gt: pd.DataFrame, match_dist_m: float = 2.0) -> np.ndarray:
    """Bool per GT row: unmatched by the one-to-one Hungarian matching on BEV centre distance (the benchmark's)."""
    miss = np.ones(len(gt), dtype=bool)
    if len(pred) == 0 or len(gt) == 0:
        return miss
    D = np.hypot(pred["x"].to_numpy()[:, None] - gt["x"].to_numpy()[None], pred["y"].to_numpy()[:, None] - gt["y"].to_numpy()[None])
    C = np.where(D <= match_dist_m, D, 1e6)
    ri, ci = linear_sum_assignment(C)
    miss[ci[C[ri, ci] < 1e6]] = False
    return miss


def in_footprint(points_xy: np.ndarray, box: np.ndarray, margin_m: float) -> np.ndarray:
    """Bool per BEV point: inside ``box``'s footprint grown by ``margin_m``."""
    d = points_xy - box[:2]
    c, s = np.cos(box[6]), np.sin(box[6])
    lx, ly = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
    return (np.abs(lx) <= box[3] / 2 + margin_m) & (np.abs(ly) <= box[4] / 2 + margin_m)


def analyse(datas: list[dict], cfg: BenchCfg, margin_m: float = 0.5) -> pd.DataFrame:
    """One row per missed GT box (budget 0, refined labels)."""
    rows = []
    for d in datas:
        labels, _ = prepare_log(d, True, cfg)
        gt = gt_at(d, cfg)
        for t in sorted(d["eval"]):
            lab = _in_range(labels[labels["timestamp_ns"] == t], cfg.max_range_m)
            acc = lab[cfg.accept_mask(lab, True)]
            g = gt[gt["timestamp_ns"] == t].reset_index(drop=True)
            if len(g) == 0:
                continue
            miss = missed_gt(acc, g, cfg.match_dist_m)
            cl = np.asarray(d["eval"][t]["clusters"], dtype=np.float64).reshape(-1, 6)
            unexpl10 = unexplained_clusters(cl, acc[list(BOX_COLUMNS)].to_numpy(), min_points=10)
            unexpl40 = unexplained_clusters(cl, acc[list(BOX_COLUMNS)].to_numpy(), min_points=40)
            for k in np.nonzero(miss)[0]:
                box = g.loc[k, list(BOX_COLUMNS)].to_numpy(np.float64)
                on = in_footprint(cl[:, :2], box, margin_m) if len(cl) else np.zeros(0, dtype=bool)
                near_low = lab[np.hypot(lab["x"] - box[0], lab["y"] - box[1]) <= cfg.match_dist_m]
                rows.append({"log_id": d["log_id"], "timestamp_ns": int(t), "category": g.loc[k, "category"],
                             "num_lidar_pts": int(g.loc[k, "num_lidar_pts"]), "dist_m": float(np.hypot(box[0], box[1])),
                             "refined_below_accept": bool(len(near_low)),
                             "cluster": bool(on.any()), "cluster_pts": float(cl[on, 3].max()) if on.any() else 0.0,
                             "unexplained_10": bool((on & unexpl10).any()), "unexplained_40": bool((on & unexpl40).any())})
    return pd.DataFrame(rows)


def summary(m: pd.DataFrame) -> str:
    n = len(m)
    pct = lambda k: f"{k} ({100 * k / max(1, n):.0f} %)"  # noqa: E731
    lines = [f"missed GT boxes: {n}",
             f"  >= 40 LiDAR points: {pct(int((m.num_lidar_pts >= 40).sum()))}; >= 10: {pct(int((m.num_lidar_pts >= 10).sum()))}",
             f"  distance: median {m.dist_m.median():.1f} m; < 20 m {pct(int((m.dist_m < 20).sum()))}, 20-35 m "
             f"{pct(int(((m.dist_m >= 20) & (m.dist_m < 35)).sum()))}, >= 35 m {pct(int((m.dist_m >= 35).sum()))}",
             f"  a refined box under the accept score within 2 m: {pct(int(m.refined_below_accept.sum()))}",
             f"  an above-ground cluster on it (centre in the footprint + 0.5 m): {pct(int(m.cluster.sum()))}",
             f"  ... unexplained by the accepted labels, >= 10 points: {pct(int(m.unexplained_10.sum()))}; "
             f">= 40 points: {pct(int(m.unexplained_40.sum()))}",
             "", "| class | missed | >= 40 pts | median dist m | refined box < accept score | cluster on it | unexplained >= 40 pts |",
             "|---|---|---|---|---|---|---|"]
    for c, g in m.groupby("category"):
        lines.append(f"| {c} | {len(g)} | {int((g.num_lidar_pts >= 40).sum())} | {g.dist_m.median():.1f} | "
                     f"{int(g.refined_below_accept.sum())} | {int(g.cluster.sum())} | {int(g.unexplained_40.sum())} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--log-index", default="0,1")
    p.add_argument("--refine", action="append")
    p.add_argument("--state", default="state")
    a = p.parse_args(argv)
    ns = argparse.Namespace(logs=None, num_logs=4, log_index=a.log_index, seed=0, duration=20.0, min_score=0.3,
                            accept_score=0.3, accept_refined=None, refine=a.refine, refine_step=0, spread=None, propagate=None,
                            config="pipelines/nightly.yaml")
    state = os.path.abspath(a.state)
    logs = rcli._heldout(ns, state)
    cfg = BenchCfg(accept_raw=rcli._class_scores(ACCEPT_RAW, "accept_raw"), refine=rcli._refine_cfg(a.refine))
    cfg = rcli._from_pipeline(cfg, ns)
    cache = os.path.join(state, "cache", "efficiency")
    datas = [collect_log(lp, "bev", cfg.frame_step, cache) for lp in logs]
    if cfg.refine.proposals.enabled:
        datas = [{**d, "cluster_boxes": collect_cluster_boxes(lp, cfg.frame_step, cache)} for d, lp in zip(datas, logs)]
    print(f"model {datas[0]['model_version']}; logs {[d['log_id'] for d in datas]}", file=sys.stderr)
    print(summary(analyse(datas, cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
