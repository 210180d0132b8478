"""labeler.models.checkpoints: safe loading, and clear errors that name the file.

Real files written with torch.save (no mocks): a good checkpoint, a truncated copy, a text file, one of another
architecture, and an OpenMMLab-style checkpoint whose meta holds numpy scalars (refused by weights-only loading).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeler.errors import ModelError
from labeler.models.checkpoints import (
    compare_weights,
    file_sha256,
    load_checkpoint,
    load_weights,
    state_dict_of,
)


class Small(torch.nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3)
        self.bn = torch.nn.BatchNorm2d(width)
        self.head = torch.nn.Linear(width, 2)


class Other(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(4, 4)
        self.decoder = torch.nn.Linear(4, 1)


@pytest.fixture()
def good(tmp_path):
    m = Small()
    p = tmp_path / "good.pth"
    torch.save({"state_dict": m.state_dict(), "meta": {"epoch": 3, "classes": ["car"]}}, p)
    return p, m


def test_loads_a_weights_only_checkpoint(good):
    p, m = good
    ckpt = load_checkpoint(p)
    sd = state_dict_of(ckpt, p)
    assert set(sd) == set(m.state_dict())
    fresh = Small()
    rep = load_weights(fresh, sd, file=p)
    assert rep.ok and rep.matched == len(sd)
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.pth"
    with pytest.raises(ModelError, match="nope.pth: checkpoint file not found"):
        load_checkpoint(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.pth"
    p.write_bytes(b"")
    with pytest.raises(ModelError, match="empty.pth: checkpoint file is empty"):
        load_checkpoint(p)


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_file(good, tmp_path, fraction):
    p, _ = good
    data = p.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError, match=r"cut\.pth: checkpoint file is truncated"):
        load_checkpoint(cut)


def test_truncated_legacy_format(tmp_path):
    p = tmp_path / "legacy.pth"
    torch.save(Small().state_dict(), p, _use_new_zipfile_serialization=False)
    assert set(load_checkpoint(p)) == set(Small().state_dict())  # the legacy format itself loads
    cut = tmp_path / "legacy_cut.pth"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"legacy_cut\.pth: checkpoint file is truncated"):
        load_checkpoint(cut)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("these are not weights\n" * 10)
    with pytest.raises(ModelError, match=r"notes\.pth: not a PyTorch checkpoint"):
        load_checkpoint(p)
    with pytest.raises(ModelError, match=r"notes\.pth: not a PyTorch checkpoint"):
        load_checkpoint(p, trusted=True)


def test_no_state_dict_inside(tmp_path):
    p = tmp_path / "meta_only.pth"
    torch.save({"meta": {"epoch": 1}}, p)
    with pytest.raises(ModelError, match=r"meta_only\.pth: no state_dict in the checkpoint \(top-level keys: meta\)"):
        state_dict_of(load_checkpoint(p), p)


def test_wrong_architecture_is_summarised(tmp_path):
    p = tmp_path / "other.pth"
    torch.save({"state_dict": Other().state_dict()}, p)
    with pytest.raises(ModelError) as ei:
        load_weights(Small(), state_dict_of(load_checkpoint(p), p), file=p)
    msg = str(ei.value)
    assert "other.pth: the weights do not fit the model architecture" in msg
    assert "0 tensors fit" in msg
    assert "missing in the file (e.g. conv.weight" in msg
    assert "4 unexpected (e.g. encoder.weight, encoder.bias, decoder.weight, decoder.bias)" in msg


def test_shape_mismatch_is_summarised(tmp_path):
    p = tmp_path / "wide.pth"
    torch.save({"state_dict": Small(width=16).state_dict()}, p)
    with pytest.raises(ModelError) as ei:
        load_weights(Small(width=8), state_dict_of(load_checkpoint(p), p), file=p)
    msg = str(ei.value)
    assert "wide.pth" in msg and "of another shape" in msg
    assert "conv.weight: file (16, 3, 3, 3) vs model (8, 3, 3, 3)" in msg
    # a differently shaped tensor is refused even when not strict
    with pytest.raises(ModelError, match="of another shape"):
        load_weights(Small(width=8), state_dict_of(load_checkpoint(p), p), file=p, strict=False)


def test_non_strict_loads_the_fitting_part(good):
    p, m = good
    sd = dict(state_dict_of(load_checkpoint(p), p))
    sd.pop("head.weight")
    sd["extra.bias"] = torch.zeros(2)
    with pytest.raises(ModelError, match="1 missing in the file .*1 unexpected"):
        load_weights(Small(), sd, file=p)
    fresh = Small()
    rep = load_weights(fresh, sd, file=p, strict=False)
    assert rep.missing == ["head.weight"] and rep.unexpected == ["extra.bias"]
    assert torch.equal(fresh.conv.weight, m.conv.weight)


def test_module_prefix_and_plain_state_dicts(tmp_path):
    m = Small()
    p = tmp_path / "dp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in m.state_dict().items()}}, p)
    assert compare_weights(Small(), state_dict_of(load_checkpoint(p), p)).ok
    p2 = tmp_path / "plain.pth"
    torch.save(m.state_dict(), p2)
    assert compare_weights(Small(), state_dict_of(load_checkpoint(p2), p2)).ok


def test_openmmlab_style_numpy_meta_needs_trust(tmp_path):
    """OpenMMLab checkpoints keep numpy scalars in meta: weights-only loading refuses them, with the hint."""
    m = Small()
    p = tmp_path / "mmlab_epoch_80.pth"
    meta = {"epoch": 80, "hook_msgs": {"best_score": np.float64(0.73)}, "iter": np.int64(12345),
            "dataset_meta": {"classes": ["Pedestrian", "Cyclist", "Car"]}}
    torch.save({"meta": meta, "state_dict": m.state_dict()}, p)
    with pytest.raises(ModelError) as ei:
        load_checkpoint(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert "weights-only loading refused" in msg and "numpy" in msg
    assert "--trusted-checkpoint" in msg and "ONLY for a file you trust" in msg
    ckpt = load_checkpoint(p, trusted=True)
    assert ckpt["meta"]["iter"] == 12345
    assert load_weights(Small(), state_dict_of(ckpt, p), file=p).ok


def test_file_sha256(good):
    import hashlib

    p, _ = good
    assert file_sha256(p) == hashlib.sha256(p.read_bytes()).hexdigest()
