"""LiDAR 3D detectors of OpenMMLab's mmdetection3d (PointPillars, CenterPoint, SECOND, ...) behind labeler's
:class:`~labeler.models.base.Detector` interface.

Install the stack with ``bash .ci/install-mmdet3d`` (see docs/mmdet3d.md). This module imports without it; building
a detector without it raises :class:`~labeler.errors.ModelError` with that hint.

Conventions converted here (checked on real nuScenes and KITTI frames in tests/models/test_mmdet3d_backend.py):

* **Points**: our ``Frame.points`` are (N, 4) ``x, y, z, intensity`` with intensity in [0, 1]. The config's first
  test transform (``LoadPointsFromFile``) says how many columns the model reads (``load_dim``, ``use_dim``): we build
  the array a file of that dataset would hold: intensity x255 for nuScenes/Lyft configs (their files store 0-255),
  x1 otherwise (KITTI stores reflectance 0-1), and zeros for the extra columns (nuScenes' 5th column is the sweep
  time lag, 0 for the key frame). The rest of the config's test pipeline runs unchanged; without sweeps,
  ``LoadPointsFromMultiSweeps`` pads with copies of the key frame, exactly as mmdet3d's own ``inference_detector``
  does on a single ``.bin`` file.
* **Boxes**: mmdet3d's ``LiDARInstance3DBoxes`` are ``[x, y, z_bottom, dx, dy, dz, yaw (, vx, vy)]`` with z at the
  BOTTOM centre; ours have z at the geometric centre: ``z = z_bottom + dz / 2``. ``dx`` runs along the heading and
  yaw is counter-clockwise from +x in both (mmdet3d >= 1.0 coordinate system), so only z moves; yaw is wrapped to
  [-pi, pi). Velocities are dropped.
* **Classes**: model class names map to :data:`labeler.classes.CLASSES` through :data:`DEFAULT_CLASS_MAP`
  (case-insensitive): KITTI ``Car/Pedestrian/Cyclist`` -> car/pedestrian/cyclist; nuScenes ``car, truck, bus,
  pedestrian, traffic_cone`` keep their name, ``bicycle`` and ``motorcycle`` -> cyclist. Every other class
  (nuScenes ``construction_vehicle``, ``trailer``, ``barrier``, ...) is DROPPED, so that a detector only ever emits
  labeler classes; pass ``class_map={"trailer": "truck", ...}`` to keep one as a labeler class, or
  ``{"car": None}`` to drop one.

Checkpoints are read with :func:`labeler.models.checkpoints.load_checkpoint` (weights-only unless ``trusted``), so
mmengine's own unpickling is never used.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from labeler.classes import CLASSES
from labeler.errors import ModelError
from labeler.geometry.boxes import count_points_in_boxes, wrap_angle
from labeler.logs.frame import Frame
from labeler.models.base import Detections
from labeler.models.checkpoints import file_sha256, load_checkpoint, load_weights, state_dict_of

INSTALL_HINT = "install it with `bash .ci/install-mmdet3d` (see docs/mmdet3d.md)"

# model class name (lower case) -> labeler class; names not listed are dropped
DEFAULT_CLASS_MAP: dict[str, str | None] = {
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "pedestrian": "pedestrian",
    "cyclist": "cyclist",
    "bicycle": "cyclist",
    "motorcycle": "cyclist",
    "traffic_cone": "traffic_cone",
}

# dataset types whose point files store intensity 0-255 (others: 0-1, like KITTI)
INTENSITY_255_DATASETS = ("NuScenesDataset", "LyftDataset")

# seed of the random initialisation used without a checkpoint (so "random-init" detectors are reproducible)
RANDOM_INIT_SEED = 0


def mmdet3d_available() -> bool:
    """True when ``mmdet3d`` and mmcv's compiled ops import."""
    try:
        import mmcv.ops  # noqa: F401
        import mmdet3d  # noqa: F401
    except Exception:
        return False
    return True


