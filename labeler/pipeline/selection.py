"""Pick the frames a person reviews, within a budget, with temporal diversity (pure function)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from labeler.pipeline.config import SelectionCfg


def select_for_review(log_ids, timestamps_ns, priorities, cfg: SelectionCfg) -> np.ndarray:
    """Boolean mask of frames sent to review.

    Frames are taken in priority order (ties: earlier first) while the budget lasts
    (``ceil(budget_fraction * n)`` capped at ``max_frames``), skipping frames below ``min_priority`` and frames
    within ``min_gap_s`` of an already selected frame of the same log (one frame per event, not ten neighbours).
    """
    log_ids = np.asarray(log_ids, dtype=object)
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    pr = np.asarray(priorities, dtype=np.float64)
    n = len(pr)
    budget = min(int(math.ceil(cfg.budget_fraction * n - 1e-9)), cfg.max_frames)
    chosen = np.zeros(n, dtype=bool)
    if budget <= 0 or n == 0:
        return chosen
    order = np.lexsort((ts, -pr))
    picked: dict[str, list[int]] = {}
    gap = int(cfg.min_gap_s * 1e9)
    count = 0
    for i in order:
        if count >= budget or pr[i] < cfg.min_priority:
            break
        times = picked.setdefault(log_ids[i], [])
        if any(abs(int(ts[i]) - t) < gap for t in times):
            continue
        times.append(int(ts[i]))
        chosen[i] = True
        count += 1
    return chosen


def select_table(scores: pa.Table, cfg: SelectionCfg) -> np.ndarray:
    return select_for_review(scores.column("log_id").to_pylist(), scores.column("timestamp_ns").to_numpy(),
                             scores.column("priority").to_numpy(), cfg)


def select_frames(log_ids, timestamps_ns, priorities, base_priorities, reasons, cfg: SelectionCfg) -> np.ndarray:
    """The night's review selection under ``cfg.strategy``.

    * ``diverse``: :func:`labeler.refine.signals.select_diverse` over the frames whose priority reaches
      ``min_priority`` (one frame per event: a reason over consecutive frames or along one track), budget
      ``ceil(budget_fraction * all kept frames)`` capped at ``max_frames``, ``min_gap_s`` as a preference;
    * ``priority``: :func:`select_for_review` (plain priority order, ``min_gap_s`` strict).
    """
    if cfg.strategy == "priority":
        return select_for_review(log_ids, timestamps_ns, priorities, cfg)
    from labeler.refine.signals import budget_frames, select_diverse

    pr = np.asarray(priorities, dtype=np.float64)
    n = len(pr)
    chosen = np.zeros(n, dtype=bool)
    k = budget_frames(n, cfg.budget_fraction, cfg.max_frames)
    eligible = np.flatnonzero(pr >= cfg.min_priority)
    k = min(k, len(eligible))
    if k == 0:
        return chosen
    lids = [log_ids[i] for i in eligible]
    ts = np.asarray(timestamps_ns, dtype=np.int64)[eligible]
    base = np.asarray(base_priorities, dtype=np.float64)[eligible]
    sub = select_diverse(lids, ts, base, [list(reasons[i]) for i in eligible], 1.0, max_frames=k, min_gap_s=cfg.min_gap_s,
                         spread_s=cfg.spread_s)
    chosen[eligible[sub]] = True
    return chosen
