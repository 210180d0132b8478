"""Model names -> constructors. A plain dict: add a model by adding an entry here (no import-time magic)."""

from __future__ import annotations

from typing import Callable

from labeler.errors import ModelError
from labeler.models.base import Detector
from labeler.models.geometric import GeometricDetector

MODELS: dict[str, Callable[..., Detector]] = {
    "geometric": GeometricDetector,
}


def load_model(spec: str, **options) -> Detector:
    """Build the detector registered as ``spec``; ``options`` go to its constructor.

    Raises:
        ModelError: ``spec`` is not a known model name (the message lists the known names).
    """
    try:
        factory = MODELS[spec]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ModelError(f"unknown model {spec!r}; known models: {known} (see labeler.models.registry.MODELS)") from None
    return factory(**options)
