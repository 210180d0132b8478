"""The BEV perception model: a small CenterPoint-style LiDAR detector we train on simulated logs and ship.

Modules, one job each: :mod:`~labeler.models.bev.raster` (points -> BEV features), :mod:`~labeler.models.bev.network`
(config, backbone, neck, head), :mod:`~labeler.models.bev.targets` (GT -> heatmap / regression targets, loss),
:mod:`~labeler.models.bev.decode` (peaks -> boxes), :mod:`~labeler.models.bev.detector` (the Detector, TTA),
:mod:`~labeler.models.bev.data` (samples from native logs), :mod:`~labeler.models.bev.train` (training + evaluation).
The shipped model and its measured accuracy: ``models/bev_small.md``.
"""

from labeler.models.bev.detector import BevDetector
from labeler.models.bev.network import BevConfig

__all__ = ["BevDetector", "BevConfig"]
