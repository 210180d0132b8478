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
