"""Model names -> constructors. A plain dict: add a model by adding an entry here (no import-time magic)."""

from __future__ import annotations

from typing import Callable

from labeler.errors import ModelError
from labeler.models.base import Detector
from labeler.models.geometric import GeometricDetector


def _bev(**options) -> Detector:
    from labeler.models.bev import BevDetector  # torch is imported only when the model is used

    return BevDetector(**options)

from labeler.models.mmdet3d_backend import MMDet3DDetector

# name -> constructor. A spec is "<name>" or "<name>:<argument>" (e.g. "mmdet3d:<config name or path>").
MODELS: dict[str, Callable[..., Detector]] = {
    "geometric": GeometricDetector,
    "bev": _bev,                  # embedded BEV detector; argument or --checkpoint: weights file (default models/bev_small.pt)
    "mmdet3d": MMDet3DDetector,   # argument: an mmdet3d config name (shipped in the wheel) or path
}
# options the pipeline passes to every model (config `model.*`); each model takes only those listed for it in
# MODEL_OPTIONS (None values are never passed). Any other keyword goes to the constructor unchanged.
PIPELINE_OPTIONS = frozenset({"checkpoint", "trusted", "device", "score_threshold", "weights", "tta", "threads", "fit_points"})
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "geometric": (),
    "bev": ("weights", "device", "score_threshold", "tta", "threads", "fit_points"),
    "mmdet3d": ("checkpoint", "trusted", "device", "score_threshold"),
}


def load_model(spec: str, **options) -> Detector:
    """Build the detector registered as ``spec``; ``options`` go to its constructor.

    Raises:
        ModelError: ``spec`` is not a known model name (the message lists the known names).
    """
    name, sep, arg = spec.partition(":")
    try:
        factory = MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ModelError(f"unknown model {spec!r}; known models: {known} (see labeler.models.registry.MODELS)") from None
    if name == "bev" and options.get("checkpoint") and not options.get("weights"):
        options["weights"] = options["checkpoint"]
    allowed = MODEL_OPTIONS.get(name, ())
    options = {k: v for k, v in options.items() if k not in PIPELINE_OPTIONS or (k in allowed and v is not None)}
    if name == "mmdet3d":
        if not arg:
            raise ModelError(f"model spec {spec!r}: expected 'mmdet3d:<config name or path>'")
        return factory(arg, **options)
    if sep:
        options.setdefault("weights", arg)
    return factory(**options)
