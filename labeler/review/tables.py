"""Tables written by ``labeler pull`` (see docs/review.md). Built with :class:`labeler.schemas.TableSpec` and
registered in :data:`labeler.schemas.TABLES` on import, so :func:`labeler.io.tables.read_table` reads them too.
"""

from __future__ import annotations

import pyarrow as pa

from labeler.schemas import TABLES, TableSpec


def _s(*fields) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=nl) for n, t, nl in fields])


_RUN = ("run_id", pa.string(), False)
_LOG = ("log_id", pa.string(), False)
_TS = ("timestamp_ns", pa.int64(), False)
_F = pa.float64()

REVIEW_LOG = TableSpec(
    "review_log",
    _s(_LOG, _TS, ("view", pa.string(), False), ("object_id", pa.string(), False), _RUN,
       ("frame_key", pa.string(), False),
       ("region_id", pa.string(), True),           # Label Studio region id (null on bad_frame rows)
       ("action", pa.string(), False),             # accepted | edited | relabelled | added | deleted | bad_frame
       ("old_category", pa.string(), True),        # predicted class (null when added)
       ("new_category", pa.string(), True),        # final class (null when deleted)
       ("centre_shift_m", _F, True),               # BEV: |final - predicted| centre, x/y/z, metres
       ("yaw_change_rad", _F, True),               # BEV: wrap(final - predicted yaw), in [-pi, pi)
       ("size_change_m", _F, True),                # BEV: max |final - predicted| of l, w, h
       ("bev_iou", _F, True),                      # BEV: rotated IoU of predicted and final box
       ("centre_shift_px", _F, True),              # camera: 2D box centre shift, pixels
       ("iou_2d", _F, True),                       # camera: IoU of predicted and final 2D box
       ("verdict", pa.string(), True),             # ok | needs_fix | bad_frame | null (not given)
       ("project_id", pa.int64(), False),
       ("task_id", pa.int64(), False),
       ("annotation_id", pa.int64(), False),
       ("reviewer", pa.string(), False),           # the annotation's completed_by (user e-mail when known, else id)
       ("lead_time_s", _F, True),                  # the annotation's lead_time (whole frame, repeated per row)
       ("model_version", pa.string(), False)),     # of the prediction the reviewer started from
    ("log_id", "timestamp_ns", "view", "object_id"),
    "One row per reviewed box (BEV view 'bev' or a camera name) with the action taken and how far it moved; "
    "one row with view 'frame', object_id '' and action 'bad_frame' per frame marked bad.",
)

REVIEW_FRAMES = TableSpec(
    "review_frames",
    _s(_LOG, _TS, _RUN,
       ("frame_key", pa.string(), False),
       ("project_id", pa.int64(), False),
       ("task_id", pa.int64(), False),
       ("status", pa.string(), False),             # reviewed | skipped | pending
       ("verdict", pa.string(), True),
       ("annotation_id", pa.int64(), True),        # the annotation used (null unless reviewed)
       ("reviewer", pa.string(), True),
       ("lead_time_s", _F, True),                  # of the annotation used
       ("skipped_lead_time_s", _F, False),         # summed lead_time of cancelled (skipped) annotations
       ("num_predicted", pa.int32(), False),       # BEV boxes in the prediction
       ("num_final", pa.int32(), False)),          # BEV boxes in the annotation (0 unless reviewed)
    ("log_id", "timestamp_ns"),
    "One row per frame the run sent to review: whether a person reviewed it, skipped it or not yet.",
)

LABELS = TableSpec(
    "labels",
    _s(_LOG, _TS, ("object_id", pa.string(), False), _RUN,
       ("x", _F, False), ("y", _F, False), ("z", _F, False),
       ("l", _F, False), ("w", _F, False), ("h", _F, False),
       ("yaw", _F, False),
       ("category", pa.string(), False),
       ("provenance", pa.string(), False),         # auto | human | propagated (labeler.review.propagation)
       ("score", _F, True),                        # model score (auto; human boxes: null)
       ("uncertainty", _F, True),                  # when predictions_3d has such a column
       ("model_version", pa.string(), False),
       ("reviewer", pa.string(), True),            # human rows
       ("annotation_id", pa.int64(), True),        # human rows
       ("task_id", pa.int64(), True)),
    ("log_id", "timestamp_ns", "object_id"),
    "Final 3D labels (LiDAR frame): auto-accepted frames' predictions merged with reviewed frames' human boxes; "
    "frames marked bad, skipped or not yet reviewed are excluded.",
)

LABELS_2D = TableSpec(
    "labels_2d",
    _s(_LOG, _TS, ("object_id", pa.string(), False), ("camera", pa.string(), False), _RUN,
       ("x1", _F, False), ("y1", _F, False), ("x2", _F, False), ("y2", _F, False),
       ("category", pa.string(), False),
       ("provenance", pa.string(), False),
       ("score", _F, True),
       ("model_version", pa.string(), False),
       ("reviewer", pa.string(), True),
       ("annotation_id", pa.int64(), True)),
    ("log_id", "timestamp_ns", "object_id", "camera"),
    "Final camera 2D boxes (pixels), same merge rules as labels.",
)

REVIEW_TABLES = (REVIEW_LOG, REVIEW_FRAMES, LABELS, LABELS_2D)
for _t in REVIEW_TABLES:
    TABLES.setdefault(_t.name, _t)

__all__ = ["REVIEW_LOG", "REVIEW_FRAMES", "LABELS", "LABELS_2D", "REVIEW_TABLES"]
