"""Every Parquet table labeler writes, with its schema and key columns, in one place.

Each table is a frozen :class:`TableSpec`: a pyarrow schema plus the columns that identify a row.
Every row carries ``run_id`` (the run that produced it); model outputs also carry ``model_version``.
Use :func:`to_table` to build a table (columns are checked and cast) and :func:`check_keys` for uniqueness.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    doc: str

    @property
    def columns(self) -> list[str]:
        return self.schema.names


def _s(*fields) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=nl) for n, t, nl in fields])


_RUN = ("run_id", pa.string(), False)
_LOG = ("log_id", pa.string(), False)
_TS = ("timestamp_ns", pa.int64(), False)

FRAMES = TableSpec(
    "frames",
    _s(_LOG, _TS, _RUN,
       ("frame_index", pa.int32(), False),
       ("lidar_file", pa.string(), False),
       ("num_points", pa.int32(), False),
       ("ego_x_m", pa.float64(), False), ("ego_y_m", pa.float64(), False), ("ego_yaw_rad", pa.float64(), False),
       ("ego_speed_mps", pa.float64(), False),
       ("cameras", pa.list_(pa.string()), False),
       ("tags", pa.list_(pa.string()), False),
       ("filter_reason", pa.string(), True),      # null when the frame passed every filter
       ("outcome", pa.string(), False),           # filtered | auto_accepted | review
       ("pipeline_version", pa.string(), False)),
    ("log_id", "timestamp_ns"),
    "Every frame read without error, with the filter's verdict and the final outcome.",
)

QUARANTINE = TableSpec(
    "quarantine",
    _s(_LOG, ("timestamp_ns", pa.int64(), True), _RUN,   # timestamp null: the whole log is quarantined
       ("file", pa.string(), False),
       ("stage", pa.string(), False),                   # ingest | filter | predict | ...
       ("cause", pa.string(), False),                   # machine-friendly, e.g. truncated_point_file
       ("detail", pa.string(), False),
       ("frames_affected", pa.int32(), False)),
    ("log_id", "timestamp_ns", "file"),
    "Inputs that could not be processed, with the file and the reason. Counts reconcile with frames.",
)

PREDICTIONS_3D = TableSpec(
    "predictions_3d",
    _s(_LOG, _TS, ("object_id", pa.string(), False), _RUN,
       ("x", pa.float64(), False), ("y", pa.float64(), False), ("z", pa.float64(), False),
       ("l", pa.float64(), False), ("w", pa.float64(), False), ("h", pa.float64(), False),
       ("yaw", pa.float64(), False),
       ("category", pa.string(), False),
       ("score", pa.float64(), False),
       ("num_points", pa.int32(), False),
       ("uncertainty", pa.float64(), True),     # test-time-augmentation disagreement in [0, 1]; null if not estimated
       ("model_name", pa.string(), False),
       ("model_version", pa.string(), False)),
    ("log_id", "timestamp_ns", "object_id"),
    "3D boxes in the LiDAR frame (centre, size, yaw; see docs/conventions.md).",
)

BOXES_2D = TableSpec(
    "boxes_2d",
    _s(_LOG, _TS, ("object_id", pa.string(), False), ("camera", pa.string(), False), _RUN,
       ("x1", pa.float64(), False), ("y1", pa.float64(), False), ("x2", pa.float64(), False), ("y2", pa.float64(), False),
       ("truncation", pa.float64(), False),
       ("depth_m", pa.float64(), False),
       ("category", pa.string(), False),
       ("score", pa.float64(), False),
       ("model_version", pa.string(), False)),
    ("log_id", "timestamp_ns", "object_id", "camera"),
    "2D boxes (pixels, clipped to the image) of each 3D prediction in every camera that sees it.",
)

FRAME_SCORES = TableSpec(
    "frame_scores",
    _s(_LOG, _TS, _RUN,
       ("confidence", pa.float64(), False),      # 0..1, how sure the pre-labels are right
       ("priority", pa.float64(), False),        # higher = more worth a person's time
       ("reasons", pa.list_(pa.string()), False),
       ("num_boxes", pa.int32(), False),
       ("decision", pa.string(), False),         # review | auto_accepted
       ("model_version", pa.string(), False),
       ("labels_source", pa.string(), True)),    # refined | raw: which boxes the frame's pre-labels are
    ("log_id", "timestamp_ns"),
    "One row per kept frame: confidence, review priority, the corner-case reasons, and the decision.",
)

CONTEXT_3D = TableSpec(
    "context_3d",
    PREDICTIONS_3D.schema,
    ("log_id", "timestamp_ns", "object_id"),
    "Detections on frames dropped only for the keyframe rate, run as tracking context for refinement "
    "(refine.context_hz); refinement input, never labels (their frames are filtered, see frames).",
)

_BOX = (("x", pa.float64(), False), ("y", pa.float64(), False), ("z", pa.float64(), False),
        ("l", pa.float64(), False), ("w", pa.float64(), False), ("h", pa.float64(), False),
        ("yaw", pa.float64(), False))

REFINED_3D = TableSpec(
    "refined_3d",
    _s(_LOG, _TS, ("object_id", pa.string(), False), _RUN,   # object_id: r000, r001 ... per frame
       ("track_id", pa.string(), False),                     # t0000 ... unique within a log
       *_BOX,
       ("category", pa.string(), False),                     # the track's score-weighted class vote
       ("score", pa.float64(), False),                       # track-level confidence (x factor when not detected)
       ("source", pa.string(), False),                       # detected | interpolated | extrapolated | proposal
       ("raw_object_id", pa.string(), True),                 # predictions_3d object_id it refines; null if filled
                                                             # in or a cluster proposal (refine.proposals)
       ("num_points", pa.int32(), False),                    # of the raw detection (0 when filled in)
       ("model_version", pa.string(), False)),
    ("log_id", "timestamp_ns", "object_id"),
    "Offboard-refined 3D boxes (LiDAR frame of each frame): tracked, one size per track, smoothed, gaps filled.",
)

TRACKS_3D = TableSpec(
    "tracks_3d",
    _s(_LOG, _TS, ("object_id", pa.string(), False), _RUN,   # the predictions_3d row
       ("track_id", pa.string(), True),                      # null: not tracked
       ("kept", pa.bool_(), False),                          # its track survived refinement
       ("yaw_flipped", pa.bool_(), False),                   # its heading was 180 deg off its track's
       ("short_track", pa.bool_(), False),                   # flicker signals (labeler.refine.signals.track_flicker)
       ("class_switch", pa.bool_(), False),
       ("model_version", pa.string(), False)),
    ("log_id", "timestamp_ns", "object_id"),
    "Track id of every raw prediction (joins predictions_3d on its keys) and its temporal-flicker flags.",
)

ACCEPTED_3D = TableSpec(
    "accepted_3d",
    _s(_LOG, _TS, ("object_id", pa.string(), False), _RUN,   # object_id in the source table
       ("source_table", pa.string(), False),                 # refined_3d | predictions_3d
       ("track_id", pa.string(), True),
       *_BOX,
       ("category", pa.string(), False),
       ("score", pa.float64(), False),
       ("model_version", pa.string(), False)),
    ("log_id", "timestamp_ns", "object_id"),
    "The labels of auto-accepted frames with their provenance: which table and row, and the model version.",
)

REVIEW_TASKS = TableSpec(
    "review_tasks",
    _s(_LOG, _TS, _RUN,
       ("frame_key", pa.string(), False),
       ("project_id", pa.int64(), False),
       ("task_id", pa.int64(), False),
       ("status", pa.string(), False),           # created | existing | updated
       ("bev_image", pa.string(), False),
       ("camera_images", pa.list_(pa.string()), False),
       ("priority", pa.float64(), False),
       ("num_predictions", pa.int32(), False),
       ("model_version", pa.string(), False)),
    ("log_id", "timestamp_ns"),
    "Frames sent to Label Studio, with the task id they live under.",
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (FRAMES, QUARANTINE, PREDICTIONS_3D, BOXES_2D, FRAME_SCORES, REVIEW_TASKS,
                                                    REFINED_3D, TRACKS_3D, ACCEPTED_3D, CONTEXT_3D)}


def to_table(spec: TableSpec, rows: list[dict] | dict[str, list]) -> pa.Table:
    """Build a table of ``spec`` from row dicts or a column dict.

    Extra columns and missing non-nullable columns are an error; a missing nullable column is all null.
    """
    optional = {f.name for f in spec.schema if f.nullable}
    if isinstance(rows, dict):
        cols = dict(rows)
        n = len(next(iter(cols.values()))) if cols else 0
        for c in optional - set(cols):
            cols[c] = [None] * n
        extra = set(cols) - set(spec.columns)
        missing = set(spec.columns) - set(cols)
        if extra or missing:
            raise ValueError(f"table {spec.name}: missing columns {sorted(missing)}, unexpected {sorted(extra)}")
        return pa.table({c: pa.array(cols[c], type=spec.schema.field(c).type) for c in spec.columns}, schema=spec.schema)
    for r in rows[:1]:
        extra = set(r) - set(spec.columns)
        missing = set(spec.columns) - set(r) - optional
        if extra or missing:
            raise ValueError(f"table {spec.name}: missing columns {sorted(missing)}, unexpected {sorted(extra)}")
    return pa.Table.from_pylist(rows, schema=spec.schema)


def empty(spec: TableSpec) -> pa.Table:
    return spec.schema.empty_table()


def check_keys(spec: TableSpec, table: pa.Table) -> None:
    """Raise ValueError when key columns repeat."""
    if table.num_rows == 0:
        return
    g = table.group_by(list(spec.keys)).aggregate([([], "count_all")])
    dup = g.filter(pa.compute.greater(g.column("count_all"), 1))
    if dup.num_rows:
        raise ValueError(f"table {spec.name}: {dup.num_rows} duplicated keys {spec.keys}, e.g. {dup.slice(0, 1).to_pylist()}")
