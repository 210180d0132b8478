"""Hand-made cases with answers worked out on paper (no mocks)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from labeler.classes import TYPICAL_SIZE_M
from labeler.eval import (
    EvalConfig,
    bev_iou_ap,
    calc_ap,
    evaluate,
    interpolated_ap,
    nuscenes_ap,
    nuscenes_curve,
    recall_at_iou,
)
from labeler.eval.report import format_result, plot_pr_curves

ALL_T = (0.5, 1.0, 2.0, 4.0)


def box(cat, x, y, log="log0", ts=0, yaw=0.0, score=None, **extra):
    l, w, h = TYPICAL_SIZE_M[cat]
    r = {"log_id": log, "timestamp_ns": ts, "category": cat, "x": float(x), "y": float(y), "z": 0.0,
         "l": l, "w": w, "h": h, "yaw": yaw, **extra}
    if score is not None:
        r["score"] = float(score)
    return r


def df(rows, pred=False):
    cols = ["log_id", "timestamp_ns", "category", "x", "y", "z", "l", "w", "h", "yaw"] + (["score"] if pred else [])
    return pd.DataFrame(rows, columns=cols if not rows else None)


def cars(n, ts=0, dx=0.0):
    """n cars spread along +x, one frame, 10 m apart."""
    return [box("car", 10.0 + 10 * k + dx, 2.0, ts=ts) for k in range(n)]


def as_preds(rows, scores):
    return df([{**r, "score": float(s)} for r, s in zip(rows, scores)], pred=True)


CAR = EvalConfig(classes=("car",))


def test_perfect_predictions_give_ap_one():
    gt = cars(4) + cars(3, ts=1)
    pr = as_preds(gt, np.linspace(0.9, 0.3, len(gt)))
    res = evaluate(pr, df(gt), CAR)
    for t in ALL_T:
        assert res.ap["car"][t] == pytest.approx(1.0, abs=1e-12)
    assert res.mean_ap == pytest.approx(1.0)
    assert res.iou_ap["car"] == pytest.approx(1.0)
    assert res.tp_errors["car"] == {"trans_err": 0.0, "scale_err": 0.0, "orient_err": 0.0}
    assert res.num_gt["car"] == 7 and res.num_pred["car"] == 7
    assert res.recall_at_score["car"] == 1.0
    assert recall_at_iou(pr, df(gt), "car", iou=0.5) == 1.0


def test_predictions_three_metres_off_only_match_at_four_metres():
    gt = cars(4)
    pr = as_preds(cars(4, dx=3.0), [0.9, 0.8, 0.7, 0.6])
    res = evaluate(pr, df(gt), CAR)
    assert [res.ap["car"][t] for t in ALL_T] == pytest.approx([0.0, 0.0, 0.0, 1.0], abs=1e-12)
    assert res.class_ap["car"] == pytest.approx(0.25)
    assert res.mean_ap == pytest.approx(0.25)
    # 3 m along a 4.5 m car: BEV IoU = 1.5 / 7.5 = 0.2 -> no match at 0.5
    assert res.iou_ap["car"] == 0.0
    assert recall_at_iou(pr, df(gt), "car", iou=0.5) == 0.0
    assert recall_at_iou(pr, df(gt), "car", iou=0.19) == 1.0


def test_half_the_gt_missed():
    # 4 GT, the 2 predictions are perfect: recall 0.25, 0.5 at precision 1; the devkit's curve is 1 up to
    # recall 0.5 (grid points 0..50) and 0 after (right=0). calc_ap keeps grid points 11..100 (90 of them):
    # 40 points at 1 - 0.1 = 0.9 -> mean 40 * 0.9 / 90 = 0.4, / 0.9 -> 4/9.
    gt = cars(4)
    pr = as_preds(gt[:2], [0.9, 0.8])
    res = evaluate(pr, df(gt), CAR)
    for t in ALL_T:
        assert res.ap["car"][t] == pytest.approx(4 / 9, abs=1e-12)
    # KITTI R40: precision 1 at recall points 1/40..20/40, 0 at 21/40..1 -> 0.5; R11: 0, .1, .., .5 -> 6/11
    assert res.iou_ap["car"] == pytest.approx(0.5)
    assert bev_iou_ap(pr, df(gt), "car", iou=0.5, num_points=11) == pytest.approx(6 / 11)
    assert res.recall_at_score["car"] == 0.5
    assert recall_at_iou(pr, df(gt), "car") == 0.5


def test_false_positive_with_the_highest_score():
    # 2 GT; predictions: FP (0.9), TP (0.8), TP (0.7). Raw curve: (rec, prec) = (0, 0), (0.5, 0.5), (1, 2/3).
    # Linear interpolation on the grid r = i/100: prec = r on [0, 0.5], 0.5 + (r - 0.5)/3 on [0.5, 1].
    # Sum of max(prec - 0.1, 0) over i = 11..100: sum_{k=1..40} k/100 = 8.2 plus
    # sum_{k=1..50} (0.4 + k/300) = 20 + 4.25 -> 32.45. AP = 32.45 / 90 / 0.9 = 32.45 / 81.
    gt = cars(2)
    fp = box("car", 30.0, -20.0, score=0.9)
    pr = df([fp] + [{**g, "score": s} for g, s in zip(gt, (0.8, 0.7))], pred=True)
    expected = 32.45 / 81
    res = evaluate(pr, df(gt), CAR)
    for t in ALL_T:
        assert res.ap["car"][t] == pytest.approx(expected, abs=1e-12)
    assert 1.0 - res.class_ap["car"] == pytest.approx(1 - expected, abs=1e-12)  # what the FP costs vs perfect
    # the same FP with the lowest score costs almost nothing: the raw curve is (0.5, 1), (1, 1), (1, 2/3) and
    # np.interp at the last grid point r = 1 returns the last of the repeated recalls, precision 2/3 (a devkit
    # quirk): AP = (89 * 0.9 + (2/3 - 0.1)) / 90 / 0.9
    pr_low = pr.assign(score=[0.1, 0.8, 0.7])
    assert nuscenes_ap(pr_low, df(gt), "car", 2.0) == pytest.approx((89 * 0.9 + (2 / 3 - 0.1)) / 81, abs=1e-12)
    # BEV-IoU R40: raw precision at recall 0.5 is 0.5, at recall 1 is 2/3; envelope = 2/3 everywhere
    assert res.iou_ap["car"] == pytest.approx(2 / 3)


def test_empty_predictions_score_zero():
    gt = cars(3)
    res = evaluate(df([], pred=True), df(gt), CAR)
    assert all(res.ap["car"][t] == 0.0 for t in ALL_T)
    assert res.mean_ap == 0.0 and res.iou_ap["car"] == 0.0
    assert res.recall_at_score["car"] == 0.0
    assert math.isnan(res.precision_at_score["car"])
    assert res.tp_errors["car"]["trans_err"] == 1.0  # the devkit's value when nothing matched
    assert recall_at_iou(df([], pred=True), df(gt), "car") == 0.0


def test_empty_everything():
    res = evaluate(df([], pred=True), df([]))
    assert res.mean_ap == 0.0
    assert all(n == 0 for n in res.num_gt.values())
    assert math.isnan(recall_at_iou(df([], pred=True), df([]), "car"))
    assert "mean" in res.format()


def test_class_without_gt_scores_zero_and_counts_in_map_like_the_devkit():
    gt = cars(2)
    pr = as_preds(gt, [0.9, 0.8])
    pr = pd.concat([pr, df([box("pedestrian", 5.0, 5.0, score=0.95)], pred=True)], ignore_index=True)
    cfg = EvalConfig(classes=("car", "pedestrian"))
    res = evaluate(pr, df(gt), cfg)
    assert res.num_gt["pedestrian"] == 0 and res.num_pred["pedestrian"] == 1
    assert res.class_ap["pedestrian"] == 0.0
    assert res.class_ap["car"] == pytest.approx(1.0)
    assert res.mean_ap == pytest.approx(0.5)
    assert math.isnan(res.recall_at_score["pedestrian"])
    # opt-in: leave classes without GT out of the means
    res2 = evaluate(pr, df(gt), EvalConfig(classes=("car", "pedestrian"), map_classes_with_gt_only=True))
    assert res2.mean_ap == pytest.approx(1.0)
    assert res2.mean_iou_ap == pytest.approx(1.0)


def test_each_gt_matched_at_most_once_and_only_within_its_frame():
    gt = [box("car", 10, 0, ts=0)]
    # two predictions on the same GT: the second is a FP; one on the same place in another frame: FP
    pr = df([box("car", 10, 0, ts=0, score=0.9), box("car", 10.1, 0, ts=0, score=0.8),
             box("car", 10, 0, ts=1, score=0.7)], pred=True)
    curve = nuscenes_curve(pr, df(gt), "car", 2.0)
    assert curve.num_tp == 1 and curve.num_gt == 1 and curve.num_pred == 3
    # the TP comes first; np.interp at recall 1 returns the last point (1/3): AP = (89 * 0.9 + 1/3 - 0.1) / 81
    assert nuscenes_ap(pr, df(gt), "car", 2.0) == pytest.approx((89 * 0.9 + 1 / 3 - 0.1) / 81, abs=1e-12)
    # same position but another log: no match either
    gt_other_log = [box("car", 10, 0, log="log1", ts=0)]
    assert nuscenes_ap(pr, df(gt_other_log), "car", 4.0) == 0.0


def test_greedy_takes_the_closest_gt_and_thresholds_are_strict():
    gt = [box("car", 10, 0), box("car", 11.5, 0)]
    pr = df([box("car", 11.2, 0, score=0.9)], pred=True)
    # the prediction takes GT at 11.5 (0.3 m) not 10 (1.2 m): recall 0.5 at 0.5 m threshold
    c = nuscenes_curve(pr, df(gt), "car", 0.5)
    assert c.num_tp == 1
    # distance exactly equal to the threshold is not a match (devkit: min_dist < dist_th)
    gt1 = [box("car", 10, 0)]
    pr1 = df([box("car", 11, 0, score=0.9)], pred=True)
    assert nuscenes_curve(pr1, df(gt1), "car", 1.0).num_tp == 0
    assert nuscenes_curve(pr1, df(gt1), "car", 2.0).num_tp == 1


def test_range_filter_and_empty_gt():
    gt = df([box("car", 10, 0), box("car", 60, 0), box("car", 20, 0)]).assign(num_lidar_pts=[5, 5, 0])
    pr = df([box("car", 10, 0, score=0.9), box("car", 70, 0, score=0.95), box("car", 20, 0, score=0.2)], pred=True)
    res = evaluate(pr, gt, CAR)
    # left: GT at 10 m (the 60 m one is out of range, the 20 m one has no point); preds at 10 and 20 m
    assert res.num_gt["car"] == 1 and res.num_pred["car"] == 2
    assert res.ap["car"][2.0] == pytest.approx((89 * 0.9 + 0.5 - 0.1) / 81, abs=1e-12)  # the FP has the lowest score
    res_all = evaluate(pr, gt, EvalConfig(classes=("car",), max_range_m=None, ignore_empty_gt=False))
    assert res_all.num_gt["car"] == 3 and res_all.num_pred["car"] == 3
    # per-class override
    res_far = evaluate(pr, gt, EvalConfig(classes=("car",), class_max_range_m={"car": 100.0}))
    assert res_far.num_gt["car"] == 2


def test_other_categories_are_ignored_and_classes_do_not_mix():
    gt = df([box("car", 10, 0), box("animal", 15, 0)])
    pr = df([box("truck", 10, 0, score=0.9), box("animal", 15, 0, score=0.9)], pred=True)
    res = evaluate(pr, gt, EvalConfig(classes=("car", "truck")))
    assert res.class_ap["car"] == 0.0 and res.class_ap["truck"] == 0.0
    assert res.num_gt == {"car": 1, "truck": 0}
    assert res.num_pred == {"car": 0, "truck": 1}


def test_bev_iou_matching_by_hand():
    # a 4 x 2 box shifted by 1 m along its length: IoU 6 / 10 = 0.6; by 2 m: 4 / 12 = 1/3
    base = {"log_id": "l", "timestamp_ns": 0, "category": "car", "y": 0.0, "z": 0.0, "l": 4.0, "w": 2.0, "h": 1.5, "yaw": 0.0}
    gt = pd.DataFrame([{**base, "x": 10.0}, {**base, "x": 30.0}])
    pr = pd.DataFrame([{**base, "x": 11.0, "score": 0.9}, {**base, "x": 32.0, "score": 0.8}])
    assert recall_at_iou(pr, gt, "car", iou=0.5) == 0.5
    assert recall_at_iou(pr, gt, "car", iou=0.3) == 1.0
    assert recall_at_iou(pr, gt, "car", iou=0.3, min_score=0.85) == 0.5
    assert recall_at_iou(pr, gt, "car", iou=0.61) == 0.0
    # rotating a square-footprint box by 90 degrees changes nothing
    sq = {**base, "l": 2.0, "w": 2.0}
    assert recall_at_iou(pd.DataFrame([{**sq, "x": 5.0, "yaw": np.pi / 2, "score": 0.5}]),
                         pd.DataFrame([{**sq, "x": 5.0}]), "car", iou=0.999) == 1.0
    # 0.5 IoU AP: TP then FP at recall 0.5 -> R40 = 0.5
    assert bev_iou_ap(pr, gt, "car", iou=0.5) == pytest.approx(0.5)


def test_interpolated_ap_and_calc_ap_helpers():
    assert interpolated_ap([1.0], [1.0], 40) == 1.0
    assert interpolated_ap([0.5, 1.0], [1.0, 0.5], 11) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert interpolated_ap([], [], 40) == 0.0
    with pytest.raises(ValueError):
        interpolated_ap([1.0], [1.0], 20)
    assert calc_ap(np.ones(101)) == pytest.approx(1.0)
    assert calc_ap(np.full(101, 0.1)) == 0.0


def test_pyarrow_input_and_tie_breaking_is_deterministic():
    gt = cars(3)
    pr = as_preds(gt, [0.5, 0.5, 0.5])
    res_pd = evaluate(pr, df(gt), CAR)
    res_pa = evaluate(pa.Table.from_pandas(pr), pa.Table.from_pandas(df(gt).assign(num_lidar_pts=-1)), CAR)
    assert res_pd.ap == res_pa.ap
    assert res_pd.class_ap["car"] == pytest.approx(1.0)


def test_config_validation_and_missing_columns():
    with pytest.raises(ValueError):
        EvalConfig(tp_dist_threshold_m=3.0)
    with pytest.raises(ValueError):
        EvalConfig(iou_ap_points=20)
    with pytest.raises(ValueError, match="score"):
        evaluate(df(cars(1)), df(cars(1)))
    cfg = EvalConfig()
    assert cfg.iou_threshold("car") == 0.5 and cfg.iou_threshold("pedestrian") == 0.25
    assert cfg.iou_threshold("animal") == 0.5
    with pytest.raises(Exception):
        cfg.max_range_m = 10  # frozen


def test_tp_errors_by_hand():
    gt = [box("car", 10, 0)]
    p = box("car", 10.3, 0.4, yaw=0.2, score=0.9)   # 0.5 m off, 0.2 rad off
    p["l"] = 4.5 * 0.9                                # ASE = 1 - 0.9
    res = evaluate(df([p], pred=True), df(gt), CAR)
    e = res.tp_errors["car"]
    assert e["trans_err"] == pytest.approx(0.5)
    assert e["scale_err"] == pytest.approx(0.1)
    assert e["orient_err"] == pytest.approx(0.2)
    assert res.ap["car"][0.5] == 0.0 and res.ap["car"][1.0] == pytest.approx(1.0)


def test_report_table_and_plot(tmp_path):
    gt = cars(4) + [box("pedestrian", 5, 5)]
    pr = as_preds(gt[:3] + gt[4:], [0.9, 0.6, 0.2, 0.7])
    res = evaluate(pr, df(gt))
    t = res.to_table()
    assert list(t["class"]) == list(res.config.classes)
    assert {"AP@0.5m", "AP@4m", "AP", "AP_BEV_IoU", "recall@score", "ATE", "ASE", "AOE"} <= set(t.columns)
    text = format_result(res)
    assert text.splitlines()[0].startswith("class")
    assert "car" in text and "mAP" in text and "traffic_cone" in text
    assert str(res) == text
    png = plot_pr_curves(res, tmp_path / "pr" / "curves.png")
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_realistic_size_is_fast():
    import time

    rng = np.random.default_rng(0)
    rows_g, rows_p = [], []
    for ts in range(200):
        for k in range(30):
            x, y = rng.uniform(-45, 45, 2)
            rows_g.append(box("car", x, y, ts=ts))
            if rng.random() < 0.8:
                rows_p.append(box("car", x + rng.normal(0, 0.5), y + rng.normal(0, 0.5), ts=ts, score=rng.random()))
        for k in range(10):
            rows_p.append(box("car", *rng.uniform(-45, 45, 2), ts=ts, score=rng.random() * 0.5))
    t0 = time.perf_counter()
    res = evaluate(df(rows_p, pred=True), df(rows_g), CAR)
    dt = time.perf_counter() - t0
    assert 0.3 < res.class_ap["car"] < 1.0
    assert dt < 30, f"evaluate took {dt:.1f} s for {len(rows_p)} predictions"
