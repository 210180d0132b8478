"""Car recall at BEV IoU >= 0.5 of each detector on the real samples, through the nightly pipeline's code path.

    .venv/bin/python benchmarks/real_recall.py [--real ../shared/data/real] [--models bev,geometric]
    .venv/bin/python benchmarks/real_recall.py --models bev@old.pt,bev,bev+fit,geometric
        # bev@FILE: that BEV checkpoint; bev+fit: with model.fit_points (boxes snapped onto their points)

Runs `run_pipeline` (push off, every frame kept) on each real sample folder with each model, then matches the
run's predictions_3d against the folder's ground truth (labeler.eval.groundtruth.gt_table) with
labeler.eval.recall_at_iou. Ground truth within 50 m and with >= 1 LiDAR point counts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from labeler.eval import EvalConfig, recall_at_iou
from labeler.eval.groundtruth import gt_table
from labeler.io.tables import read_run_record, read_table
from labeler.pipeline.config import load_config
from labeler.pipeline.run import run_pipeline

SAMPLES = {"nuScenes": "nuscenes_keyframe", "KITTI": "kitti_object/training", "SUSTechPOINTS": "sustechpoints_seq",
           "AV2": "av2_sensor_log/7fab2350-7eaf-3b7e-a39d-6937a4c1bede"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", default=str(Path(__file__).resolve().parents[1] / "../shared/data/real"), help="real samples root")
    p.add_argument("--models", default="bev,geometric", help="comma-separated model specs; bev@FILE runs the BEV detector with that checkpoint, bev+fit with fit_points")
    p.add_argument("--iou", type=float, default=0.5, help="BEV IoU threshold (default 0.5)")
    p.add_argument("--bev-weights", default=None, help="BEV checkpoint to use for the `bev` model (default: models/bev_small.pt)")
    a = p.parse_args(argv)
    root = Path(a.real).resolve()
    if not root.exists():
        print(f"no real samples at {root}", file=sys.stderr)
        return 1
    print("| sample | cars (GT, <=50 m, >=1 pt) | " + " | ".join(f"{m} recall@IoU{a.iou}" for m in a.models.split(",")) + " |")
    print("|---|---|" + "---|" * len(a.models.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        for name, rel in SAMPLES.items():
            row, ngt = [], 0
            for col, spec in enumerate(a.models.split(",")):
                model, _, weights = spec.partition("@")
                model, fit = (model[:-4], True) if model.endswith("+fit") else (model, False)
                weights = weights or (a.bev_weights if model == "bev" else None)
                cfg = load_config(None, {"night": f"{name}-{model}-{col}", "input.logs": str(root / rel), "model.name": model,
                                         "simulate.enabled": False, "dask.n_workers": 1, "filter.min_points": 1000,
                                         "filter.keyframe_hz": 100.0, "filter.stationary_speed_mps": 0.0,
                                         **({"model.checkpoint": weights} if weights else {}),
                                         **({"model.fit_points": True} if fit else {})}).resolved(tmp)
                run_pipeline(cfg, progress=False, push=False)
                rec = read_run_record(cfg.output_dir)
                preds = read_table(cfg.output_dir, "predictions_3d")
                kept = read_table(cfg.output_dir, "frames").to_pandas()
                gts = [gt_table(i["path"], i["format"], kept.timestamp_ns.tolist()) for i in rec["inputs"]]
                gt = pa.concat_tables(gts).to_pandas()
                gt = gt[(gt.num_lidar_pts != 0) & ((gt.x ** 2 + gt.y ** 2) ** 0.5 < 50)]
                ngt = int((gt.category == "car").sum())
                r = recall_at_iou(preds.to_pandas(), gt, "car", iou=a.iou, cfg=EvalConfig(max_range_m=50.0))
                row.append(f"{r:.2f}" if r == r else "n/a")
            print(f"| {name} | {ngt} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
