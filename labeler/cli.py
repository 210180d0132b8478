"""The ``labeler`` command line. ``labeler <command> --help`` explains every option."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from labeler.errors import LabelerError

DEFAULT_STATE = "./state"


def _state(args) -> str:
    return str(Path(args.state or os.environ.get("LABELER_STATE") or DEFAULT_STATE).expanduser().resolve())


def cmd_run(args) -> int:
    from labeler.pipeline.config import load_config
    from labeler.pipeline.run import run_pipeline

    overrides = {}
    if args.scheduler:
        overrides["dask.scheduler"] = args.scheduler
    if args.workers:
        overrides["dask.n_workers"] = args.workers
    if args.night:
        overrides["night"] = args.night
    if args.logs:
        overrides["input.logs"] = args.logs
    if args.model:
        overrides["model.name"] = args.model
    if args.checkpoint:
        overrides["model.checkpoint"] = args.checkpoint
    if args.trusted_checkpoint:
        overrides["model.trusted"] = True
    if args.device:
        overrides["model.device"] = args.device
    if args.budget is not None:
        overrides["selection.budget_fraction"] = args.budget
    cfg = load_config(args.config, overrides).resolved(_state(args))
    summary = run_pipeline(cfg, progress=not args.no_progress, push=not args.no_push)
    print(summary.format())
    if summary.studio_url:
        print(f"\nReview the selected frames in Label Studio: {summary.studio_url}  "
              f"(login and password: `labeler studio login --state {cfg.state_dir}`)")
    print(f"Tables: {summary.run_dir}/tables  (open notebooks/run_overview.ipynb with LABELER_RUN_DIR={summary.run_dir})")
    return 0


def cmd_eval(args) -> int:
    import json

    import pyarrow as pa

    from labeler.eval import EvalConfig, evaluate
    from labeler.eval.groundtruth import gt_table
    from labeler.eval.report import plot_pr_curves
    from labeler.io.tables import read_run_record, read_table

    run_dir = args.run or str(Path(_state(args)) / "runs" / "demo")
    rec = read_run_record(run_dir)
    frames = read_table(run_dir, "frames").to_pandas()
    kept = frames[frames.outcome != "filtered"]
    preds = read_table(run_dir, "predictions_3d")
    gts = []
    for inp in rec["inputs"]:
        path, fmt = (inp["path"], inp["format"]) if isinstance(inp, dict) else (inp, "native")
        try:
            from labeler.logs.registry import open_log

            log_id = open_log(path, fmt).log_id
        except LabelerError:
            continue  # quarantined log
        ts = kept.timestamp_ns[kept.log_id == log_id].tolist()
        if ts:
            gts.append(gt_table(path, fmt, ts))
    if not gts:
        print("error: the run's inputs carry no ground truth to evaluate against", file=sys.stderr)
        return 1
    gt = pa.concat_tables(gts)
    cfg = EvalConfig(max_range_m=args.max_range)
    res = evaluate(preds, gt, cfg)
    print(f"{rec['model_version']} on {gt.num_rows} ground-truth boxes in {len(kept)} frames of {run_dir}")
    print(res.format())
    out = Path(args.out or Path(run_dir) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    res.to_table().to_csv(out / "per_class.csv", index=False)
    (out / "summary.json").write_text(json.dumps({"model_version": rec["model_version"], "mean_ap": res.mean_ap,
                                                  "class_ap": res.class_ap, "mean_iou_ap": res.mean_iou_ap}, indent=2))
    plot_pr_curves(res, out / "pr_curves.png")
    print(f"wrote {out}/per_class.csv, summary.json, pr_curves.png")
    return 0


def cmd_train(args) -> int:
    from labeler.models.bev.train import main as train_main

    return train_main(args.args)


def cmd_simulate(args) -> int:
    from labeler.simulate import SimConfig, simulate_logs

    out = args.out or str(Path(_state(args)) / "logs")
    profiles = tuple(p for p in args.lidar_profiles.split("+") if p)
    cfg = SimConfig(duration_s=args.duration, corner_cases=not args.no_corner_cases, lidar_profiles=profiles)
    paths = simulate_logs(out, num_logs=args.logs, seed=args.seed, cfg=cfg,
                          workers=args.workers, progress=not args.no_progress)
    print(f"{len(paths)} logs in {out}")
    return 0


def cmd_studio(args) -> int:
    from labeler.studio import server

    state = Path(_state(args))
    if args.action == "up":
        info = server.start_server(state, port=args.port)
        print(f"Label Studio is running at {info.url}")
        print(f"  login:    {info.username}")
        print(f"  password: stored in {info.password_file} (mode 0600; `cat` it to log in)")
        print(f"  API token: stored in {info.token_file} (mode 0600); the pipeline reads it from there")
        print(f"  log:      {info.log_file}")
        print(f"  stop it with: labeler studio down --state {state}")
    elif args.action == "down":
        stopped = server.stop_server(state)
        print("stopped" if stopped else "no server was running for this state dir")
    elif args.action == "login":
        info = server.server_info(state)
        if info is None:
            print(f"no Label Studio state in {state}; run `labeler studio up` first", file=sys.stderr)
            return 1
        print(f"url: {info.url}\nlogin: {info.username}\npassword file: {info.password_file}")
    return 0


def _add_state(parser: argparse.ArgumentParser) -> None:
    """``--state`` after the subcommand too (SUPPRESS: an absent option does not override the global one)."""
    parser.add_argument("--state", help="state dir (same as the global --state)", default=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labeler",
        description="Auto-label road-test logs: filter frames, pre-label 3D and 2D boxes, score corner cases, "
                    "auto-accept the confident frames and send the rest to Label Studio for review.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Quick start:  labeler run --config pipelines/nightly.yaml   (simulates logs, starts Label Studio, runs the night)",
    )
    p.add_argument("--state", help="state dir for logs, runs, the Label Studio server and its token "
                                   f"(default: $LABELER_STATE or {DEFAULT_STATE})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the nightly auto-labeling job", description=
                       "Run the nightly job: ingest logs, filter, pre-label, score, select corner cases within the budget, "
                       "push review tasks to Label Studio and write every table as Parquet under <state>/runs/<night>/tables.")
    r.add_argument("--config", help="pipeline YAML (default: built-in defaults, the same as pipelines/nightly.yaml)")
    r.add_argument("--night", help="run key; re-running the same night replaces its outputs and never duplicates tasks (default: from the config, 'demo')")
    r.add_argument("--logs", help="folder of native logs (overrides input.logs; any fsspec URL)")
    r.add_argument("--model", help="detector spec from labeler.models.registry.MODELS: 'geometric' (default) or 'mmdet3d:<config>' (overrides model.name)")
    r.add_argument("--checkpoint", help="weights file for the model (e.g. an mmdet3d checkpoint); loaded weights-only")
    r.add_argument("--trusted-checkpoint", action="store_true",
                   help="allow full (pickle) loading of --checkpoint; only for files you trust (OpenMMLab checkpoints need it)")
    r.add_argument("--device", choices=["cpu", "cuda"], help="where the model runs (default cpu; cuda needs a CUDA build)")
    r.add_argument("--budget", type=float, help="fraction of kept frames sent to review, 0..1 (overrides selection.budget_fraction)")
    r.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://127.0.0.1:8786 (default: a LocalCluster)")
    r.add_argument("--workers", type=int, help="LocalCluster worker processes (default: dask.n_workers, 2)")
    r.add_argument("--no-push", action="store_true", help="do not contact Label Studio; write tables and assets only")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_state(r)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("simulate", help="generate simulated road-test logs (the embedded default input)",
                       description="Ray-cast a spinning LiDAR (HDL-32E-like by default) and 2 cameras through a synthetic road scene "
                                   "with moving and parked actors and injected corner cases; write native logs. Deterministic for a seed.")
    s.add_argument("--out", help="output folder (default: <state>/logs)")
    s.add_argument("--logs", type=int, default=10, help="number of logs (default 10)")
    s.add_argument("--duration", type=float, default=20.0, help="seconds per log at 10 Hz (default 20)")
    s.add_argument("--seed", type=int, default=0, help="base seed (default 0); the same seed gives identical logs")
    s.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    s.add_argument("--no-corner-cases", action="store_true", help="do not inject corner cases")
    s.add_argument("--lidar-profiles", default="",
                   help="'+'-separated sensors each log draws one of, e.g. hdl32e+hdl64e+pandar40+vlp32c_x2+vlp16 "
                        "(labeler.simulate.lidar.PROFILES: beams, vertical FOV, mounting height); default: the HDL-32E")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_state(s)
    s.set_defaults(func=cmd_simulate)

    ev = sub.add_parser("eval", help="evaluate a run's 3D pre-labels against the logs' ground truth",
                        description="nuScenes-style detection AP (centre distance 0.5/1/2/4 m, per class and mean) and BEV-IoU AP "
                                    "of a run's predictions_3d against the ground truth stored in its input logs (kept frames only).")
    ev.add_argument("--run", help="run folder (default: <state>/runs/demo)")
    ev.add_argument("--out", help="where to write per_class.csv, summary.json and pr_curves.png (default: <run>/eval)")
    ev.add_argument("--max-range", type=float, default=50.0, help="evaluate boxes within this distance of the LiDAR, metres (default 50)")
    _add_state(ev)
    ev.set_defaults(func=cmd_eval)

    st = sub.add_parser("studio", help="manage a local Label Studio server",
                        description="up: start a local Label Studio on 127.0.0.1 (data, admin password and API token under "
                                    "<state>/label-studio, files mode 0600); down: stop it; login: show the URL and login.")
    st.add_argument("action", choices=["up", "down", "login"], help="up | down | login")
    st.add_argument("--port", type=int, default=8080, help="port to listen on, 127.0.0.1 only (default 8080; a free one if taken)")
    _add_state(st)
    st.set_defaults(func=cmd_studio)

    t = sub.add_parser("train", help="train the embedded BEV detector on simulated logs (`labeler train --help`)",
                       add_help=False, prefix_chars="\0")
    t.add_argument("args", nargs=argparse.REMAINDER, help="options of labeler.models.bev.train (see `labeler train --help`)")
    t.set_defaults(func=cmd_train)

    from labeler.refine import rescore_train

    rt = sub.add_parser("train-rescorer", help="train the learned box scores of refined boxes on simulated logs",
                        description=rescore_train.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rescore_train.add_arguments(rt)
    rt.set_defaults(func=rescore_train.run)

    from labeler.refine.cli import add_bench_parser, add_gate_parser
    from labeler.review.cli import add_parsers as add_review_parsers

    add_review_parsers(sub)
    add_bench_parser(sub)
    add_gate_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabelerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
