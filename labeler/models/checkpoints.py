"""Safe loading of model checkpoints (PyTorch ``.pth`` files), for every learned model of labeler.

* :func:`load_checkpoint` reads a file with ``torch.load(weights_only=True)``: tensors, numbers, strings and
  containers only, no arbitrary code. ``trusted=True`` (CLI: ``--trusted-checkpoint``) allows full unpickling, which
  OpenMMLab checkpoints need because their ``meta`` holds numpy scalars; pass it only for files you trust, since
  unpickling an untrusted file can run any code.
* :func:`state_dict_of` finds the weights inside a loaded checkpoint (``state_dict``, ``model`` or the dict itself).
* :func:`load_weights` puts them into a ``torch.nn.Module`` after checking every key and shape, so that a file of
  another architecture fails with a summary instead of a wall of tensor names.

Every failure is a :class:`labeler.errors.ModelError` whose message names the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from labeler.errors import ModelError

TRUST_HINT = (
    "pass --trusted-checkpoint (trusted=True) to unpickle it fully, but ONLY for a file you trust: "
    "unpickling can run arbitrary code"
)

# torch.save's legacy (non-zip) format starts with a pickle (b"\x80<protocol>...") of this magic number (a long)
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

# how many keys of each kind a mismatch summary lists
_SHOW = 5


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike, trusted: bool = False, map_location: Any = "cpu") -> Any:
    """Load a PyTorch checkpoint file.

    Args:
        path: the ``.pth`` / ``.pt`` file.
        trusted: False (default) loads with ``weights_only=True`` (no code runs); True unpickles everything
            (``weights_only=False``), for files from a source you trust only.
        map_location: passed to ``torch.load`` (default ``"cpu"``).

    Returns:
        The loaded object (usually a dict with ``state_dict`` and ``meta``).

    Raises:
        ModelError: naming the file, when it is missing, empty, truncated, not a PyTorch checkpoint, or holds
            objects that weights-only loading refuses (with the ``--trusted-checkpoint`` hint).
    """
    import torch

    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: checkpoint file not found")
    if not p.is_file():
        raise ModelError(f"{p}: checkpoint path is not a file")
    size = p.stat().st_size
    if size == 0:
        raise ModelError(f"{p}: checkpoint file is empty (0 bytes)")
    with open(p, "rb") as f:
        head = f.read(32)
    is_zip_like = head.startswith(b"PK")
    is_legacy = head.startswith(b"\x80") and (_LEGACY_MAGIC in head or len(head) < 32)
    if not is_zip_like and not is_legacy:
        raise ModelError(
            f"{p}: not a PyTorch checkpoint (neither torch.save's zip archive nor its legacy format; "
            f"first bytes {head[:8]!r})"
        )
    if is_zip_like and not zipfile.is_zipfile(p):
        raise ModelError(
            f"{p}: checkpoint file is truncated or corrupt ({size} bytes; its zip archive has no central "
            "directory): download or copy it again"
        )
    try:
        return torch.load(p, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if not trusted and "Weights only load failed" in msg:
            glob = _unsupported_global(msg)
            what = f" ({glob})" if glob else ""
            raise ModelError(
                f"{p}: weights-only loading refused the checkpoint{what}: it holds Python objects beyond tensors "
                "(OpenMMLab checkpoints keep numpy scalars in their meta); " + TRUST_HINT
            ) from e
        raise ModelError(f"{p}: not a PyTorch checkpoint ({_first_line(msg)})") from e
    except Exception as e:  # torch.load raises many types on bad input (KeyError, EOFError, RuntimeError...)
        msg = f"{type(e).__name__}: {_first_line(str(e))}".rstrip(": ")
        if isinstance(e, (ModuleNotFoundError, AttributeError)) and trusted:
            raise ModelError(f"{p}: the checkpoint refers to code that is not installed ({msg})") from e
        if isinstance(e, EOFError) or "failed finding central directory" in msg or "truncated" in msg.lower():
            raise ModelError(f"{p}: checkpoint file is truncated ({size} bytes): {msg}") from e
        if not is_zip_like:
            raise ModelError(f"{p}: not a PyTorch checkpoint (or a truncated legacy-format one): {msg}") from e
        raise ModelError(f"{p}: cannot read the checkpoint: {msg}") from e


def state_dict_of(checkpoint: Any, file: str | os.PathLike = "<checkpoint>") -> dict:
    """The weights inside a loaded checkpoint, with a DataParallel ``module.`` prefix removed.

    Looks for ``checkpoint["state_dict"]``, then ``checkpoint["model"]``, then the checkpoint itself when all its
    values are tensors. Raises :class:`ModelError` naming ``file`` when none of these is a tensor dict.
    """
    import torch

    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            sd = checkpoint.get(key)
            if isinstance(sd, Mapping) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
                return _strip_prefix(dict(sd))
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return _strip_prefix(dict(checkpoint))
        keys = ", ".join(list(map(str, checkpoint.keys()))[:8])
        raise ModelError(f"{file}: no state_dict in the checkpoint (top-level keys: {keys or 'none'})")
    raise ModelError(f"{file}: the checkpoint is a {type(checkpoint).__name__}, not a dict of weights")


@dataclass
class WeightsReport:
    """How a state dict fits a model: keys the model has that the file lacks, and the other way round."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, file shape, model shape
    matched: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        parts = [f"{self.matched} tensors fit"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing in the file (e.g. {_few(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {_few(self.unexpected)})")
        if self.shape_mismatch:
            shown = "; ".join(
                f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.shape_mismatch[:_SHOW]
            )
            more = f"; +{len(self.shape_mismatch) - _SHOW} more" if len(self.shape_mismatch) > _SHOW else ""
            parts.append(f"{len(self.shape_mismatch)} of another shape ({shown}{more})")
        return ", ".join(parts)


def compare_weights(model, state_dict: Mapping) -> WeightsReport:
    """Compare a state dict with ``model.state_dict()`` key by key and shape by shape."""
    own = model.state_dict()
    rep = WeightsReport()
    for k, v in state_dict.items():
        if k not in own:
            rep.unexpected.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            rep.shape_mismatch.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            rep.matched += 1
    # BatchNorm's num_batches_tracked is often absent from exported files and harmless
    rep.missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    return rep


def load_weights(model, state_dict: Mapping, file: str | os.PathLike = "<checkpoint>", strict: bool = True) -> WeightsReport:
    """Load ``state_dict`` into ``model`` after checking that it fits.

    ``strict=True`` (default) refuses any missing, unexpected or differently shaped tensor. ``strict=False``
    loads the fitting tensors when at least one fits and none has another shape (fine-tuning heads, extra keys).

    Raises:
        ModelError: naming ``file``, with a summary (a few missing/unexpected keys and shape mismatches).
    """
    rep = compare_weights(model, state_dict)
    bad = (not rep.ok) if strict else (bool(rep.shape_mismatch) or rep.matched == 0)
    if bad:
        raise ModelError(
            f"{file}: the weights do not fit the model architecture ({rep.summary()}); check that the "
            "checkpoint was trained with this config"
        )
    fitting = {k: v for k, v in state_dict.items() if k not in rep.unexpected}
    model.load_state_dict(fitting, strict=False)
    return rep


def _strip_prefix(sd: dict, prefix: str = "module.") -> dict:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _few(keys: list[str]) -> str:
    s = ", ".join(keys[:_SHOW])
    return s + (f", +{len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def _first_line(msg: str) -> str:
    for line in msg.strip().splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def _unsupported_global(msg: str) -> str:
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
    if m:
        return m.group(1)
    m = re.search(r"(Unsupported [^\n.]*)", msg)
    return m.group(1).strip() if m else ""
