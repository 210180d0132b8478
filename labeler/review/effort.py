"""``labeler report review``: human seconds spent reviewing vs labeling the same final boxes from scratch.

Measured review cost = Σ lead_time of the annotations used + Σ lead_time of skipped (cancelled) annotations.
Scratch cost (cost model, :class:`CostModel`) = per reviewed frame ``frame_s`` + per final 3D box ``scratch_3d_s``
+ per final camera box ``scratch_2d_s``. A modelled review cost (per-action costs) is reported next to the measured
one, for frames without lead times and as a sanity check. Efficiency ratio = scratch cost / review cost.

The default numbers are ASSUMPTIONS taken from published annotation time studies (see docs/review.md for sources);
pass your own with ``--cost key=seconds``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import pyarrow as pa


@dataclass(frozen=True)
class CostModel:
    """Seconds per action (assumptions; see docs/review.md)."""

    scratch_3d_s: float = 90.0    # draw one 3D cuboid from scratch (20-40 boxes/hour reported -> 90-180 s; low end)
    scratch_2d_s: float = 25.5    # draw one 2D box (Su et al. 2012, median drawing time)
    frame_s: float = 15.0         # per frame: load and scan the scene (both from scratch and in review)
    verify_s: float = 2.0         # accept a pre-label (box verification ~1.6 s, Papadopoulos et al. 2016)
    edit_3d_s: float = 30.0       # fix the pose / size of a pre-labelled cuboid (about a third of drawing it)
    edit_2d_s: float = 8.0        # fix a pre-labelled 2D box
    relabel_s: float = 4.0        # change the class of a box (one click in the label list + verification)
    delete_s: float = 3.0         # select and delete a false positive
    add_3d_s: float = 90.0        # a missed 3D box costs as much as drawing it from scratch
    add_2d_s: float = 25.5
    bad_frame_s: float = 5.0      # mark the frame bad

    @classmethod
    def with_overrides(cls, pairs: list[str] | None) -> "CostModel":
        """``["edit_3d_s=20", ...]`` -> a model with those fields replaced (ValueError on an unknown key)."""
        m = cls()
        names = {f.name for f in fields(cls)}
        for p in pairs or []:
            k, _, v = p.partition("=")
            if k not in names or not v:
                raise ValueError(f"unknown cost {p!r}; known: {sorted(names)} (key=seconds)")
            m = replace(m, **{k: float(v)})
        return m


def _action_cost(m: CostModel, view: str, action: str) -> float:
    cam = view not in ("bev", "frame")
    return {
        "accepted": m.verify_s,
        "edited": m.edit_2d_s if cam else m.edit_3d_s,
        "relabelled": m.relabel_s,
        "added": m.add_2d_s if cam else m.add_3d_s,
        "deleted": m.delete_s,
        "bad_frame": m.bad_frame_s,
    }[action]


def effort(review_log: pa.Table | list[dict], review_frames: pa.Table | list[dict], model: CostModel = CostModel()) -> dict:
    """Effort numbers of a pulled run (rows of REVIEW_LOG and REVIEW_FRAMES).

    Returns a dict with counts per action, ``frames_reviewed``, ``frames_skipped``, ``final_boxes_3d``,
    ``final_boxes_2d``, ``review_s_measured``, ``review_s_modelled``, ``scratch_s``, ``ratio_measured``,
    ``ratio_modelled`` and ``saved_s`` (scratch - measured). Bad frames count as reviewed (time spent) but have no
    scratch cost (their boxes are not kept); frames without a lead time use their modelled cost in the measured sum.
    """
    logs = review_log.to_pylist() if isinstance(review_log, pa.Table) else list(review_log)
    frames = review_frames.to_pylist() if isinstance(review_frames, pa.Table) else list(review_frames)
    counts = {a: 0 for a in ("accepted", "edited", "relabelled", "added", "deleted", "bad_frame")}
    modelled_by_frame: dict[tuple, float] = {}
    final3 = final2 = 0
    bad = {(f["log_id"], f["timestamp_ns"]) for f in frames if f.get("verdict") == "bad_frame"}
    for r in logs:
        counts[r["action"]] += 1
        k = (r["log_id"], r["timestamp_ns"])
        modelled_by_frame[k] = modelled_by_frame.get(k, 0.0) + _action_cost(model, r["view"], r["action"])
        if r["action"] not in ("deleted", "bad_frame") and k not in bad:
            if r["view"] == "bev":
                final3 += 1
            else:
                final2 += 1
    reviewed = [f for f in frames if f["status"] == "reviewed"]
    skipped = [f for f in frames if f["status"] == "skipped"]
    measured = modelled = 0.0
    for f in reviewed:
        k = (f["log_id"], f["timestamp_ns"])
        mod = model.frame_s + modelled_by_frame.get(k, 0.0)
        modelled += mod
        measured += float(f["lead_time_s"]) if f.get("lead_time_s") is not None else mod
    skipped_s = float(sum(float(f.get("skipped_lead_time_s") or 0.0) for f in frames))
    measured += skipped_s
    modelled += model.frame_s * len(skipped)
    good_frames = sum(1 for f in reviewed if (f["log_id"], f["timestamp_ns"]) not in bad)
    scratch = model.frame_s * good_frames + model.scratch_3d_s * final3 + model.scratch_2d_s * final2
    return {
        **counts,
        "frames_reviewed": len(reviewed),
        "frames_bad": len(bad),
        "frames_skipped": len(skipped),
        "final_boxes_3d": final3,
        "final_boxes_2d": final2,
        "review_s_measured": measured,
        "review_s_skipped": skipped_s,
        "review_s_modelled": modelled,
        "scratch_s": scratch,
        "saved_s": scratch - measured,
        "ratio_measured": scratch / measured if measured > 0 else float("nan"),
        "ratio_modelled": scratch / modelled if modelled > 0 else float("nan"),
    }


def format_report(e: dict, model: CostModel) -> str:
    lines = [
        "| quantity | value |", "|---|---|",
        *[f"| {k} | {e[k]} |" for k in ("frames_reviewed", "frames_bad", "frames_skipped", "accepted", "edited",
                                        "relabelled", "added", "deleted", "final_boxes_3d", "final_boxes_2d")],
        f"| human review, measured lead time (s) | {e['review_s_measured']:.1f} |",
        f"| human review, cost model (s) | {e['review_s_modelled']:.1f} |",
        f"| same final boxes from scratch, cost model (s) | {e['scratch_s']:.1f} |",
        f"| saved (s) | {e['saved_s']:.1f} |",
        f"| efficiency ratio scratch / measured review | {e['ratio_measured']:.2f} |",
        f"| efficiency ratio scratch / modelled review | {e['ratio_modelled']:.2f} |",
        "", "cost model (seconds, assumptions): " + ", ".join(f"{k}={v:g}" for k, v in asdict(model).items()),
    ]
    return "\n".join(lines)


def plot(e: dict, path: str | Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["review (measured)", "review (cost model)", "from scratch (cost model)"]
    vals = [e["review_s_measured"], e["review_s_modelled"], e["scratch_s"]]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    bars = ax.barh(names, vals, color=["#4287f5", "#9bbcf5", "#e64646"])
    for b, v in zip(bars, vals):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.0f} s", va="center")
    ax.set_xlabel("human seconds")
    ax.set_title(f"review effort: scratch / review = {e['ratio_measured']:.2f}x")
    ax.set_xlim(0, max(vals + [1]) * 1.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def write_report(run_dir: str, out_dir: str | None = None, model: CostModel = CostModel()) -> dict:
    """Report of a pulled run: ``effort.csv``, ``effort.json``, ``effort.md`` and ``effort.png`` in ``out_dir``
    (default ``<run>/review``). Returns the numbers plus ``files``."""
    import labeler.review.tables  # noqa: F401  (registers the review tables)
    from labeler.io.tables import read_table

    logs, frames = read_table(run_dir, "review_log"), read_table(run_dir, "review_frames")
    e = effort(logs, frames, model)
    out = Path(out_dir or Path(run_dir) / "review")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "effort.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["quantity", "value"])
        for k, v in e.items():
            w.writerow([k, v])
    (out / "effort.json").write_text(json.dumps({"effort": e, "cost_model": asdict(model)}, indent=1))
    text = format_report(e, model)
    (out / "effort.md").write_text(text + "\n")
    files = {"csv": str(out / "effort.csv"), "json": str(out / "effort.json"), "md": str(out / "effort.md"),
             "png": plot(e, out / "effort.png")}
    return {**e, "files": files, "text": text}
