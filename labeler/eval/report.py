"""Human-readable output of :class:`labeler.eval.detection.EvalResult`: a text table and PR-curve plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labeler.eval.detection import EvalResult


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def format_result(result: EvalResult, digits: int = 3) -> str:
    """A fixed-width text table: one row per class, then the means.

    Columns: GT and prediction counts (after the range / empty-GT filters), nuScenes AP at each centre-distance
    threshold and their mean, BEV-IoU AP (with its IoU threshold), recall / precision at the score threshold
    (matched at the TP distance threshold), and the nuScenes TP errors ATE (m), ASE (1 - IoU), AOE (rad).
    ``-`` stands for undefined (NaN): e.g. a recall without GT, the orientation error of traffic cones.
    """
    cfg = result.config
    df = result.to_table()
    cols = list(df.columns)
    header = cols

    def cell(c, v):
        if c == "class":
            return str(v)
        if c in ("num_gt", "num_pred"):
            return str(int(v))
        if c == "iou_thr":
            return f"{v:g}"
        return _fmt(float(v), digits)

    rows = [[cell(c, rec[c]) for c in cols] for rec in df.to_dict("records")]
    mean_row = ["mean"] + [""] * (len(cols) - 1)
    mean_row[cols.index("AP")] = _fmt(result.mean_ap, digits)
    mean_row[cols.index("AP_BEV_IoU")] = _fmt(result.mean_iou_ap, digits)
    for m, label in (("trans_err", "ATE"), ("scale_err", "ASE"), ("orient_err", "AOE")):
        mean_row[cols.index(label)] = _fmt(result.mean_tp_errors[m], digits)
    for t in cfg.dist_thresholds_m:
        vals = [result.ap[c][t] for c in cfg.classes if result.num_gt[c] > 0 or not cfg.map_classes_with_gt_only]
        mean_row[cols.index(f"AP@{t:g}m")] = _fmt(sum(vals) / len(vals), digits) if vals else "-"
    table = [header] + rows + [mean_row]
    widths = [max(len(r[k]) for r in table) for k in range(len(cols))]
    line = lambda r: "  ".join(s.ljust(w) if k == 0 else s.rjust(w) for k, (s, w) in enumerate(zip(r, widths)))  # noqa: E731
    sep = "-" * len(line(header))
    out = [line(header), sep] + [line(r) for r in rows] + [sep, line(mean_row)]
    out.append("")
    out.append(f"mAP (nuScenes, centre distance {', '.join(f'{t:g}' for t in cfg.dist_thresholds_m)} m): "
               f"{_fmt(result.mean_ap, digits)}")
    out.append(f"mAP (BEV IoU, {cfg.iou_ap_points}-point interpolated): {_fmt(result.mean_iou_ap, digits)}")
    rng = "none" if cfg.max_range_m is None else f"{cfg.max_range_m:g} m"
    out.append(f"range filter: {rng}{' (per-class overrides)' if cfg.class_max_range_m else ''}; "
               f"GT with 0 LiDAR points {'ignored' if cfg.ignore_empty_gt else 'kept'}; "
               f"recall/precision@score: score >= {cfg.score_threshold:g}, match < {cfg.tp_dist_threshold_m:g} m")
    if not cfg.map_classes_with_gt_only and any(result.num_gt[c] == 0 for c in cfg.classes):
        out.append("note: classes without GT score AP 0 and count in the means (nuScenes devkit rule): "
                   + ", ".join(c for c in cfg.classes if result.num_gt[c] == 0))
    return "\n".join(out)


def plot_pr_curves(result: EvalResult, path, classes=None, dpi: int = 100) -> Path:
    """Write a PNG with one panel per class: the devkit's 101-point PR curves at every distance threshold
    and the raw BEV-IoU PR curve. Returns the path. Needs matplotlib (Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cfg = result.config
    classes = list(classes or cfg.classes)
    n = max(1, len(classes))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for k, c in enumerate(classes):
        ax = axes[k // ncols][k % ncols]
        for t in cfg.dist_thresholds_m:
            cv = result.curves[(c, t)]
            ax.plot(cv.recall, cv.precision, label=f"{t:g} m (AP {result.ap[c][t]:.2f})")
        rec, prec = result.iou_pr.get(c, ((), ()))
        if len(rec):
            ax.step(rec, prec, where="post", linestyle="--", color="k",
                    label=f"IoU {cfg.iou_threshold(c):g} (AP {result.iou_ap[c]:.2f})")
        ax.set_title(f"{c}  (GT {result.num_gt[c]}, pred {result.num_pred[c]})", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
    for k in range(len(classes), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.suptitle(f"mAP {result.mean_ap:.3f}   BEV-IoU mAP {result.mean_iou_ap:.3f}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
