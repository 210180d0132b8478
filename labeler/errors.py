"""A small error hierarchy. Every error says what is wrong and, where it can, how to fix it.

Input errors name the file and the frame (timestamp) so a quarantine row can be traced back.
"""

from __future__ import annotations


class LabelerError(Exception):
    """Base class of every error raised on purpose by labeler."""


class ConfigError(LabelerError):
    """A pipeline config (YAML) or CLI option is invalid."""


class StudioError(LabelerError):
    """Label Studio could not be reached, started or used."""


class ModelError(LabelerError):
    """A model file is missing, truncated or of the wrong architecture."""


class InputError(LabelerError):
    """A log, file or frame cannot be read.

    Attributes:
        file: path of the offending file (or log directory).
        frame: timestamp in ns of the frame, or None when the whole log is affected.
        what: short machine-friendly cause, e.g. "truncated_point_file".
        detail: human sentence with the fix.
    """

    def __init__(self, file: str, what: str, detail: str, frame: int | None = None):
        self.file = str(file)
        self.frame = frame
        self.what = what
        self.detail = detail
        where = f"{self.file}" + (f" (frame {frame})" if frame is not None else "")
        super().__init__(f"{where}: {what}: {detail}")
