"""Parsers for ``labeler bench efficiency`` and ``labeler gate`` (wired into :mod:`labeler.cli` with
``add_bench_parser(sub)`` and ``add_gate_parser(sub)``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _state(args) -> str:
    return str(Path(getattr(args, "state", None) or os.environ.get("LABELER_STATE") or "./state").expanduser().resolve())


def _heldout(args, state: str) -> list[str]:
    from labeler.logs.native import find_native_logs

    root = args.logs or os.path.join(state, "heldout_logs")
    if not os.path.exists(root):
        from labeler.simulate import SimConfig, simulate_logs

        print(f"simulating {args.num_logs} held-out logs (seed {args.seed}, {args.duration:g} s) into {root}", file=sys.stderr)
        simulate_logs(root, args.num_logs, args.seed, SimConfig(duration_s=args.duration), workers=1, progress=False)
    logs = find_native_logs(root)
    logs = logs[: args.num_logs] if args.num_logs else logs
    if getattr(args, "log_index", None):
        try:
            pick = [int(i) for i in args.log_index.split(",")]
            logs = [logs[i] for i in pick]
        except (ValueError, IndexError):
            from labeler.errors import ConfigError

            raise ConfigError(f"--log-index {args.log_index!r}: give comma-separated indices into the {len(logs)} "
                              "held-out logs, e.g. 2,3") from None
    return logs


def _class_scores(text: str | None, flag: str) -> dict:
    """``car=0.45,truck=0.4`` -> {"car": 0.45, "truck": 0.4}."""
    from labeler.classes import CLASSES
    from labeler.errors import ConfigError

    out = {}
    for kv in (text or "").split(","):
        if not kv.strip():
            continue
        k, _, v = kv.partition("=")
        k = k.strip()
        if k not in CLASSES:
            raise ConfigError(f"{flag}: unknown class {k!r}; known: {list(CLASSES)} (format car=0.45,truck=0.4)")
        try:
            out[k] = float(v)
        except ValueError:
            raise ConfigError(f"{flag}: {kv!r} is not class=score (e.g. car=0.45)") from None
    return out


_NESTED = ("track", "proposals", "rescore")  # RefineCfg settings groups: --refine track.<key>=, proposals.<key>=, rescore.<key>=


def _parse_value(cur, v: str, kv: str, name: str, flag: str = "--refine"):
    """``v`` as the type of the current value ``cur`` (bool: true/false; dict: class=value,class=value)."""
    from labeler.errors import ConfigError

    if isinstance(cur, bool):
        if v.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if v.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{flag} {kv!r}: {name} needs true or false")
    if isinstance(cur, dict):
        return _class_scores(v, f"{flag} {name}")
    try:
        return type(cur)(v)
    except ValueError:
        raise ConfigError(f"{flag} {kv!r}: {name} needs a {type(cur).__name__}") from None


def _refine_cfg(items: list[str] | None):
    """``--refine key=value`` overrides of :class:`labeler.refine.smoothing.RefineCfg` (``track.key`` for the
    tracker's :class:`TrackCfg`, ``proposals.key`` for the cluster proposals' :class:`ProposalCfg`, ``rescore.key`` for
    the learned box scores' :class:`RescoreCfg`)."""
    import dataclasses

    from labeler.errors import ConfigError
    from labeler.refine.smoothing import RefineCfg

    cfg = RefineCfg()
    for kv in items or []:
        k, _, v = kv.partition("=")
        group, dot, rest = k.partition(".")
        target, name = (getattr(cfg, group), rest) if dot and group in _NESTED else (cfg, k)
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields or (target is cfg and name in (*_NESTED, "enabled")):
            raise ConfigError(f"--refine {kv!r}: unknown setting; known: {sorted(set(fields) - {*_NESTED, 'enabled'})} "
                              "and track.<name>, proposals.<name>, rescore.<name>")
        val = _parse_value(getattr(target, name), v, kv, name)
        if target is cfg:
            cfg = dataclasses.replace(cfg, **{name: val})
        else:
            cfg = dataclasses.replace(cfg, **{group: dataclasses.replace(target, **{name: val})})
    return cfg


def _from_pipeline(cfg, args):
    """Benchmark settings from a pipeline YAML (what the nightly job does): the detector's score threshold, the
    refinement settings, the refined accept scores, the selection's spread, review propagation and, with
    ``refine.context_hz`` >= the logs' 10 Hz, refinement on every frame. Flags given explicitly win."""
    import dataclasses

    from labeler.pipeline.config import load_config

    pc = load_config(args.config)
    over = {"pred_min_score": pc.model.score_threshold, "accept_score": pc.selection.accept_score,
            "accept_refined": dict(pc.selection.accept_score_by_class), "refine": pc.refine,
            "refine_step": 1 if pc.refine.context_hz >= 10 else 0, "spread_s": pc.selection.spread_s,
            "propagate": pc.review.propagate}
    given = {"pred_min_score": args.min_score != 0.3, "accept_score": args.accept_score != 0.3,
             "accept_refined": bool(args.accept_refined), "refine": bool(args.refine), "refine_step": args.refine_step != 0,
             "spread_s": args.spread is not None, "propagate": args.propagate is not None}
    return dataclasses.replace(cfg, **{k: v for k, v in over.items() if not given[k]})


def _propagate_cfg(items: list[str] | None):
    """``--propagate [key=value ...]``: review propagation on (:class:`labeler.refine.propagate.PropagateCfg`
    overrides); None: off."""
    import dataclasses

    from labeler.errors import ConfigError
    from labeler.refine.propagate import PropagateCfg

    if items is None:
        return PropagateCfg()
    cfg = PropagateCfg(enabled=True)
    fields = {f.name for f in dataclasses.fields(cfg)} - {"enabled"}
    for kv in items:
        k, _, v = kv.partition("=")
        if k not in fields:
            raise ConfigError(f"--propagate {kv!r}: unknown setting; known: {sorted(fields)}")
        cfg = dataclasses.replace(cfg, **{k: _parse_value(getattr(cfg, k), v, kv, k, "--propagate")})
    return cfg


def cmd_bench_efficiency(args) -> int:
    from labeler.refine.efficiency import BenchCfg, format_table, plot, run_benchmark, to_json
    from labeler.review.effort import CostModel

    state = _state(args)
    logs = _heldout(args, state)
    budgets = tuple(float(b) / 100.0 for b in args.budgets.split(","))
    cfg = BenchCfg(frame_step=args.frame_step, accept_score=args.accept_score, budgets=budgets, seed=args.seed,
                   accept_raw=_class_scores(args.accept_raw, "--accept-raw"),
                   accept_refined=_class_scores(args.accept_refined, "--accept-refined"),
                   refine=_refine_cfg(args.refine), refine_step=args.refine_step, pred_min_score=args.min_score,
                   propagate=_propagate_cfg(args.propagate), spread_s=args.spread or 0.0)
    if args.config:
        cfg = _from_pipeline(cfg, args)
    cm = CostModel.with_overrides(args.cost)
    res = run_benchmark(logs, args.model, cfg, cache_dir=os.path.join(state, "cache", "efficiency"), cm=cm,
                        progress=lambda m: print(m, file=sys.stderr))
    out = Path(args.out or os.path.join(state, "bench", "efficiency"))
    out.mkdir(parents=True, exist_ok=True)
    text = format_table(res)
    name = args.name
    (out / f"{name}.md").write_text(text + "\n")
    (out / f"{name}.json").write_text(to_json(res))
    png = plot(res, str(out / f"{name}.png"))
    print(text)
    print(f"\nwrote {out / (name + '.md')}, {out / (name + '.json')}, {png}")
    return 0


def cmd_gate(args) -> int:
    from labeler.refine.bank import gate

    state = _state(args)
    held = []
    if not args.no_heldout:
        from labeler.logs.native import find_native_logs

        root = args.logs or os.path.join(state, "heldout_logs")
        held = find_native_logs(root) if os.path.exists(root) else []
    res = gate(args.model, args.baseline, state, held, frame_step=args.frame_step, tolerance=args.tolerance,
               bank_version=args.bank_version)
    print(json.dumps({"candidate": res.candidate, "baseline": res.baseline, "bank_version": res.bank_version,
                      "bank_frames": res.bank_frames}, indent=1, default=float))
    print(res.message, file=sys.stdout if res.passed else sys.stderr)
    return 0 if res.passed else 1


def add_bench_parser(sub) -> argparse.ArgumentParser:
    """``labeler bench efficiency``."""
    b = sub.add_parser("bench", help="benchmarks measured on simulated ground truth")
    bsub = b.add_subparsers(dest="bench", required=True, metavar="BENCH")
    e = bsub.add_parser("efficiency", help="human effort and final box error vs review budget",
                        description="Run a detector on held-out simulated logs, refine offboard, select frames for review "
                                    "(random / score-only / all signals, each with and without refinement) and report, per "
                                    "budget, the final box error when reviewed frames end exactly right, the human seconds "
                                    "(labeler.review.effort.CostModel) vs labeling from scratch, and the share of injected "
                                    "corner cases reviewed. Writes efficiency.md/.json/.png.")
    e.add_argument("--model", default="geometric", help="detector spec (default geometric; e.g. bev, "
                                                          "'geometric:min_cluster_points=200')")
    e.add_argument("--logs", help="folder of held-out native logs with ground truth (default <state>/heldout_logs; "
                                  "simulated with --seed when missing)")
    e.add_argument("--num-logs", type=int, default=4, help="logs used (default 4)")
    e.add_argument("--duration", type=float, default=20.0, help="seconds per simulated log when simulating (default 20)")
    e.add_argument("--seed", type=int, default=0, help="simulation seed and random-selection seed (default 0)")
    e.add_argument("--frame-step", type=int, default=5, help="evaluate every N-th frame (default 5)")
    e.add_argument("--budgets", default="0,2,5,10,20,50,100", help="review budgets, percent of frames (default 0,2,5,10,20,50,100)")
    e.add_argument("--accept-score", type=float, default=0.3, help="auto-accepted pre-labels need this score (default 0.3)")
    e.add_argument("--config", help="take the detector score threshold, refinement settings (incl. 10 Hz context) and "
                                     "refined accept scores from this pipeline YAML, e.g. pipelines/nightly.yaml")
    e.add_argument("--min-score", type=float, default=0.3, help="drop detections below this score first, as the "
                                                                 "pipeline's model.score_threshold (default 0.3)")
    e.add_argument("--accept-raw", help="per-class accept scores for single-frame boxes, e.g. car=0.45,truck=0.45 "
                                        "(others: --accept-score)")
    e.add_argument("--accept-refined", help="per-class accept scores for refined boxes (same format)")
    e.add_argument("--refine", action="append", help="refinement setting key=value (labeler.refine.smoothing.RefineCfg; "
                                                     "track.<key> for the tracker, proposals.<key> for cluster proposals, "
                                                     "rescore.<key> for learned box scores, "
                                                     "e.g. proposals.enabled=true); repeatable")
    e.add_argument("--refine-step", type=int, default=0, help="refine on the detections of every N-th frame (default 0 = "
                                                              "--frame-step: the pipeline's keyframes; 1: every sweep)")
    e.add_argument("--propagate", nargs="*", metavar="KEY=VALUE",
                   help="also report refined rows where the reviewed frames' labels are propagated along the tracks to "
                        "the other frames (labeler.refine.propagate.PropagateCfg; optional overrides, e.g. hold_s=2)")
    e.add_argument("--spread", type=float, help="all-signals selection spreads its picks over each log, seconds "
                                                "(select_diverse spread_s; default 0, or the --config's selection.spread_s)")
    e.add_argument("--log-index", help="use only these held-out logs (comma-separated indices, e.g. 2,3: the ones the "
                                       "settings were not tuned on)")
    e.add_argument("--cost", action="append", help="override a cost, key=seconds (see labeler.review.effort.CostModel); repeatable")
    e.add_argument("--out", help="output folder (default <state>/bench/efficiency)")
    e.add_argument("--name", default="efficiency", help="output file stem (default efficiency: efficiency.md/.json/.png)")
    e.add_argument("--state", help="state dir (same as the global --state)", default=argparse.SUPPRESS)
    e.set_defaults(func=cmd_bench_efficiency)
    return b


def add_gate_parser(sub) -> argparse.ArgumentParser:
    """``labeler gate``."""
    g = sub.add_parser("gate", help="fail when a candidate model forgets corner cases of the bank",
                       description="Evaluate a candidate detector and the current one on the corner-case bank "
                                   "(<state>/bank/v<N>) and on held-out logs; exit 1 when the candidate's recall on the bank "
                                   "is below the current model's (minus --tolerance).")
    g.add_argument("--model", required=True, help="candidate detector spec")
    g.add_argument("--baseline", default="geometric", help="current detector spec (default geometric)")
    g.add_argument("--bank-version", type=int, help="bank version (default latest)")
    g.add_argument("--logs", help="held-out logs folder (default <state>/heldout_logs when it exists)")
    g.add_argument("--no-heldout", action="store_true", help="evaluate on the bank only")
    g.add_argument("--frame-step", type=int, default=10, help="held-out frames: every N-th (default 10)")
    g.add_argument("--tolerance", type=float, default=0.0, help="allowed recall drop (default 0)")
    g.add_argument("--state", help="state dir (same as the global --state)", default=argparse.SUPPRESS)
    g.set_defaults(func=cmd_gate)
    return g


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (until labeler.cli wires the parsers): ``python -m labeler.refine.cli bench efficiency``."""
    p = argparse.ArgumentParser(prog="labeler")
    p.add_argument("--state")
    sub = p.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    add_gate_parser(sub)
    args = p.parse_args(argv)
    from labeler.errors import LabelerError

    try:
        return args.func(args)
    except LabelerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
