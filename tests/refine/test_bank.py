import pandas as pd
import pytest

from labeler.refine.bank import add_frames, corner_case_frames, gate, read_bank, resolve_model, versions
from labeler.refine.cli import main
from tests.refine import tiny_log

DEGRADED = "geometric:max_range_m=12,min_cluster_points=150"   # a real detector that sees only near, big objects


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    s = tmp_path_factory.mktemp("state")
    fr, lab = corner_case_frames(tiny_log(), frame_step=3)
    add_frames(str(s), fr, lab, created_by="test")
    return str(s)


def test_bank_is_versioned_and_never_relabels(state, tmp_path):
    frames, labels, v = read_bank(state)
    assert v == 1 and len(frames) == 4 and len(labels) > 0
    assert all("rare_class" in k for k in frames["kinds"])
    s = str(tmp_path)
    fr, lab = corner_case_frames(tiny_log(), frame_step=3)
    assert add_frames(s, fr.iloc[:2], lab) == 1
    lab2 = lab.copy()
    lab2["x"] += 100.0                                   # a later relabel of a frame already in the bank is ignored
    assert add_frames(s, fr, lab2) == 2
    f1, l1, _ = read_bank(s, 1)
    f2, l2, _ = read_bank(s, 2)
    assert versions(s) == [1, 2] and len(f1) == 2 and len(f2) == 4
    old = l2[l2["timestamp_ns"].isin(set(f1["timestamp_ns"]))]
    pd.testing.assert_frame_equal(old.reset_index(drop=True), l1.reset_index(drop=True))
    assert sorted(f2["added_version"]) == [1, 1, 2, 2]


def test_gate_fails_a_degraded_detector_and_passes_the_current_one(state):
    assert resolve_model(DEGRADED).config.max_range_m == 12
    bad = gate(DEGRADED, "geometric", state)
    assert not bad.passed and bad.candidate["bank_recall"] < bad.baseline["bank_recall"]
    assert "FAIL" in bad.message and "forgets corner cases" in bad.message
    good = gate("geometric", DEGRADED, state, heldout_logs=[tiny_log()], frame_step=5)
    assert good.passed and "PASS" in good.message and good.candidate["heldout_recall"] > good.baseline["heldout_recall"]


def test_gate_cli_exit_codes(state, capsys):
    assert main(["--state", state, "gate", "--model", DEGRADED, "--no-heldout"]) == 1
    assert "FAIL" in capsys.readouterr().err
    assert main(["--state", state, "gate", "--model", "geometric", "--baseline", DEGRADED, "--no-heldout"]) == 0
    assert main(["--state", state, "gate", "--model", "geometric:no_such_option=1", "--no-heldout"]) == 2