def _require_mmdet3d():
    try:
        import mmcv.ops  # noqa: F401
        import mmdet3d
    except Exception as e:  # ImportError, or mmcv built without ops (mmcv._ext missing)
        raise ModelError(f"mmdetection3d is not usable ({type(e).__name__}: {e}); {INSTALL_HINT}") from e
    return mmdet3d


# ---- boxes -----------------------------------------------------------------------------------------------------


def mmdet3d_to_boxes(tensor) -> np.ndarray:
    """mmdet3d LiDAR boxes ``(N, >=7) [x, y, z_bottom, dx, dy, dz, yaw, ...]`` -> ours ``(N, 7)``, z at the
    geometric centre, yaw wrapped to [-pi, pi)."""
    t = np.asarray(tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor, dtype=np.float64)
    t = t.reshape(-1, t.shape[-1] if t.size else 7)
    if t.shape[1] < 7:
        raise ValueError(f"mmdet3d boxes need at least 7 columns, got {t.shape}")
    b = t[:, :7].copy()
    b[:, 2] += b[:, 5] / 2.0
    b[:, 6] = wrap_angle(b[:, 6])
    return b


def boxes_to_mmdet3d(boxes) -> np.ndarray:
    """Ours ``(N, 7)`` (z at the geometric centre) -> mmdet3d's LiDAR box tensor layout (z at the bottom centre)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7).copy()
    b[:, 2] -= b[:, 5] / 2.0
    return b


# ---- configs ---------------------------------------------------------------------------------------------------


def configs_dir() -> Path:
    """The config folder shipped inside the mmdet3d wheel (``mmdet3d/.mim/configs``)."""
    mmdet3d = _require_mmdet3d()
    return Path(mmdet3d.__file__).parent / ".mim" / "configs"


def resolve_config(config: str | os.PathLike) -> Path:
    """A config file path, or the name of a config shipped with mmdet3d (``"pointpillars_hv_secfpn_8xb6-160e_kitti-
    3d-3class"``, with or without ``.py`` or its folder, e.g. ``"pointpillars/<name>"``).

    Raises:
        ModelError: when neither exists, listing the closest shipped names.
    """
    p = Path(config).expanduser()
    if p.is_file():
        return p.resolve()
    name = str(config)
    if name.startswith("mmdet3d::"):
        name = name[len("mmdet3d::"):]
    root = configs_dir()
    rel = name if name.endswith(".py") else name + ".py"
    direct = root / rel
    if direct.is_file():
        return direct
    stem = Path(rel).stem
    hits = sorted(q for q in root.rglob(f"{stem}.py") if "_base_" not in q.parts)
    if hits:
        return hits[0]
    known = sorted({q.stem for q in root.rglob("*.py") if "_base_" not in q.parts})
    close = difflib.get_close_matches(stem, known, n=5, cutoff=0.4)
    hint = f"; closest shipped configs: {', '.join(close)}" if close else ""
    raise ModelError(f"mmdet3d config {config!r}: no such file and no shipped config of that name under {root}{hint}")


def _config_stem(config: str | os.PathLike) -> str:
    return Path(str(config)).name.removesuffix(".py")


# ---- the detector ----------------------------------------------------------------------------------------------


class MMDet3DDetector:
    """An mmdetection3d LiDAR detector (any config whose test pipeline starts with ``LoadPointsFromFile``).

    Args:
        config: config file path, or the name of a config shipped in the mmdet3d wheel (see :func:`resolve_config`).
        checkpoint: ``.pth`` weights trained with that config; None = random initialisation (seeded, for tests
            and timing only: it detects nothing meaningful).
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (needs CUDA and an mmcv built with CUDA ops).
        trusted: unpickle the checkpoint fully (OpenMMLab checkpoints with numpy scalars in their meta need it).
            Only for files you trust. Default: weights-only loading.
        score_threshold: detections scoring lower are dropped (applied after the model's own ``test_cfg``
            threshold; lower that one with ``cfg_options`` to see more boxes).
        class_map: overrides of :data:`DEFAULT_CLASS_MAP`, model class name -> labeler class or None (drop).
        cfg_options: config overrides, mmengine style, e.g. ``{"model.test_cfg.score_thr": 0}``.
        intensity_scale: multiplier from our 0-1 intensity to the model's; None = 255 for nuScenes/Lyft configs,
            else 1.

    Implements :class:`labeler.models.base.Detector`. The model is built once; :meth:`predict` runs a whole batch
    of frames through one ``test_step``.
    """

    def __init__(
        self,
        config: str,
        checkpoint: str | None = None,
        device: str = "cpu",
        trusted: bool = False,
        score_threshold: float = 0.1,
        class_map: dict | None = None,
        cfg_options: dict | None = None,
        intensity_scale: float | None = None,
    ):
        mmdet3d = _require_mmdet3d()
        import torch
        from mmengine.config import Config
        from mmengine.dataset import Compose

        from mmdet3d.apis import init_model
        from mmdet3d.structures import get_box_type

        self.config_file = resolve_config(config)
        self.name = f"mmdet3d:{_config_stem(config)}"
        self.device = _check_device(device)
        self.score_threshold = float(score_threshold)
        self.checkpoint = str(checkpoint) if checkpoint else None

        try:
            cfg = Config.fromfile(str(self.config_file))
            if cfg_options:
                cfg.merge_from_dict(dict(cfg_options))
        except Exception as e:
            raise ModelError(f"{self.config_file}: cannot read the mmdet3d config: {type(e).__name__}: {e}") from e
        self.cfg = cfg

        # the checkpoint first: a bad file fails before the (slow) model build
        ckpt, ckpt_sha = None, None
        if self.checkpoint:
            ckpt = load_checkpoint(self.checkpoint, trusted=trusted)
            ckpt_sha = file_sha256(self.checkpoint)
            state_dict = state_dict_of(ckpt, self.checkpoint)

        # seed the build too: most layers draw their initial weights when constructed, not in init_weights()
        with warnings.catch_warnings(), _quiet_mmengine(), torch.random.fork_rng(devices=[]):
            warnings.filterwarnings("ignore", message=".*using CPU device.*")
            torch.manual_seed(RANDOM_INIT_SEED)
            try:
                model = init_model(cfg, checkpoint=None, device=self.device)
            except Exception as e:
                raise ModelError(f"{self.config_file}: cannot build the model: {type(e).__name__}: {e}") from e
            if ckpt is None:
                try:
                    model.init_weights()
                except Exception as e:
                    raise ModelError(
                        f"{self.config_file}: random initialisation failed ({type(e).__name__}: {e}); if it tried to "
                        "download pretrained backbone weights, pass cfg_options={'model.backbone.init_cfg': None}"
                    ) from e
        if ckpt is not None:
            load_weights(model, state_dict, file=self.checkpoint, strict=True)
        model.to(self.device)
        model.eval()
        self.model = model

        # class names: the checkpoint's meta wins over the config
        self.model_classes = tuple(_model_classes(cfg, ckpt))
        if not self.model_classes:
            raise ModelError(f"{self.config_file}: the config names no classes (class_names / metainfo.classes)")
        self._label_to_class = _label_map(self.model_classes, class_map)
        self.classes = tuple(c for c in CLASSES if c in set(self._label_to_class) - {None})

        # the test pipeline, with the file loader replaced by one that takes our array
        ds = cfg.test_dataloader.dataset
        box_type = ds.get("box_type_3d", "LiDAR")
        self._box_type_3d, self._box_mode_3d = get_box_type(box_type)
        if str(box_type).lower() != "lidar":
            raise ModelError(f"{self.config_file}: box_type_3d {box_type!r}; only LiDAR-frame detectors are supported")
        pipeline = [dict(t) for t in (cfg.get("test_pipeline") or ds.pipeline)]
        if not pipeline or pipeline[0].get("type") != "LoadPointsFromFile":
            first = pipeline[0].get("type") if pipeline else None
            raise ModelError(
                f"{self.config_file}: the test pipeline starts with {first!r}, not LoadPointsFromFile: only LiDAR-only "
                "configs are supported"
            )
        cams = [t["type"] for t in pipeline if "Image" in str(t.get("type"))]
        if cams:
            raise ModelError(f"{self.config_file}: camera inputs ({', '.join(cams)}) are not supported; use a LiDAR-only config")
        loader = dict(pipeline[0])
        self.load_dim = int(loader.get("load_dim", 6))
        use_dim = loader.get("use_dim", [0, 1, 2])
        self.use_dim = list(range(use_dim)) if isinstance(use_dim, int) else [int(i) for i in use_dim]
        self.dataset_type = str(ds.get("type", ""))
        self.intensity_scale = float(
            intensity_scale if intensity_scale is not None else (255.0 if self.dataset_type in INTENSITY_255_DATASETS else 1.0)
        )
        pipeline[0] = dict(loader, type="LoadPointsFromDict")
        self._pipeline = Compose(pipeline)

        ident = json.dumps(
            {
                "cfg": _cfg_fingerprint(cfg),
                "score_threshold": self.score_threshold,
                "classes": self._label_to_class,
                "intensity_scale": self.intensity_scale,
            },
            sort_keys=True,
            default=str,
        )
        weights = f"ckpt-{ckpt_sha[:12]}" if ckpt_sha else "random-init"
        self.version = (
            f"mmdet3d-{mmdet3d.__version__}:{_config_stem(config)}:{weights}:cfg-{hashlib.sha256(ident.encode()).hexdigest()[:8]}"
        )

    # -- Detector interface --

    def predict(self, frames: list[Frame]) -> list[Detections]:
        """Detect objects in a batch of frames (one ``test_step`` for the whole batch)."""
        import torch
        from mmengine.dataset import pseudo_collate

        out: list[Detections | None] = [None] * len(frames)
        batch: list[tuple[int, dict]] = []
        for i, frame in enumerate(frames):
            pts = self.model_points(frame.points)
            if len(pts) == 0:
                out[i] = Detections.empty()
                continue
            data = self._pipeline(
                dict(
                    points=pts,
                    timestamp=frame.timestamp_ns / 1e9,
                    axis_align_matrix=np.eye(4),
                    box_type_3d=self._box_type_3d,
                    box_mode_3d=self._box_mode_3d,
                )
            )
            if len(data["inputs"]["points"]) == 0:  # every point outside the model's range
                out[i] = Detections.empty()
                continue
            batch.append((i, data))
        if batch:
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="To copy construct from a tensor")
                    results = self.model.test_step(pseudo_collate([d for _, d in batch]))
            except RuntimeError as e:
                hint = ""
                if "cuda" in str(e).lower() or "gpu" in str(e).lower():
                    hint = " (on CUDA, mmcv must be built with CUDA ops: FORCE_CUDA=1)"
                raise ModelError(f"{self.name}: inference failed: {e}{hint}") from e
            for (i, _), res in zip(batch, results):
                out[i] = self._to_detections(res, frames[i].points)
        return out  # type: ignore[return-value]

    # -- conversions --

    def model_points(self, points: np.ndarray) -> np.ndarray:
        """Our (N, 4) ``x, y, z, intensity 0-1`` -> the (N, len(use_dim)) float32 array the model reads."""
        p = np.asarray(points, dtype=np.float32)
        if p.ndim != 2 or p.shape[1] < 3:
            raise ValueError(f"points must have shape (N, >=3), got {p.shape}")
        p = p[np.isfinite(p[:, :3]).all(axis=1)]
        raw = np.zeros((len(p), max(self.load_dim, 3)), dtype=np.float32)
        raw[:, :3] = p[:, :3]
        if self.load_dim > 3 and p.shape[1] > 3:
            raw[:, 3] = np.nan_to_num(p[:, 3]) * self.intensity_scale
        return np.ascontiguousarray(raw[:, self.use_dim])

    def _to_detections(self, result, frame_points: np.ndarray) -> Detections:
        pred = result.pred_instances_3d
        if len(pred.bboxes_3d) == 0:
            return Detections.empty()
        boxes = mmdet3d_to_boxes(pred.bboxes_3d.tensor)
        scores = np.clip(pred.scores_3d.detach().cpu().numpy().astype(np.float64), 0.0, 1.0)
        labels = pred.labels_3d.detach().cpu().numpy().astype(np.int64)
        names = np.array(
            [self._label_to_class[k] if 0 <= k < len(self._label_to_class) else None for k in labels], dtype=object
        )
        keep = np.array([n is not None for n in names], dtype=bool) & (scores >= self.score_threshold)
        keep &= np.isfinite(boxes).all(axis=1)
        boxes, names, scores = boxes[keep], names[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")
        boxes, names, scores = boxes[order], names[order], scores[order]
        n_pts = count_points_in_boxes(np.asarray(frame_points)[:, :3], boxes) if len(boxes) else np.zeros(0, np.int64)
        return Detections(boxes, names, scores, n_pts)

    def __repr__(self) -> str:
        return f"MMDet3DDetector({self.version!r}, device={self.device!r})"


def create(spec: str, checkpoint: str | None = None, trusted: bool = False, device: str = "cpu", **kwargs: Any) -> MMDet3DDetector:
    """Build from a registry spec ``"mmdet3d:<config name or path>"`` (everything after the first ``:``)."""
    prefix, sep, config = spec.partition(":")
    if prefix != "mmdet3d" or not sep or not config:
        raise ModelError(f"model spec {spec!r}: expected 'mmdet3d:<config name or path>'")
    return MMDet3DDetector(config, checkpoint=checkpoint, device=device, trusted=trusted, **kwargs)


# ---- helpers ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_mmengine(level: int = logging.WARNING):
    """Hide mmengine's INFO logs (init_weights prints one line per parameter) for the duration."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def _check_device(device: str) -> str:
    import torch

    d = str(device or "cpu").strip().lower()
    if d == "cpu":
        return "cpu"
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {device!r} requested but CUDA is not available (torch {torch.__version__}, "
                f"{'no GPU found' if torch.version.cuda else 'a CPU-only build'}); use device='cpu'"
            )
        try:
            from mmcv.ops import get_compiling_cuda_version

            cuda_ops = get_compiling_cuda_version()
        except Exception:
            cuda_ops = "not available"
        if cuda_ops in ("not available", "", None):
            raise ModelError(
                f"device {device!r} requested but the installed mmcv has CPU ops only; build mmcv with FORCE_CUDA=1 "
                "on a CUDA machine (see docs/mmdet3d.md) or use device='cpu'"
            )
        return "cuda:0" if d == "cuda" else d
    raise ModelError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def _model_classes(cfg, ckpt) -> list[str]:
    meta = ckpt.get("meta", {}) if isinstance(ckpt, dict) else {}
    if isinstance(meta, dict):
        dm = meta.get("dataset_meta")
        if isinstance(dm, dict) and dm.get("classes"):
            return [str(c) for c in dm["classes"]]
        if meta.get("CLASSES"):
            return [str(c) for c in meta["CLASSES"]]
    names = cfg.get("class_names")
    if not names:
        md = cfg.test_dataloader.dataset.get("metainfo") or {}
        names = md.get("classes")
    return [str(c) for c in (names or [])]


def _label_map(model_classes, class_map: dict | None) -> list[str | None]:
    """labeler class (or None = drop) for each model label index."""
    overrides = {str(k).lower(): v for k, v in (class_map or {}).items()}
    for k, v in overrides.items():
        if v is not None and v not in CLASSES:
            raise ModelError(f"class_map {k!r} -> {v!r}: not a labeler class (one of {', '.join(CLASSES)}, or None to drop)")
    out = []
    for name in model_classes:
        key = name.lower()
        out.append(overrides[key] if key in overrides else DEFAULT_CLASS_MAP.get(key))
    return out


def _cfg_fingerprint(cfg) -> str:
    try:
        d = cfg.to_dict()
    except Exception:
        d = dict(cfg)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()
