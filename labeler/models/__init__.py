"""3D detectors behind one interface (:class:`Detector`), looked up by name in :data:`registry.MODELS`."""

from labeler.models.base import Detections, Detector
from labeler.models.registry import MODELS, load_model

__all__ = ["Detections", "Detector", "MODELS", "load_model"]
