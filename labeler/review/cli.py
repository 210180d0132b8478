"""CLI of the review round trip: ``labeler pull``, ``labeler report review``, ``labeler webhook``.

Wire into :mod:`labeler.cli` with one line after the other subparsers: ``review_cli.add_parsers(sub)``
(``from labeler.review import cli as review_cli``). Each parser sets ``func`` like the others.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _run_dir(args) -> str:
    from labeler.review.pull import run_dir_of

    return run_dir_of(getattr(args, "state", None), args.night, args.run)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="run folder <state>/runs/<night> (default: from --state and --night)")
    p.add_argument("--night", help="night of the run under <state>/runs (default 'demo')")
    p.add_argument("--state", help="state dir (same as the global --state)", default=argparse.SUPPRESS)


def _client(run_dir: str):
    from labeler.review.pull import state_of_run
    from labeler.studio.client import connect

    return connect(state_dir=state_of_run(run_dir))


def cmd_pull(args) -> int:
    from labeler.review.pull import pull_run

    run = _run_dir(args)
    if not (Path(run) / "run.json").exists():
        print(f"error: {run} is not a run folder (no run.json); pass --run or --state/--night", file=sys.stderr)
        return 2
    from labeler.review.pull import state_of_run

    prop = None
    if args.no_propagate:
        from labeler.refine.propagate import PropagateCfg

        prop = PropagateCfg(enabled=False)
    res = pull_run(run, export=not args.no_export, bank_state=None if args.no_bank else str(state_of_run(run)),
                   propagate=prop)
    print(res.format())
    return 0


def cmd_report(args) -> int:
    from labeler.review.effort import CostModel, write_report

    run = _run_dir(args)
    if not (Path(run) / "tables" / "review_log").exists():
        print(f"error: {run} has no review_log: run `labeler pull --run {run}` first", file=sys.stderr)
        return 2
    try:
        model = CostModel.with_overrides(args.cost)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = write_report(run, args.out, model)
    print(r["text"])
    print("\n".join(f"  {k}: {v}" for k, v in r["files"].items()))
    return 0


def cmd_webhook(args) -> int:
    from labeler.review.webhook import serve

    run = _run_dir(args)
    rx = serve([run], _client(run), port=args.port, debounce_s=args.debounce)
    print(f"listening on {rx.url} (127.0.0.1 only); Ctrl-C to stop. The Label Studio server must run with "
          "LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS=false (start_server(allow_local_webhooks=True)).")
    try:
        while True:
            time.sleep(1.0)
            while rx.pulls:
                r, res = rx.pulls.pop(0)
                print(f"{time.strftime('%H:%M:%S')} pull {r}: " + (f"FAILED {res}" if isinstance(res, Exception) else res.format()),
                      flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        rx.stop()
    return 0


def add_parsers(sub) -> None:
    """Add ``pull``, ``report`` (``report review``) and ``webhook`` to the ``labeler`` subparsers."""
    p = sub.add_parser("pull", help="pull review results of a run from Label Studio: review log, labels, exports",
                       description="Export the run's Label Studio tasks (full predictions), convert reviewed rectangles back "
                                   "to 3D boxes, write tables review_log, review_frames, labels, labels_2d under "
                                   "<run>/tables and KITTI / nuScenes-style files under <run>/labels (see docs/review.md).")
    _run_args(p)
    p.add_argument("--no-export", action="store_true", help="write the tables only, no KITTI / nuScenes files")
    p.add_argument("--no-bank", action="store_true",
                   help="do not add the reviewed frames to the corner-case bank (<state>/bank, checked by `labeler gate`)")
    p.add_argument("--no-propagate", action="store_true",
                   help="keep the auto-accepted frames' labels as the run accepted them, even when the run's config has "
                        "review.propagate.enabled (which carries reviewed labels along the tracks to those frames)")
    p.set_defaults(func=cmd_pull)

    r = sub.add_parser("report", help="reports of a run (review: human effort vs labeling from scratch)",
                       description="review: human seconds spent (measured lead times) vs labeling the same final boxes "
                                   "from scratch under a documented cost model; table + PNG under <run>/review.")
    r.add_argument("what", choices=["review"], help="review")
    _run_args(r)
    r.add_argument("--out", help="output folder (default <run>/review)")
    r.add_argument("--cost", action="append", metavar="KEY=SECONDS",
                   help="override a cost-model number, e.g. --cost scratch_3d_s=120 (repeatable; see docs/review.md)")
    r.set_defaults(func=cmd_report)

    w = sub.add_parser("webhook", help="receive Label Studio webhooks and pull the run when annotations change",
                       description="Run a receiver on 127.0.0.1:PORT, register it as a webhook of the run's project(s) "
                                   "(ANNOTATION_CREATED / UPDATED) and pull the run, debounced. Label Studio must run with "
                                   "LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS=false to post to 127.0.0.1.")
    _run_args(w)
    w.add_argument("--port", type=int, default=int(os.environ.get("LABELER_WEBHOOK_PORT", 8765)),
                   help="port on 127.0.0.1 (default 8765)")
    w.add_argument("--debounce", type=float, default=2.0, help="seconds of quiet before a pull (default 2)")
    w.set_defaults(func=cmd_webhook)
