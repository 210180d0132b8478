"""Log readers by format name (a plain dict you can grep), format detection and log discovery."""

from __future__ import annotations

from typing import Callable

from labeler.errors import InputError
from labeler.logs.base import LogSource
from labeler.logs.av2 import find_av2_logs, is_av2_log, open_av2_log
from labeler.logs.kitti import find_kitti_logs, is_kitti_folder, open_kitti_log
from labeler.logs.native import find_native_logs, is_native_log, open_native_log
from labeler.logs.nuscenes import find_nuscenes_logs, is_nuscenes_info, open_nuscenes_log
from labeler.logs.nuscenes_tables import find_nuscenes_table_logs, is_nuscenes_tables, open_nuscenes_tables_log
from labeler.logs.pcd import find_sustech_sequences, is_sustech_sequence, open_sustech_sequence
from labeler.logs.rosbag import find_rosbags, is_rosbag, open_rosbag_log

# format name -> opener(path) -> LogSource
READERS: dict[str, Callable[[str], LogSource]] = {
    "native": open_native_log,
    "kitti": open_kitti_log,
    "nuscenes": open_nuscenes_log,
    "nuscenes_tables": open_nuscenes_tables_log,
    "av2": open_av2_log,
    "sustech": open_sustech_sequence,
    "rosbag": open_rosbag_log,
}

# format name -> detector(path) -> bool ; checked in this order by detect_format
DETECTORS: dict[str, Callable[[str], bool]] = {
    "native": is_native_log,
    "kitti": is_kitti_folder,
    "nuscenes_tables": is_nuscenes_tables,
    "nuscenes": is_nuscenes_info,
    "av2": is_av2_log,
    "sustech": is_sustech_sequence,
    "rosbag": is_rosbag,
}

# what each detector looks for (shown when nothing matches)
LAYOUT_HINTS: dict[str, str] = {
    "native": "log.json",
    "kitti": "velodyne/ + calib/",
    "nuscenes": "a *.info.json / *.pkl info file (or a folder with one)",
    "nuscenes_tables": "a dataroot with v1.0-*/sample.json (one log per scene: <dataroot>#<scene>)",
    "av2": "sensors/lidar/ + city_SE3_egovehicle.feather",
    "sustech": "lidar/*.pcd",
    "rosbag": "a .bag / .mcap / .db3 file or a folder with metadata.yaml",
}

# formats whose detected folder holds several logs (expanded with its finder)
MULTI_LOG_FORMATS = frozenset({"nuscenes_tables"})

# format name -> finder(root) -> list of log paths under root
FINDERS: dict[str, Callable[[str], list[str]]] = {
    "native": find_native_logs,
    "kitti": find_kitti_logs,
    "nuscenes": find_nuscenes_logs,
    "nuscenes_tables": find_nuscenes_table_logs,
    "av2": find_av2_logs,
    "sustech": find_sustech_sequences,
    "rosbag": find_rosbags,
}


def detect_format(path: str) -> str:
    """Name of the reader for ``path``; InputError listing the known formats when none matches."""
    for name, test in DETECTORS.items():
        try:
            if test(str(path)):
                return name
        except OSError:
            continue
    hints = "; ".join(f"{k}: {v}" for k, v in LAYOUT_HINTS.items())
    raise InputError(str(path), "unknown_format",
                     f"cannot tell the log format (looked for {hints}); pass --format with one of {sorted(READERS)}")


def open_log(path: str, format: str | None = None) -> LogSource:
    fmt = format or detect_format(path)
    if fmt not in READERS:
        raise InputError(str(path), "unknown_format", f"no reader named {fmt!r}; known: {sorted(READERS)}")
    return READERS[fmt](str(path))


def find_logs(root: str, format: str | None = None, max_depth: int = 2) -> list[tuple[str, str]]:
    """(path, format) of every log under ``root`` (or ``root`` itself when it is a log).

    With ``format`` set, that reader's finder decides. Auto-detection tests ``root``, then its entries, then
    (for entries that are folders but not logs) their entries, down to ``max_depth`` levels; a folder that is a
    log is not searched further.
    """
    if format and format != "auto":
        if format not in FINDERS:
            raise InputError(str(root), "unknown_format", f"no reader named {format!r}; known: {sorted(READERS)}")
        return [(p, format) for p in FINDERS[format](str(root))]
    try:
        return _expand(str(root), detect_format(root))
    except InputError:
        pass
    import fsspec

    fs, p = fsspec.core.url_to_fs(str(root))
    if not fs.exists(p):
        raise InputError(str(root), "missing_input", "input folder does not exist; check `input.logs` in the pipeline YAML")
    return _find_below(fs, p, str(root).rstrip("/"), max_depth)


def _find_below(fs, p: str, url: str, depth: int) -> list[tuple[str, str]]:
    out = []
    if depth <= 0 or not fs.isdir(p):
        return out
    for entry in sorted(fs.ls(p, detail=False)):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        child = url + "/" + name
        try:
            out.extend(_expand(child, detect_format(child)))
        except InputError:
            out.extend(_find_below(fs, entry, child, depth - 1))
    return out


def _expand(path: str, fmt: str) -> list[tuple[str, str]]:
    if fmt in MULTI_LOG_FORMATS and "#" not in path:
        return [(p, fmt) for p in FINDERS[fmt](path)]
    return [(path, fmt)]
