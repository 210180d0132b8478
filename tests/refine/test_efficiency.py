import numpy as np
import pandas as pd

from labeler.refine.efficiency import (BenchCfg, FrameOutcome, budget_point, corner_coverage, corner_events,
                                       match_frame, review_seconds, run_benchmark, scratch_seconds)
from labeler.review.effort import CostModel
from tests.refine import tiny_log

G = np.array([[10, 0, -1, 4.5, 1.9, 1.6, 0.0], [20, 5, -1, 4.5, 1.9, 1.6, 0.0], [30, -5, -1, 0.6, 0.6, 1.7, 0.0],
              [40, 8, -1, 4.5, 1.9, 1.6, 0.0]])


def test_match_frame_counts_each_error_kind():
    P = np.array([[10, 0, -1, 4.5, 1.9, 1.6, np.pi],      # exact (heading flip does not change BEV IoU): correct
                  [21.9, 5, -1, 4.5, 1.9, 1.6, 0.0],      # 1.9 m off: IoU 0.41 < 0.5 -> edited
                  [30, -5, -1, 0.6, 0.6, 1.7, 0.0],       # right box, wrong class -> relabelled
                  [-15, 0, -1, 4.5, 1.9, 1.6, 0.0]])      # nothing there -> spurious; GT 4 is missed
    o = match_frame(P, ["car", "car", "cyclist", "car"], G, ["car", "car", "pedestrian", "car"])
    assert (o.correct, o.edited, o.relabelled, o.missed, o.spurious, o.num_gt) == (1, 1, 1, 1, 1, 4)
    assert o.errors == 4
    assert match_frame(np.zeros((0, 7)), [], G, ["car"] * 4).missed == 4


def test_cost_model_arithmetic_and_budget_extremes():
    cm = CostModel()
    o = FrameOutcome(num_gt=4, correct=1, edited=1, relabelled=1, missed=1, spurious=1)
    assert review_seconds(o, cm) == cm.frame_s + cm.verify_s + cm.edit_3d_s + cm.relabel_s + cm.add_3d_s + cm.delete_s
    assert scratch_seconds(4, 1, cm) == cm.frame_s + 4 * cm.scratch_3d_s
    perfect = FrameOutcome(3, 3, 0, 0, 0, 0)
    outs = [o, perfect]
    none = budget_point(outs, [False, False], cm)
    assert none["error_rate"] == 4 / 7 and none["human_s"] == 0
    one = budget_point(outs, [True, False], cm)
    assert one["error_rate"] == 0 and one["human_s"] == review_seconds(o, cm)
    assert one["savings_x"] == scratch_seconds(7, 2, cm) / review_seconds(o, cm)


def test_corner_events_and_coverage():
    cc = pd.DataFrame({"log_id": ["L"] * 6, "timestamp_ns": [0, 5, 10, 0, 5, 100 * 10**9],
                       "kind": ["rare_class"] * 3 + ["stationary", "stationary", "stationary"],
                       "track_id": ["a", "a", "a", None, None, None]})
    ev = corner_events(cc, {"L": {0, 5, 10, 100 * 10**9}})
    assert ev["event"].nunique() == 3     # one track, two separate stops
    cov = corner_coverage(ev, {("L", 5)})
    assert abs(cov["event_coverage"] - 2 / 3) < 1e-9 and cov["corner_frames"] == 4 and cov["frame_coverage"] == 0.25
    assert cov["missed_events"] == ["L|stationary|1"]   # the second stop, 100 s later, was not reviewed


def test_run_benchmark_end_to_end_with_the_geometric_model(tmp_path):
    res = run_benchmark([tiny_log()], "geometric", BenchCfg(frame_step=2, budgets=(0.0, 0.2, 1.0)), cache_dir=str(tmp_path))
    df = pd.DataFrame(res.rows)
    assert len(df) == 2 * 3 * 3 and res.num_frames == 5 and res.num_gt > 0
    full = df[df["budget"] == 1.0]
    assert (full["error_rate"] == 0).all() and (full["frames_reviewed"] == 5).all() and (full["event_coverage"] == 1).all()
    zero = df[df["budget"] == 0.0]
    assert (zero["error_rate"] > 0).all() and (zero["human_s"] == 0).all()
    assert (df[df["budget"] == 0.2]["frames_reviewed"] == 1).all()
    assert 0 <= res.map["single_frame"] <= 1 and 0 <= res.map["refined"] <= 1
    assert res.corner["kinds"].get("rare_class", 0) >= 1
