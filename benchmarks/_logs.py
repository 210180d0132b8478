"""Simulated inputs shared by the benchmark scripts (cached under /tmp so repeated runs skip simulation)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CACHE = "/tmp/labeler-bench"


def cached_logs(num_logs: int, duration_s: float, seed: int = 101) -> list[str]:
    """``num_logs`` simulated logs of ``duration_s`` seconds (simulated once, then reused)."""
    from labeler.simulate import SimConfig, simulate_logs

    root = f"{CACHE}/logs-{duration_s:g}s"
    return simulate_logs(root, num_logs=num_logs, seed=seed, cfg=SimConfig(duration_s=duration_s), workers=2,
                         progress=False)[:num_logs]


def input_folder(paths: list[str], name: str) -> str:
    """A folder holding exactly ``paths`` (hard-linked copies, cheap)."""
    d = Path(CACHE) / "inputs" / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for p in paths:
        shutil.copytree(p, d / Path(p).name, copy_function=os.link)
    return str(d)
