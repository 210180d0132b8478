"""Effort report on a hand-made review log with known numbers (default cost model)."""

from __future__ import annotations

import json

import pytest

from labeler.io.tables import write_part
from labeler.review.effort import CostModel, effort, write_report
from labeler.review.tables import REVIEW_FRAMES, REVIEW_LOG
from labeler.schemas import to_table


def _log(ts, view, oid, action):
    return {"log_id": "L", "timestamp_ns": ts, "view": view, "object_id": oid, "run_id": "r", "frame_key": f"L/{ts}",
            "region_id": oid, "action": action, "old_category": None, "new_category": None, "centre_shift_m": None,
            "yaw_change_rad": None, "size_change_m": None, "bev_iou": None, "centre_shift_px": None, "iou_2d": None,
            "verdict": None, "project_id": 1, "task_id": ts, "annotation_id": ts, "reviewer": "me", "lead_time_s": None,
            "model_version": "m"}


def _frame(ts, status, verdict=None, lead=None, skipped=0.0):
    return {"log_id": "L", "timestamp_ns": ts, "run_id": "r", "frame_key": f"L/{ts}", "project_id": 1, "task_id": ts,
            "status": status, "verdict": verdict, "annotation_id": ts if status == "reviewed" else None, "reviewer": None,
            "lead_time_s": lead, "skipped_lead_time_s": skipped, "num_predicted": 0, "num_final": 0}


LOG = [_log(1, "bev", "a", "accepted"), _log(1, "bev", "b", "accepted"), _log(1, "bev", "c", "edited"),
       _log(1, "bev", "d", "added"), _log(1, "bev", "e", "deleted"), _log(1, "bev", "f", "relabelled"),
       _log(1, "front", "a", "accepted"),
       _log(2, "bev", "a", "accepted"), _log(2, "frame", "", "bad_frame"),
       _log(4, "bev", "a", "accepted")]
FRAMES = [_frame(1, "reviewed", "ok", 60.0), _frame(2, "reviewed", "bad_frame", 10.0), _frame(3, "skipped", skipped=4.0),
          _frame(4, "reviewed", None, None), _frame(5, "pending")]


def test_effort_known_numbers():
    e = effort(LOG, FRAMES)
    assert (e["accepted"], e["edited"], e["added"], e["deleted"], e["relabelled"], e["bad_frame"]) == (5, 1, 1, 1, 1, 1)
    assert (e["frames_reviewed"], e["frames_bad"], e["frames_skipped"]) == (3, 1, 1)
    assert (e["final_boxes_3d"], e["final_boxes_2d"]) == (6, 1)  # frame 2 is bad: its box is not kept
    # measured: 60 + 10 + frame 4 has no lead time -> its modelled 15 + 2 = 17, + 4 s of a skip
    assert e["review_s_measured"] == pytest.approx(91.0)
    # modelled: f1 15+2+2+30+90+3+4+2 = 148, f2 15+2+5 = 22, f4 17, skipped f3 15
    assert e["review_s_modelled"] == pytest.approx(202.0)
    # scratch: 2 kept frames x 15 + 6 cuboids x 90 + 1 camera box x 25.5
    assert e["scratch_s"] == pytest.approx(595.5)
    assert e["ratio_measured"] == pytest.approx(595.5 / 91.0)
    assert e["ratio_modelled"] == pytest.approx(595.5 / 202.0)
    assert e["saved_s"] == pytest.approx(595.5 - 91.0)

    m = CostModel.with_overrides(["scratch_3d_s=100", "frame_s=0"])
    assert effort(LOG, FRAMES, m)["scratch_s"] == pytest.approx(625.5)
    with pytest.raises(ValueError):
        CostModel.with_overrides(["nope=1"])


def test_report_files(tmp_path):
    write_part(str(tmp_path), REVIEW_LOG, to_table(REVIEW_LOG, LOG), "0")
    write_part(str(tmp_path), REVIEW_FRAMES, to_table(REVIEW_FRAMES, FRAMES), "0")
    r = write_report(str(tmp_path))
    assert json.loads(open(r["files"]["json"]).read())["effort"]["scratch_s"] == pytest.approx(595.5)
    assert "efficiency ratio scratch / measured review | 6.54" in r["text"]
    png = open(r["files"]["png"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
