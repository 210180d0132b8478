"""Tests of labeler.refine. :func:`tiny_log` simulates one short log once per test process (about 6 s)."""

from __future__ import annotations

import os
import tempfile

_CACHE: dict[str, str] = {}


def tiny_log() -> str:
    """A 1 s simulated log (10 frames, front camera only, forced rare_class and odd_size corner cases)."""
    if "log" not in _CACHE:
        from labeler.simulate import SimConfig, simulate_log

        root = tempfile.mkdtemp(prefix="labeler-refine-tests-")
        cfg = SimConfig(duration_s=1.0, azimuth_res_deg=0.4, cameras=("front",), image_width=160, image_height=90,
                        force_corner_cases=("rare_class", "odd_size"))
        _CACHE["log"] = simulate_log(root, "tiny-0", 7, cfg, threads=1)
    return _CACHE["log"]
