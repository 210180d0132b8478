"""The detector interface every model implements (geometric today, learned BEV models later).

A detector turns LiDAR frames into 3D boxes in each frame's LiDAR frame (see :mod:`labeler.geometry.boxes` for
the box convention). It is loaded once per worker process and called with batches of frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from labeler.logs.frame import Frame


@dataclass
class Detections:
    """The boxes a detector found in one frame.

    Attributes:
        boxes: (N, 7) float64 ``[x, y, z, l, w, h, yaw]``, LiDAR frame, z at the geometric centre.
        categories: (N,) object array of class names, each one of the detector's ``classes``.
        scores: (N,) float64 confidences in [0, 1].
        num_points: (N,) int64, LiDAR points of the frame inside each box.
        uncertainty: (N,) float64 in [0, 1] from test-time augmentation (how much augmented views disagree),
            or None when the detector does not estimate it.
    """

    boxes: np.ndarray
    categories: np.ndarray
    scores: np.ndarray
    num_points: np.ndarray
    uncertainty: np.ndarray | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 7)
        self.categories = np.asarray(self.categories, dtype=object).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.num_points = np.asarray(self.num_points, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if self.uncertainty is not None:
            self.uncertainty = np.asarray(self.uncertainty, dtype=np.float64).reshape(-1)
            if len(self.uncertainty) != n:
                raise ValueError(f"Detections: uncertainty has {len(self.uncertainty)} values for {n} boxes")
        if not (len(self.categories) == len(self.scores) == len(self.num_points) == n):
            raise ValueError(
                f"Detections fields disagree in length: boxes {n}, categories {len(self.categories)}, "
                f"scores {len(self.scores)}, num_points {len(self.num_points)}"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 7)), np.zeros(0, dtype=object), np.zeros(0), np.zeros(0, dtype=np.int64))

    def select(self, mask) -> "Detections":
        """The detections where ``mask`` (bool array or index array) holds."""
        unc = None if self.uncertainty is None else self.uncertainty[mask]
        return Detections(self.boxes[mask], self.categories[mask], self.scores[mask], self.num_points[mask], unc)


@runtime_checkable
class Detector(Protocol):
    """What the pipeline needs from a model.

    Attributes:
        name: registry name, e.g. ``"geometric"``.
        version: exact version recorded with every prediction, e.g. ``"geometric-0.1.0+1a2b3c4d"``;
            it changes whenever the weights or the configuration change.
        classes: the class names it predicts (a subset of :data:`labeler.classes.CLASSES`).
        device: where it runs, e.g. ``"cpu"`` or ``"cuda:0"``.
    """

    name: str
    version: str
    classes: tuple[str, ...]
    device: str

    def predict(self, frames: list[Frame]) -> list[Detections]:
        """Detect objects in a batch of frames; returns one :class:`Detections` per frame, in order."""
        ...
