"""What every log reader provides: a :class:`LogSource` that lists frames and loads one at a time.

Readers live in :mod:`labeler.logs.registry` (``READERS``, a plain dict of format name -> opener).
A reader raises :class:`labeler.errors.InputError` naming file, frame and cause for bad input.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from labeler.geometry.camera import CameraCalib
from labeler.logs.frame import Frame


@runtime_checkable
class LogSource(Protocol):
    """One road-test log (or one sequence / folder of frames) opened for reading.

    Attributes:
        path: where the log lives (local path or fsspec URL).
        log_id: stable id of the log.
        format: reader name, a key of ``labeler.logs.registry.READERS``.
        timestamps_ns: (F,) int64 LiDAR sweep times, sorted ascending.
        world_from_ego: (F, 4, 4) ego poses (identity when the format has none).
        ego_from_lidar: (4, 4) LiDAR mounting.
        cameras: camera name -> calibration.
    """

    path: str
    log_id: str
    format: str
    timestamps_ns: np.ndarray
    world_from_ego: np.ndarray
    ego_from_lidar: np.ndarray
    cameras: dict[str, CameraCalib]

    def __len__(self) -> int: ...

    def load_frame(self, i: int, with_images: bool = True) -> Frame:
        """Load frame ``i`` (points, images, ground truth when present). Raises InputError on bad data."""
        ...

    def lidar_file(self, i: int) -> str:
        """Path/URL of frame ``i``'s point data (for quarantine rows)."""
        ...
