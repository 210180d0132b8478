"""Deterministic road-test log simulator: ray-cast LiDAR and cameras over a procedural street with traffic.

It writes native logs (:mod:`labeler.logs.native`) with ground truth and injected corner cases and is the
project's embedded default input. Modules: :mod:`~labeler.simulate.scene` (world, actors, ego, corner cases),
:mod:`~labeler.simulate.lidar`, :mod:`~labeler.simulate.camera`, :mod:`~labeler.simulate.run` (public API).

What a simulated log holds:

* LiDAR sweeps at ``rate_hz`` (default 10 Hz), (N, 4) float32 ``[x, y, z, intensity]`` in the LiDAR frame;
  ``ego_from_lidar`` is a pure translation (0, 0, ``lidar_height_m``), so the road is at z = -1.84 by default.
  ~30-36k points per sweep with the defaults.
* Camera JPEGs (default ``front`` 70 deg and ``back`` 90 deg, 640 x 360) taken 1-9 ms after the sweep.
* ``world_from_ego`` per sweep (flat world, no pitch/roll), ground truth boxes in the LiDAR frame (geometric
  centre, track ids ``trk-NNNN`` stable within a log, ``num_lidar_pts`` = points inside the box) for actors
  whose centre is within ``max_range_m``; classes from :data:`labeler.classes.CLASSES` plus ``animal``.
* ``corner_cases.parquet``: one row per affected frame with ``kind`` in :data:`CORNER_KINDS` and a JSON ``detail``:
  ``rare_class`` / ``odd_size`` (with ``track_id``; detail: category, l, w, h), ``lidar_sector_dropout``
  (``start_deg``, ``width_deg``: CCW azimuth sector in the LiDAR frame with no returns), ``camera_black`` /
  ``camera_overexposed`` (``camera``), ``stationary`` (``stopped_s``; the ego stands >= 4 s at a red light).

Batches (:func:`simulate_logs`) are named ``sim-<seed:04d>-<i:03d>``; log ``i`` uses seed
:func:`log_seed` (seed, i) and always includes the corner-case kinds :func:`batch_kinds` (i).
"""

from labeler.simulate.run import SimConfig, batch_kinds, log_name, log_seed, scenario_for, simulate_log, simulate_logs
from labeler.simulate.scene import CORNER_KINDS

__all__ = ["SimConfig", "simulate_log", "simulate_logs", "scenario_for", "log_name", "log_seed", "batch_kinds", "CORNER_KINDS"]
