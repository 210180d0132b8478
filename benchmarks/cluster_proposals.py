"""Tune cluster proposals (``refine.proposals``) on the tuning logs: ``python benchmarks/cluster_proposals.py
--log-index 0,1 --grid "" "proposals.enabled=true;proposals.score=0.4" ...``

Each grid entry is a semicolon-separated list of ``--refine`` settings (on top of pipelines/nightly.yaml, as the
reproduce command in benchmarks/results/efficiency_bev.md). Prints, per entry, the refined labels' box error at
budget 0 and at 10 % (all-signals selection: the benchmark's reported cell), its parts, and the refined mAP
(the single-frame mAP does not depend on refinement). Choose on logs 0,1 only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pandas as pd

from labeler.geometry.boxes import BOX_COLUMNS
from labeler.refine import cli as rcli
from labeler.refine.efficiency import (BenchCfg, budget_point, collect_cluster_boxes, collect_log, gt_at, outcomes_for,
                                       prepare_log, select)

ACCEPT_RAW = "car=0.45,truck=0.45,bus=0.45,pedestrian=0.55,cyclist=0.7,traffic_cone=0.45"


def bench_cfg(refine: list[str], log_index: str, min_score: float = 0.3) -> tuple[BenchCfg, argparse.Namespace]:
    ns = argparse.Namespace(logs=None, num_logs=4, log_index=log_index, seed=0, duration=20.0, min_score=min_score,
                            accept_score=0.3, accept_refined=None, refine=refine, refine_step=0,
                            spread=None, propagate=None, config="pipelines/nightly.yaml")
    cfg = BenchCfg(accept_raw=rcli._class_scores(ACCEPT_RAW, "accept_raw"), refine=rcli._refine_cfg(refine),
                   pred_min_score=min_score)
    return rcli._from_pipeline(cfg, ns), ns


def evaluate_setting(datas: list[dict], cfg: BenchCfg) -> dict:
    from labeler.eval.detection import EvalConfig, evaluate

    gt = pd.concat([gt_at(d, cfg) for d in datas], ignore_index=True)
    labs, frs = zip(*[prepare_log(d, True, cfg) for d in datas])
    labels, frames = pd.concat(labs, ignore_index=True), pd.concat(frs, ignore_index=True)
    res = evaluate(labels[["log_id", "timestamp_ns", *BOX_COLUMNS, "category", "score"]],
                   gt[["log_id", "timestamp_ns", *BOX_COLUMNS, "category", "num_lidar_pts"]], EvalConfig())
    outs = outcomes_for(labels, gt, frames, cfg, True)
    row = {"mAP": res.mean_ap, "proposal_boxes": int((labels["source"] == "proposal").sum())}
    for b in (0.0, 0.10):
        pt = budget_point(outs, select("all_signals", frames, b, cfg))
        tag = f"{100 * b:.0f}%"
        row.update({f"err {tag}": pt["error_rate"], f"missed {tag}": pt["missed"], f"spurious {tag}": pt["spurious"],
                    f"bad {tag}": pt["edited"] + pt["relabelled"]})
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--log-index", default="0,1")
    p.add_argument("--grid", nargs="+", required=True, help="semicolon-separated --refine settings per entry ('' = none)")
    p.add_argument("--state", default="state")
    a = p.parse_args(argv)
    state = os.path.abspath(a.state)
    cache = os.path.join(state, "cache", "efficiency")
    cfg0, ns = bench_cfg([], a.log_index)
    logs = rcli._heldout(ns, state)
    datas = [collect_log(lp, "bev", cfg0.frame_step, cache) for lp in logs]
    datas = [{**d, "cluster_boxes": collect_cluster_boxes(lp, cfg0.frame_step, cache)} for d, lp in zip(datas, logs)]
    print(f"model {datas[0]['model_version']}; logs {[d['log_id'] for d in datas]}", file=sys.stderr)
    print("| settings | mAP | box error 0 % | missed / spurious / bad | box error 10 % | missed / spurious / bad | proposal boxes |")
    print("|---|---|---|---|---|---|---|")
    for entry in a.grid:
        t0 = time.time()
        refine = [x for x in entry.split(";") if x.strip()]
        cfg, _ = bench_cfg(refine, a.log_index)
        r = evaluate_setting(datas, cfg)
        print(f"| {entry or 'nightly'} | {r['mAP']:.3f} | {100 * r['err 0%']:.1f} % | {r['missed 0%']} / {r['spurious 0%']} / "
              f"{r['bad 0%']} | {100 * r['err 10%']:.1f} % | {r['missed 10%']} / {r['spurious 10%']} / {r['bad 10%']} | "
              f"{r['proposal_boxes']} |", flush=True)
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
