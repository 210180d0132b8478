"""Log readers by format name (a plain dict you can grep), format detection and log discovery."""

from __future__ import annotations

from typing import Callable

from labeler.errors import InputError
from labeler.logs.base import LogSource
from labeler.logs.native import find_native_logs, is_native_log, open_native_log

# format name -> opener(path) -> LogSource
READERS: dict[str, Callable[[str], LogSource]] = {
    "native": open_native_log,
}

# format name -> detector(path) -> bool ; checked in this order by detect_format
DETECTORS: dict[str, Callable[[str], bool]] = {
    "native": is_native_log,
}

# format name -> finder(root) -> list of log paths under root
FINDERS: dict[str, Callable[[str], list[str]]] = {
    "native": find_native_logs,
}


def detect_format(path: str) -> str:
    """Name of the reader for ``path``; InputError listing the known formats when none matches."""
    for name, test in DETECTORS.items():
        try:
            if test(str(path)):
                return name
        except OSError:
            continue
    raise InputError(str(path), "unknown_format",
                     f"cannot tell the log format; pass --format with one of {sorted(READERS)}")


def open_log(path: str, format: str | None = None) -> LogSource:
    fmt = format or detect_format(path)
    if fmt not in READERS:
        raise InputError(str(path), "unknown_format", f"no reader named {fmt!r}; known: {sorted(READERS)}")
    return READERS[fmt](str(path))


def find_logs(root: str, format: str | None = None) -> list[tuple[str, str]]:
    """(path, format) of every log under ``root`` (or ``root`` itself when it is a log)."""
    if format and format != "auto":
        if format not in FINDERS:
            raise InputError(str(root), "unknown_format", f"no reader named {format!r}; known: {sorted(READERS)}")
        return [(p, format) for p in FINDERS[format](str(root))]
    try:
        return [(str(root), detect_format(root))]
    except InputError:
        pass
    import fsspec

    fs, p = fsspec.core.url_to_fs(str(root))
    if not fs.exists(p):
        raise InputError(str(root), "missing_input", "input folder does not exist; check `input.logs` in the pipeline YAML")
    out = []
    for entry in sorted(fs.ls(p, detail=False)):
        child = str(root).rstrip("/") + "/" + entry.rstrip("/").rsplit("/", 1)[-1]
        try:
            out.append((child, detect_format(child)))
        except InputError:
            continue
    return out
