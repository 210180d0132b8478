"""Tune the refined accept scores (``selection.accept_score_by_class``) on the tuning logs, the way the nightly
config's were chosen: coordinate descent, one class at a time, on the budget-0 box error of the refined labels
(``--single-frame``: the single-frame ones, ``--accept-raw`` of the benchmark, on unrefined labels).

    python benchmarks/accept_tuning.py --log-index 0,1 --refine rescore.enabled=true

``--refine`` settings go on top of pipelines/nightly.yaml (as the reproduce command in
benchmarks/results/efficiency_bev.md). Prints the start point, each accepted change, and the final scores with
their box error at budget 0 and at 10 % (all-signals selection) and the refined mAP (accept scores do not change
it). Choose on logs 0,1 only; report on 2,3.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np
import pandas as pd

from labeler.classes import CLASSES
from labeler.refine import cli as rcli
from labeler.refine.efficiency import budget_point, collect_log, gt_at, outcomes_for, prepare_log, select

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_proposals import bench_cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--log-index", default="0,1", help="held-out logs to tune on (default 0,1: the tuning pair)")
    p.add_argument("--refine", action="append", default=[], help="--refine key=value on top of the nightly config "
                                                                 "(repeatable), e.g. rescore.enabled=true")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="detections under this are dropped before refinement (default 0.3, the nightly threshold)")
    p.add_argument("--grid", default="0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8",
                   help="candidate accept scores per class (comma-separated)")
    p.add_argument("--start", default=None, help="start point class=score,... (default: the nightly config's)")
    p.add_argument("--single-frame", action="store_true",
                   help="tune the single-frame accept scores (--accept-raw) on unrefined labels instead")
    p.add_argument("--passes", type=int, default=2, help="coordinate-descent passes over the classes (default 2)")
    p.add_argument("--state", default="state", help="state folder with heldout_logs and the prediction cache")
    a = p.parse_args(argv)
    state = os.path.abspath(a.state)
    cfg, ns = bench_cfg(a.refine, a.log_index, a.min_score)
    refine = not a.single_frame
    field = "accept_refined" if refine else "accept_raw"
    if a.start:
        cfg = dataclasses.replace(cfg, **{field: rcli._class_scores(a.start, "--start")})
    logs = rcli._heldout(ns, state)
    datas = [collect_log(lp, "bev", cfg.frame_step, os.path.join(state, "cache", "efficiency")) for lp in logs]
    gt = pd.concat([gt_at(d, cfg) for d in datas], ignore_index=True)
    labs, frs = zip(*[prepare_log(d, refine, cfg) for d in datas])
    labels, frames = pd.concat(labs, ignore_index=True), pd.concat(frs, ignore_index=True)
    none = np.zeros(len(frames), dtype=bool)

    def error(acc: dict) -> float:
        c = dataclasses.replace(cfg, **{field: acc})
        return budget_point(outcomes_for(labels, gt, frames, c, refine), none)["error_rate"]

    acc = {k: float(getattr(cfg, field).get(k, cfg.accept_score)) for k in CLASSES}
    best = error(acc)
    print(f"logs {[d['log_id'] for d in datas]}; {field}; refine {a.refine or 'nightly'}; start {acc}: {100 * best:.2f} %")
    grid = [float(x) for x in a.grid.split(",")]
    for _ in range(a.passes):
        changed = False
        for k in CLASSES:
            for v in grid:
                e = error({**acc, k: v})
                if e < best - 1e-12:
                    best, acc, changed = e, {**acc, k: v}, True
                    print(f"  {k} = {v}: {100 * e:.2f} %", flush=True)
        if not changed:
            break
    c = dataclasses.replace(cfg, **{field: acc})
    # prepare_log's frame priorities depend on the accept scores (a cluster is explained only by an accepted label)
    labs, frs = zip(*[prepare_log(d, refine, c) for d in datas])
    labels, frames = pd.concat(labs, ignore_index=True), pd.concat(frs, ignore_index=True)
    outs = outcomes_for(labels, gt, frames, c, refine)
    p0 = budget_point(outs, np.zeros(len(frames), dtype=bool))
    p10 = budget_point(outs, select("all_signals", frames, 0.10, c))
    print(f"final {','.join(f'{k}={v:g}' for k, v in acc.items())}")
    print(f"  budget 0: {100 * p0['error_rate']:.2f} % (missed {p0['missed']}, spurious {p0['spurious']}, "
          f"bad {p0['edited'] + p0['relabelled']}); 10 % all signals: {100 * p10['error_rate']:.2f} % "
          f"(missed {p10['missed']}, spurious {p10['spurious']}, bad {p10['edited'] + p10['relabelled']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
