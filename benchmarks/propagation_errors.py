"""Where the box errors left after review propagation come from (the breakdown behind docs/refinement.md's
session-7 steps).

``python benchmarks/propagation_errors.py --log-index 0,1`` (or ``--logs state/tune_logs --num-logs 6``)
``[--budget 0.1] [--propagate key=value ...]``

Same settings as the efficiency benchmark's reproduce command (benchmarks/results/efficiency_bev.md): BEV model,
pipelines/nightly.yaml, refined labels, all-signals selection at ``--budget``, reviewed frames' ground truth
propagated by :func:`labeler.refine.propagate.propagate`. Every unreviewed evaluation frame's final labels are
matched to the GT as the benchmark does (Hungarian on BEV centre distance <= 2 m; error rate over all evaluation
frames' GT boxes, so the total equals the benchmark's row). Each error is attributed:

* spurious and badly placed boxes by where the box came from: ``auto`` (the accept rule), ``confirmed`` (a track a
  review confirmed), ``followed`` (a person's box followed by the LiDAR); with the centre / heading error;
* misses by LiDAR points x distance, and whether a reviewed frame held the same object (``on a reviewed frame``:
  propagation had a person's box for it and did not carry it here).

Only use the tuning logs (heldout 0,1 or state/tune_logs) for choices.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from labeler.geometry.boxes import BOX_COLUMNS, bev_iou
from labeler.refine import cli as rcli
from labeler.refine.efficiency import BenchCfg, _in_range, collect_log, gt_at, match_centres, prepare_log, propagated_labels, select

ACCEPT_RAW = "car=0.45,truck=0.45,bus=0.45,pedestrian=0.55,cyclist=0.7,traffic_cone=0.45"


def attribute(final: pd.DataFrame, gt: pd.DataFrame, on_review: set) -> tuple[list[dict], list[dict], list[dict]]:
    """(missed, spurious, badly placed) rows of one frame's final labels against its GT boxes, matched as the
    benchmark matches them (:func:`labeler.refine.efficiency.match_centres`)."""
    P = final[list(BOX_COLUMNS)].to_numpy(np.float64)
    Q = gt[list(BOX_COLUMNS)].to_numpy(np.float64)
    pi, qi = match_centres(P[:, :2], Q[:, :2])
    prov = final["provenance"].to_numpy(dtype=object)
    kind = np.where(prov == "auto", "auto", np.where(final["track_id"].isna().to_numpy(), "followed", "confirmed"))
    pcat, gcat = final["category"].to_numpy(dtype=object), gt["category"].to_numpy(dtype=object)
    miss = [{"category": gcat[j], "points": int(gt["num_lidar_pts"].iloc[j]), "dist_m": float(np.hypot(*Q[j, :2])),
             "on_review": gt["track_id"].iloc[j] in on_review} for j in sorted(set(range(len(Q))) - set(qi.tolist()))]
    spur = [{"kind": kind[i], "category": pcat[i], "dist_m": float(np.hypot(*P[i, :2])),
             "nearest_gt_m": float(np.min(np.hypot(Q[:, 0] - P[i, 0], Q[:, 1] - P[i, 1]))) if len(Q) else np.inf}
            for i in sorted(set(range(len(P))) - set(pi.tolist()))]
    bad = []
    for i, j in zip(pi, qi):
        iou = float(bev_iou(P[i][None], Q[j][None])[0, 0])
        if iou < 0.5 or pcat[i] != gcat[j]:
            bad.append({"kind": kind[i], "category": gcat[j], "wrong_class": pcat[i] != gcat[j], "iou": iou,
                        "centre_m": float(np.hypot(*(P[i, :2] - Q[j, :2]))),
                        "heading_rad": float(abs((P[i, 6] - Q[j, 6] + np.pi / 2) % np.pi - np.pi / 2)),
                        "points": int(gt["num_lidar_pts"].iloc[j])})
    return miss, spur, bad


def analyse(datas: list[dict], cfg: BenchCfg, budget: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    gt = pd.concat([gt_at(d, cfg) for d in datas], ignore_index=True)
    labs, frs = zip(*[prepare_log(d, True, cfg) for d in datas])
    labels, frames = pd.concat(labs, ignore_index=True), pd.concat(frs, ignore_index=True)
    sel = select("all_signals", frames, budget, cfg)
    reviewed = {(lid, int(t)) for lid, t, s in zip(frames["log_id"], frames["timestamp_ns"], sel) if s}
    final = _in_range(propagated_labels(labels, gt, reviewed, datas, cfg), cfg.max_range_m)
    M, S, B = [], [], []
    for d in datas:
        lid = d["log_id"]
        rts = {t for (lg, t) in reviewed if lg == lid}
        g, fin = gt[gt["log_id"] == lid], final[final["log_id"] == lid]
        on_review = set(g.loc[g["timestamp_ns"].isin(rts), "track_id"])
        for t in sorted(set(d["eval"]) - rts):
            m, s, b = attribute(fin[fin["timestamp_ns"] == t], g[g["timestamp_ns"] == t], on_review)
            M += m
            S += s
            B += b
    return pd.DataFrame(M), pd.DataFrame(S), pd.DataFrame(B), len(gt)


def summary(M: pd.DataFrame, S: pd.DataFrame, B: pd.DataFrame, num_gt: int) -> str:
    out = [(f"box error {100 * (len(M) + len(S) + len(B)) / max(num_gt, 1):.2f} % of {num_gt} GT boxes: "
            f"{len(M)} missed, {len(S)} spurious, {len(B)} badly placed or wrong class")]
    if len(S):
        out += ["", "spurious, by source x class:", S.groupby(["kind", "category"]).size().unstack(fill_value=0).to_string(),
                "spurious, by source x distance to the nearest GT box (m):",
                pd.crosstab(S["kind"], pd.cut(S["nearest_gt_m"], [0, 2, 3, 5, 10, np.inf])).to_string()]
    if len(B):
        out += ["", f"badly placed or wrong class ({int(B['wrong_class'].sum())} wrong class), by source x class:",
                B.groupby(["kind", "category"]).size().unstack(fill_value=0).to_string(),
                "medians by source:", B.groupby("kind")[["iou", "centre_m", "heading_rad", "points"]].median().round(3).to_string()]
    if len(M):
        out += ["", f"missed ({int(M['on_review'].sum())} on a reviewed frame), by LiDAR points x distance (m):",
                pd.crosstab(pd.cut(M["points"], [0, 2, 5, 10, 30, np.inf]), pd.cut(M["dist_m"], [0, 20, 30, 40, 50])).to_string(),
                "missed by class: " + ", ".join(f"{k} {v}" for k, v in M["category"].value_counts().items())]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--log-index", default=None, help="indices into the held-out logs (e.g. 0,1: the tuning pair)")
    p.add_argument("--logs", default=None, help="a folder of native logs instead of state/heldout_logs")
    p.add_argument("--num-logs", type=int, default=4, help="use the first N logs of the folder")
    p.add_argument("--budget", type=float, default=0.10, help="fraction of evaluation frames reviewed")
    p.add_argument("--propagate", nargs="*", default=None, metavar="KEY=VALUE",
                   help="review.propagate overrides (labeler/refine/propagate.py PropagateCfg)")
    p.add_argument("--state", default="state", help="state folder (prediction cache, held-out logs)")
    a = p.parse_args(argv)
    if a.logs is None and a.log_index is None:
        a.log_index = "0,1"
    ns = argparse.Namespace(logs=a.logs, num_logs=a.num_logs, log_index=a.log_index, seed=0, duration=20.0,
                            min_score=0.3, accept_score=0.3, accept_refined=None, refine=None, refine_step=0,
                            spread=None, propagate=None, config="pipelines/nightly.yaml")
    state = os.path.abspath(a.state)
    logs = rcli._heldout(ns, state)
    cfg = rcli._from_pipeline(BenchCfg(accept_raw=rcli._class_scores(ACCEPT_RAW, "accept_raw")), ns)
    if a.propagate:
        import dataclasses

        cfg = dataclasses.replace(cfg, propagate=rcli._propagate_cfg(a.propagate))
    datas = [collect_log(lp, "bev", cfg.frame_step, os.path.join(state, "cache", "efficiency")) for lp in logs]
    print(f"model {datas[0]['model_version']}; logs {[d['log_id'] for d in datas]}; budget {a.budget:g}", file=sys.stderr)
    print(summary(*analyse(datas, cfg, a.budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
