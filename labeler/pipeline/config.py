"""Typed pipeline config with documented defaults, loaded from a YAML file (e.g. ``pipelines/nightly.yaml``).

One layer only: the YAML overrides these defaults; unknown keys are an error that names the key and file.
Strings may use ``${state}`` (the state dir, default ``./state`` or ``$LABELER_STATE``) and ``${night}``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from labeler.errors import ConfigError
from labeler.refine.propagate import PropagateCfg
from labeler.refine.signals import SignalCfg
from labeler.refine.smoothing import RefineCfg


@dataclass(frozen=True)
class SimulateCfg:
    """Embedded default input: when ``enabled`` and the input folder holds no logs, simulate them first."""

    enabled: bool = True
    num_logs: int = 4          # logs generated
    duration_s: float = 20.0   # seconds per log (10 Hz LiDAR)
    seed: int = 0              # base seed; the same seed always gives the same logs


@dataclass(frozen=True)
class InputCfg:
    logs: str = "${state}/logs"   # folder of native logs (or one log), any fsspec URL
    format: str = "auto"          # reader name from labeler.logs.registry.READERS, or auto-detect
    chunk_frames: int = 50        # frames per Dask task: memory is bounded by a chunk, not by the night


@dataclass(frozen=True, eq=False)
class FilterCfg:
    """Frame filters. Each dropped frame gets a reason (the first filter that fails)."""

    min_points: int = 5000                # LiDAR health: fewer points = broken sweep
    max_nonfinite_fraction: float = 0.0   # any NaN/inf beyond this fraction = broken sweep
    sector_bins: int = 36                 # azimuth bins of 10 deg for the empty-sector check
    max_empty_sector_deg: float = 30.0    # a contiguous empty azimuth gap wider than this = sector dropout
    sector_min_range_m: float = 1.0       # returns closer than this do not fill a sector (sensor housing); a vehicle
                                          # 2 m away does: an occluded sector is not a dead one (3 m flagged the
                                          # ego waiting beside a truck in held-out log 001 on 20 frames)
    camera_black_mean: float = 15.0       # mean brightness (0-255) below: black camera frame
    camera_overexposed_mean: float = 240.0  # above: over-exposed camera frame
    max_camera_skew_ms: float = 50.0      # |camera time - LiDAR time| above: out of sync
    keyframe_hz: float = 2.0              # keep at most this many frames per second (10 Hz logs -> every 5th)
    stationary_speed_mps: float = 0.5     # ego slower than this counts as stationary ...
    stationary_keep_every_s: float = 5.0  # ... and then one frame per this many seconds is kept
    camera_blur_var: float = 200.0        # variance of the Laplacian (grey image at 320 px wide) below: blurred
                                          # (measured: sharp real frames 303-2015, sharp simulated 531+; Gaussian
                                          # blur of 2 px at 640 px wide gives <= 159, 4 px <= 17)
    drop_broken_camera_frames: bool = False  # False: a bad camera is a corner-case reason, not a drop
    night_brightness: float = 60.0        # mean camera brightness below: tag "night", else "day"
    speed_bins_mps: tuple = (0.5, 5.0, 15.0)  # tags speed:stopped | slow | medium | fast
    model_tag_score: float = 0.5          # model-derived tags (kept frames, after the detector) count boxes scoring
                                          # at least this: obj:<class> per class present, ...
    crowded_min_objects: int = 20         # ... "crowded" with at least this many boxes, ...
    vru_near_m: float = 10.0              # ... "vru_near" with a pedestrian or cyclist closer than this (BEV, m)
    drop_rules: dict = field(default_factory=dict)  # name -> rule; a matching frame is dropped as "rule:<name>"
    flag_rules: dict = field(default_factory=dict)  # name -> rule; a matching kept frame gets reason "rule:<name>"
                                                    # (flag rules see the model-derived tags too; drop rules run
                                                    # before the detector, so they cannot)


@dataclass(frozen=True)
class ModelCfg:
    name: str = "bev"             # a spec from labeler.models.registry.MODELS: "bev" (embedded, trained on simulated
                                  # logs), "geometric" (no training, works on any LiDAR) or "mmdet3d:<config>"
    checkpoint: str | None = None # weights file for models that take one (mmdet3d)
    trusted: bool = False         # allow full pickle loading of `checkpoint` (only for files you trust)
    device: str = "cpu"           # cpu | cuda
    threads: int = 1              # torch threads per Dask worker (1 avoids oversubscribing cores shared by workers)
    tta: bool = False             # test-time augmentation (models that support it, e.g. bev): per-box uncertainty
    fit_points: bool = False      # bev: snap vehicle boxes onto their points' outline (geometric 2nd stage, ~2x CPU)
    batch_frames: int = 8
    score_threshold: float = 0.1  # boxes below are not pre-labels


@dataclass(frozen=True)
class ScoringCfg:
    """Frame confidence and review priority from per-box signals."""

    low_score: float = 0.45          # a box under this score is uncertain
    few_points: int = 15             # a box with fewer LiDAR points is a likely false positive
    tta_disagreement: float = 0.3    # a box whose TTA uncertainty exceeds this is uncertain
    rare_size_sigma: float = 3.0     # size this many spreads from its class's typical size = unusual
    unexplained_cluster_points: int = 40  # an above-ground cluster with this many points and no box = likely miss


@dataclass(frozen=True)
class SelectionCfg:
    budget_fraction: float = 0.2     # at most this fraction of kept frames go to review
    max_frames: int = 500            # and at most this many (frames-per-night cap)
    min_gap_s: float = 1.0           # temporal diversity: selected frames of a log at least this far apart
    min_priority: float = 0.05       # frames below are never sent (confident enough)
    strategy: str = "diverse"        # diverse: labeler.refine.signals.select_diverse over the uncertainty signals
                                     # (one frame per event); priority: plain priority order (select_for_review)
    accept_score: float = 0.3        # labels of auto-accepted frames (accepted_3d) need this score ...
    accept_score_by_class: dict = field(default_factory=dict)  # ... or this per-class one (class -> score)
    review_min_score: float = 0.3    # pre-annotations shown to reviewers need this score; lower than the accept
                                     # scores on purpose: a right box costs a reviewer ~2 s to verify, a wrong one ~3 s
                                     # to delete, a missing one ~90 s to draw (labeler.review.effort.CostModel)
    spread_s: float = 0.0            # diverse: > 0 also spreads picks over each log, for review propagation (a
                                     # reviewed frame fixes its neighbours; labeler.refine.signals.select_diverse)

    def accept_threshold(self, category: str) -> float:
        return float(self.accept_score_by_class.get(str(category), self.accept_score))


@dataclass(frozen=True)
class RenderCfg:
    x_min_m: float = -40.0
    x_max_m: float = 60.0
    y_min_m: float = -40.0
    y_max_m: float = 40.0
    m_per_px: float = 0.1           # 1000 x 800 px BEV
    color_by: str = "height"        # height | intensity


@dataclass(frozen=True)
class StudioCfg:
    url: str | None = None            # existing server; else $LABEL_STUDIO_URL; else start a local one
    project_title: str = "labeler review"
    start_local: bool = True          # start `labeler studio up` automatically when no URL is given
    port: int = 8080
    assets: str = "auto"              # how the server gets review images: local (local-files storage under the state
                                      # dir / LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) | upload | auto (local when known)


@dataclass(frozen=True)
class DaskCfg:
    scheduler: str | None = None      # tcp://host:port of an existing cluster; None = LocalCluster
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "6GiB"


@dataclass(frozen=True)
class ReviewCfg:
    propagate: PropagateCfg = field(default_factory=PropagateCfg)  # `labeler pull`: carry each reviewed frame's
                                     # labels along the refined tracks to the log's auto-accepted frames
                                     # (labeler/refine/propagate.py, docs/refinement.md)


@dataclass(frozen=True)
class PipelineConfig:
    night: str = "demo"                    # run key: re-running the same night replaces its outputs, never duplicates tasks
    state_dir: str = "${state}"
    output_dir: str = "${state}/runs/${night}"
    input: InputCfg = field(default_factory=InputCfg)
    simulate: SimulateCfg = field(default_factory=SimulateCfg)
    filter: FilterCfg = field(default_factory=FilterCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    scoring: ScoringCfg = field(default_factory=ScoringCfg)
    refine: RefineCfg = field(default_factory=RefineCfg)      # offboard refinement per log (docs/refinement.md)
    signals: SignalCfg = field(default_factory=SignalCfg)     # uncertainty signals -> frame priority and reasons
    selection: SelectionCfg = field(default_factory=SelectionCfg)
    review: ReviewCfg = field(default_factory=ReviewCfg)
    render: RenderCfg = field(default_factory=RenderCfg)
    studio: StudioCfg = field(default_factory=StudioCfg)
    dask: DaskCfg = field(default_factory=DaskCfg)

    def resolved(self, state_dir: str | None = None) -> "PipelineConfig":
        """Expand ``${state}`` and ``${night}`` in every string field."""
        state = state_dir or os.environ.get("LABELER_STATE") or "./state"
        state = str(Path(state).expanduser().resolve()) if "://" not in state else state

        def sub(v):
            if isinstance(v, str):
                return v.replace("${state}", state).replace("${night}", self.night)
            if dataclasses.is_dataclass(v):
                return dataclasses.replace(v, **{f.name: sub(getattr(v, f.name)) for f in dataclasses.fields(v)})
            return v

        return sub(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, data: Any, where: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: `{where or '<top>'}` must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} under `{where or '<top>'}`; allowed: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        t = hints[k]
        path = f"{where}.{k}" if where else k
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v or {}, path, source)
            continue
        kwargs[k] = _coerce(v, t, path, source)
    return cls(**kwargs)


def _coerce(v, t, path, source):
    allowed = getattr(t, "__args__", None) or (t,)
    if v is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{source}: `{path}` may not be null")
    for a in allowed:
        if a is type(None):
            continue
        if a is tuple and isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
            return tuple(float(x) for x in v)
        if a is dict and isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            return dict(v)
        if a is dict and isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, (int, float))
                                                     and not isinstance(x, bool) for k, x in v.items()):
            return {k: float(x) for k, x in v.items()}
        if a is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if a is int and isinstance(v, int) and not isinstance(v, bool):
            return v
        if a is bool and isinstance(v, bool):
            return v
        if a is str and isinstance(v, str):
            return v
    names = "/".join(getattr(a, "__name__", str(a)) for a in allowed)
    raise ConfigError(f"{source}: `{path}` must be {names}, got {v!r}")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> PipelineConfig:
    """Load a pipeline YAML (None = the defaults) and apply ``overrides`` ({"dask.scheduler": ...})."""
    data: dict = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"pipeline config {p} does not exist; pass an existing YAML, e.g. pipelines/nightly.yaml")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
    for dotted, value in (overrides or {}).items():
        cur = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
    cfg = _build(PipelineConfig, data, "", source)
    _validate(cfg, source)
    return cfg


def _validate(cfg: PipelineConfig, source: str) -> None:
    s = cfg.selection
    if not 0.0 <= s.budget_fraction <= 1.0:
        raise ConfigError(f"{source}: selection.budget_fraction must be in [0, 1], got {s.budget_fraction}")
    if cfg.filter.keyframe_hz <= 0:
        raise ConfigError(f"{source}: filter.keyframe_hz must be > 0, got {cfg.filter.keyframe_hz}")
    if cfg.input.chunk_frames < 1:
        raise ConfigError(f"{source}: input.chunk_frames must be >= 1")
    if cfg.dask.scheduler and not cfg.dask.scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise ConfigError(f"{source}: dask.scheduler must be an address like tcp://127.0.0.1:8786, got {cfg.dask.scheduler!r}")
    from labeler.logs.registry import READERS
    from labeler.pipeline.rules import compile_rules

    for rule in compile_rules(cfg.filter.drop_rules, f"{source}: filter.drop_rules"):
        if rule.model_tags():
            raise ConfigError(f"{source}: filter.drop_rules: rule {rule.name!r} uses the model-derived tag "
                              f"{rule.model_tags()[0]!r}, but drop rules run before the detector; move the rule to "
                              "filter.flag_rules (a matching kept frame is then flagged for review)")
    compile_rules(cfg.filter.flag_rules, f"{source}: filter.flag_rules")
    if list(cfg.filter.speed_bins_mps) != sorted(cfg.filter.speed_bins_mps):
        raise ConfigError(f"{source}: filter.speed_bins_mps must be increasing, got {cfg.filter.speed_bins_mps}")

    if cfg.input.format != "auto" and cfg.input.format not in READERS:
        raise ConfigError(f"{source}: input.format {cfg.input.format!r} is unknown; use 'auto' or one of {sorted(READERS)}")
    if cfg.studio.assets not in ("auto", "local", "upload"):
        raise ConfigError(f"{source}: studio.assets must be auto, local or upload, got {cfg.studio.assets!r}")
    if s.strategy not in ("diverse", "priority"):
        raise ConfigError(f"{source}: selection.strategy must be 'diverse' or 'priority', got {s.strategy!r}")
    from labeler.classes import CLASSES

    unknown = sorted(set(s.accept_score_by_class) - set(CLASSES))
    if unknown:
        raise ConfigError(f"{source}: selection.accept_score_by_class has unknown classes {unknown}; known: {list(CLASSES)}")
    if cfg.refine.max_gap_s <= 0 or cfg.refine.track.max_coast_s <= 0:
        raise ConfigError(f"{source}: refine.max_gap_s and refine.track.max_coast_s must be > 0")
    if cfg.render.color_by not in ("height", "intensity"):
        raise ConfigError(f"{source}: render.color_by must be 'height' or 'intensity'")
