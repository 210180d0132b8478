"""Ground-truth tables from logs (I/O), for :func:`labeler.eval.evaluate`.

Ground-truth category names are mapped onto the detector classes (``GT_CATEGORY_MAP``); other categories are
kept under their own names and simply have no predictions to match.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from labeler.logs.registry import open_log

# dataset category -> labeler class (lower-case keys)
GT_CATEGORY_MAP: dict[str, str] = {
    "regular_vehicle": "car", "large_vehicle": "truck", "box_truck": "truck", "truck_cab": "truck",
    "articulated_bus": "bus", "school_bus": "bus", "bicyclist": "cyclist", "motorcyclist": "cyclist",
    "bicycle": "cyclist", "motorcycle": "cyclist", "rider": "cyclist", "motor": "cyclist",
    "van": "car", "misc": "misc", "person_sitting": "pedestrian", "construction_cone": "traffic_cone",
}

GT_SCHEMA = pa.schema([("log_id", pa.string()), ("timestamp_ns", pa.int64()), ("track_id", pa.string()),
                       ("category", pa.string())] + [(c, pa.float64()) for c in ("x", "y", "z", "l", "w", "h", "yaw")]
                      + [("num_lidar_pts", pa.int64())])


def map_category(name: str) -> str:
    n = str(name).lower()
    return GT_CATEGORY_MAP.get(n, n)


def gt_table(log_path: str, format: str, timestamps_ns=None) -> pa.Table:
    """Ground truth of one log (optionally only the given frames) as a table in the LiDAR frame."""
    log = open_log(log_path, format)
    want = None if timestamps_ns is None else set(int(t) for t in timestamps_ns)
    ann = getattr(log, "annotations", None)
    if format == "native" and ann is not None:
        t = ann
        if want is not None:
            t = t.filter(pa.compute.is_in(t.column("timestamp_ns"), pa.array(sorted(want), pa.int64())))
        n = t.num_rows
        cols = {"log_id": [log.log_id] * n, "timestamp_ns": t.column("timestamp_ns"), "track_id": t.column("track_id"),
                "category": [map_category(c) for c in t.column("category").to_pylist()]}
        for c in ("x", "y", "z", "l", "w", "h", "yaw"):
            cols[c] = t.column(c)
        cols["num_lidar_pts"] = t.column("num_lidar_pts") if "num_lidar_pts" in t.column_names else [-1] * n
        return pa.table(cols, schema=GT_SCHEMA)
    rows = []
    for i, ts in enumerate(log.timestamps_ns):
        if want is not None and int(ts) not in want:
            continue
        f = log.load_frame(i, with_images=False)
        if f.gt_boxes is None:
            continue
        from labeler.geometry.boxes import count_points_in_boxes

        npts = count_points_in_boxes(f.points[np.isfinite(f.points[:, :3]).all(1), :3], f.gt_boxes) if len(f.gt_boxes) else []
        for k, b in enumerate(f.gt_boxes):
            rows.append({"log_id": log.log_id, "timestamp_ns": int(ts),
                         "track_id": str(f.gt_track_ids[k]) if f.gt_track_ids is not None else str(k),
                         "category": map_category(f.gt_categories[k]), **dict(zip(("x", "y", "z", "l", "w", "h", "yaw"), map(float, b))),
                         "num_lidar_pts": int(npts[k])})
    return pa.Table.from_pylist(rows, schema=GT_SCHEMA)
