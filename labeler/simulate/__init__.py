"""Deterministic road-test log simulator: ray-cast LiDAR and cameras over a procedural street with traffic.

It writes native logs (:mod:`labeler.logs.native`) with ground truth and injected corner cases; it is the
project's embedded default input. Modules: :mod:`~labeler.simulate.scene` (world, actors, ego, corner cases),
:mod:`~labeler.simulate.lidar`, :mod:`~labeler.simulate.camera`, :mod:`~labeler.simulate.run` (public API).
"""

from labeler.simulate.run import SimConfig, batch_kinds, log_name, log_seed, scenario_for, simulate_log, simulate_logs
from labeler.simulate.scene import CORNER_KINDS

__all__ = ["SimConfig", "simulate_log", "simulate_logs", "scenario_for", "log_name", "log_seed", "batch_kinds", "CORNER_KINDS"]
