"""Review selection on the real samples: which frames the nightly pipeline sends to review, why, and which it
auto-accepts, on the SUSTechPOINTS sequence and the Argoverse 2 sensor log in ../shared/data/real.

    .venv/bin/python benchmarks/real_selection.py [--real ../shared/data/real] [--model bev] [--budget 10]
                                                   [--out benchmarks/results/real_selection.md]

Runs `run_pipeline` (pipelines/nightly.yaml: refinement, signals, diverse selection; push off) on each sample
folder. The samples are a few frames each, so every frame is kept (keyframe rate and stationary filter off, as in
benchmarks/real_recall.py) and `filter.min_points` is 1000 (sparser sensors than the simulator's). Exits 0 with a
message when the real samples are absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from labeler.io.tables import read_run_record, read_table
from labeler.pipeline.config import load_config
from labeler.pipeline.run import run_pipeline

REPO = Path(__file__).resolve().parents[1]
SAMPLES = {"SUSTechPOINTS": "sustechpoints_seq", "AV2": "av2_sensor_log/7fab2350-7eaf-3b7e-a39d-6937a4c1bede"}


def run_sample(name: str, path: Path, model: str, budget: float, tmp: str, fit_points: bool = False) -> dict:
    cfg = load_config(REPO / "pipelines" / "nightly.yaml", {
        "night": f"real-{name}", "input.logs": str(path), "model.name": model, "simulate.enabled": False,
        "dask.n_workers": 1, "filter.min_points": 1000, "filter.keyframe_hz": 100.0,
        "filter.stationary_speed_mps": 0.0, "selection.budget_fraction": budget,
        **({"model.fit_points": True} if fit_points else {})}).resolved(tmp)
    summary = run_pipeline(cfg, progress=False, push=False)
    run = cfg.output_dir
    scores = read_table(run, "frame_scores").to_pandas().sort_values(["log_id", "timestamp_ns"])
    acc = read_table(run, "accepted_3d").to_pandas()
    refined = read_table(run, "refined_3d").to_pandas()
    frames = read_table(run, "frames").to_pandas()
    return {"name": name, "summary": summary, "scores": scores, "accepted": acc, "refined": refined, "frames": frames,
            "record": read_run_record(run)}


def summarise_reasons(reasons) -> str:
    """``kind`` or ``kind x<n>`` (n distinct tracks/cameras with that reason), in first-seen order."""
    counts: dict[str, int] = {}
    for r in reasons:
        k = r.split(":")[0]
        counts[k] = counts.get(k, 0) + 1
    return ", ".join(k if n == 1 else f"{k} x{n}" for k, n in counts.items()) or "-"


def to_markdown(res: list[dict], model: str, budget: float) -> str:
    lines = ["# Review selection on the real samples", "",
             f"`.venv/bin/python benchmarks/real_selection.py --model {model} --budget {100 * budget:g}`: the nightly "
             "pipeline (pipelines/nightly.yaml: refinement on, uncertainty signals, `select_diverse`) on each sample, "
             f"review budget {100 * budget:g} % of kept frames (at least one frame: the budget rounds up), every frame kept "
             "(keyframe and stationary filters off: the samples are a few frames each).", ""]
    for r in res:
        s, sc = r["summary"], r["scores"]
        src = ", ".join(sorted(set(r["record"].get("labels_source", {}).values()))) or "-"
        lines += [f"## {r['name']}", "",
                  f"{s.frames_in} frames in, {s.filtered} filtered, {s.quarantined} quarantined; "
                  f"{s.review} sent to review, {s.auto_accepted} auto-accepted; {s.predictions} raw boxes, "
                  f"{s.refined} refined boxes on {s.tracks} tracks; pre-labels from: {src}; "
                  f"{s.accepted_labels} labels auto-accepted; model {r['record'].get('model_version', '?')}." + (
                      "" if s.refined else " No refinement: " + ("the reader has no ego poses for this sequence, so "
                                                                 "tracking in the world frame is skipped and the raw "
                                                                 "boxes are the pre-labels." if src == "raw" else
                                                                 "no track survived (too few frames).")), "",
                  "| frame (timestamp_ns) | decision | priority | boxes (raw) | reasons |", "|---|---|---|---|---|"]
        for row in sc.itertuples():
            reasons = summarise_reasons(row.reasons)
            lines.append(f"| {row.timestamp_ns} | **{row.decision}** | {row.priority:.2f} | {row.num_boxes} | {reasons} |")
        filt = r["frames"][r["frames"]["outcome"] == "filtered"]
        if len(filt):
            lines += ["", "Filtered: " + ", ".join(f"{t} ({why})" for t, why in zip(filt.timestamp_ns, filt.filter_reason))]
        if len(r["accepted"]):
            a = r["accepted"].groupby("timestamp_ns")["category"].agg(lambda c: ", ".join(f"{k} x{v}" for k, v in c.value_counts().items()))
            lines += ["", "Auto-accepted labels (source table " + ", ".join(sorted(set(r["accepted"]["source_table"]))) + "):"]
            lines += [f"- {t}: {cats}" for t, cats in a.items()]
        lines.append("")
    lines += ["Every frame of both samples carries most reason kinds: on these real sensors the simulator-trained "
              "detector reports many uncertain boxes (TTA disagreement, boxes with few points, score band) and the "
              "above-ground clusters it misses, so the priority mostly counts uncertain boxes (0.05 each). With the "
              "nightly `selection.spread_s` (3 s, for review propagation) a frame is worth the uncertainty it covers "
              "within 3 s, so on SUSTechPOINTS (frames 0.5-1.5 s apart) the budget picks a frame near the middle of the "
              "sequence, not the one with the most uncertain boxes (1821295309320 before). On AV2 (two frames, 0.1 s "
              "apart) every track is a short track.", "",
              "`kind xN`: the reason holds for N distinct tracks (or boxes) of the frame. Reason kinds: `uncertain_score` a box scored in [0.3, 0.6); `tta_disagreement:<track>` flips at test time "
              "disagree; `likely_fp:<track>` a box with < 5 LiDAR points; `short_track:<track>` a track seen in < 3 "
              "frames (appears and vanishes); `class_switch` / `yaw_flip` along a track; `missed_cluster` an above-ground "
              "cluster of >= 40 points that no kept label explains; `rare_class` / `unusual_size`; `ego_stopped`; `no_accepted_labels` pre-labels but none passes the accept scores; sensor "
              "health flags (`lidar_sector_dropout`, `camera_*`). Weights: labeler/refine/signals.py `REASON_WEIGHTS`.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", default=str(REPO / ".." / "shared" / "data" / "real"), help="real samples root")
    p.add_argument("--model", default="bev", help="detector spec (default bev)")
    p.add_argument("--budget", type=float, default=10.0, help="review budget, percent of kept frames (default 10)")
    p.add_argument("--fit-points", action="store_true",
                   help="model.fit_points: snap vehicle boxes onto their points (the setting for real logs, README)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "real_selection.md"), help="markdown file to write")
    a = p.parse_args(argv)
    root = Path(a.real).resolve()
    missing = [n for n, rel in SAMPLES.items() if not (root / rel).exists()]
    if missing:
        print(f"skipped: no real samples {missing} under {root} (the shared data checkout ../shared/data/real is "
              "absent); pass --real <folder>", file=sys.stderr)
        return 0
    res = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, rel in SAMPLES.items():
            res.append(run_sample(name, root / rel, a.model, a.budget / 100.0, tmp, a.fit_points))
    text = to_markdown(res, a.model + (" --fit-points" if a.fit_points else ""), a.budget / 100.0)
    Path(a.out).write_text(text)
    print(text)
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
