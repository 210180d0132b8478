"""Our centre-distance AP against nuscenes-devkit 1.1.11's own ``accumulate`` / ``calc_ap`` / ``calc_tp``.

Random but realistic scenes (several logs and frames, six classes, jittered boxes, misses, duplicates, class
confusions, false positives, boxes beyond the range, GT without LiDAR points, tied scores, a shuffled prediction
table) are evaluated both ways; per-class per-threshold APs and TP errors must agree to 1e-9.
The devkit is installed with ``pip install --no-deps nuscenes-devkit==1.1.11`` (plus pyquaternion, scikit-learn,
cachetools for its imports); without it this module is skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labeler.classes import TYPICAL_SIZE_M
from labeler.eval import EvalConfig, evaluate

try:
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp
    from nuscenes.eval.detection.data_classes import DetectionBox
    from pyquaternion import Quaternion
except Exception as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"nuscenes-devkit not importable ({type(e).__name__}: {e}); install it with "
                "`pip install --no-deps nuscenes-devkit==1.1.11` plus pyquaternion scikit-learn cachetools",
                allow_module_level=True)

# labeler class -> devkit detection_name (the devkit has no "cyclist")
DEVKIT_NAME = {"car": "car", "truck": "truck", "bus": "bus", "pedestrian": "pedestrian",
               "cyclist": "bicycle", "traffic_cone": "traffic_cone"}
CLASSES = tuple(DEVKIT_NAME)
DIST_THS = (0.5, 1.0, 2.0, 4.0)
COLS = ["log_id", "timestamp_ns", "category", "x", "y", "z", "l", "w", "h", "yaw"]


def make_scene(seed: int, n_logs=2, n_frames=12, gt_classes=CLASSES, fp_only_classes=()):
    """GT and prediction DataFrames for a few logs; realistic sizes, noise, misses and false positives."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    detect_p = {"car": 0.85, "truck": 0.7, "bus": 0.75, "pedestrian": 0.6, "cyclist": 0.5, "traffic_cone": 0.55}
    sigma = {"car": 0.5, "truck": 0.9, "bus": 1.0, "pedestrian": 0.3, "cyclist": 0.4, "traffic_cone": 0.2}
    for li in range(n_logs):
        log = f"log{seed}_{li}"
        for fi in range(n_frames):
            ts = 1_700_000_000_000_000_000 + fi * 100_000_000
            for cat in gt_classes:
                for _ in range(rng.poisson(2.5 if cat in ("car", "pedestrian") else 1.0)):
                    L, W, H = np.array(TYPICAL_SIZE_M[cat]) * rng.uniform(0.85, 1.15, 3)
                    x, y = rng.uniform(-58, 58), rng.uniform(-40, 40)       # some beyond 50 m
                    yaw = rng.uniform(-np.pi, np.pi)
                    npts = int(rng.choice([-1, 0, 3, 25, 200], p=[0.2, 0.1, 0.2, 0.3, 0.2]))
                    gts.append([log, ts, cat, x, y, rng.normal(0, 0.3), L, W, H, yaw, npts])
                    if rng.random() < detect_p[cat]:
                        n_det = 2 if rng.random() < 0.08 else 1                  # occasional duplicate
                        for _ in range(n_det):
                            s = sigma[cat] * (3 if rng.random() < 0.15 else 1)    # heavy tail past the thresholds
                            pc = cat
                            if cat in ("truck", "bus") and rng.random() < 0.2:    # class confusion
                                pc = "bus" if cat == "truck" else "truck"
                            ds = rng.uniform(0.8, 1.2, 3)
                            pyaw = yaw + rng.normal(0, 0.15) + (np.pi if rng.random() < 0.1 else 0.0)
                            pyaw = (pyaw + np.pi) % (2 * np.pi) - np.pi
                            score = float(np.clip(rng.beta(5, 2) - 0.1 * s, 0.01, 0.99))
                            preds.append([log, ts, pc, x + rng.normal(0, s), y + rng.normal(0, s),
                                          rng.normal(0, 0.3), L * ds[0], W * ds[1], H * ds[2], pyaw, score])
            for cat in gt_classes + tuple(fp_only_classes):
                for _ in range(rng.poisson(1.2)):                                # false positives
                    L, W, H = TYPICAL_SIZE_M[cat]
                    preds.append([log, ts, cat, rng.uniform(-55, 55), rng.uniform(-40, 40), 0.0, L, W, H,
                                  rng.uniform(-np.pi, np.pi), float(rng.beta(2, 5))])
            if rng.random() < 0.3:   # a class outside the evaluation, GT only
                gts.append([log, ts, "animal", 8.0, 3.0, 0.0, 1.2, 0.5, 0.9, 0.0, 10])
    gt = pd.DataFrame(gts, columns=COLS + ["num_lidar_pts"])
    pr = pd.DataFrame(preds, columns=COLS + ["score"])
    pr["score"] = pr["score"].round(2)   # many tied scores, across frames and within
    pr = pr.sample(frac=1.0, random_state=seed).reset_index(drop=True)   # frames interleaved in the table
    return pr, gt


def to_evalboxes(df: pd.DataFrame, is_pred: bool) -> EvalBoxes:
    eb = EvalBoxes()
    for r in df.itertuples(index=False):
        if r.category not in DEVKIT_NAME:
            continue
        eb.add_boxes(f"{r.log_id}/{r.timestamp_ns}", [DetectionBox(
            sample_token=f"{r.log_id}/{r.timestamp_ns}",
            translation=(float(r.x), float(r.y), float(r.z)),
            size=(float(r.w), float(r.l), float(r.h)),          # the devkit's order is w, l, h
            rotation=tuple(Quaternion(axis=[0.0, 0.0, 1.0], radians=float(r.yaw)).elements),
            ego_translation=(float(r.x), float(r.y), float(r.z)),  # LiDAR origin = ego: ego_dist = BEV range
            num_pts=-1 if is_pred else int(r.num_lidar_pts),
            detection_name=DEVKIT_NAME[r.category],
            detection_score=float(r.score) if is_pred else -1.0,
        )])
    return eb


def devkit_filter(eb: EvalBoxes, max_dist: dict[str, float]) -> EvalBoxes:
    """The distance and point parts of the devkit's ``filter_eval_boxes`` (its bike-rack part needs a NuScenes db)."""
    for token in eb.sample_tokens:
        eb.boxes[token] = [b for b in eb[token] if b.ego_dist < max_dist[b.detection_name]]
        eb.boxes[token] = [b for b in eb[token] if not b.num_pts == 0]
    return eb


def run_devkit(pr, gt, max_dist):
    gt_eb = devkit_filter(to_evalboxes(gt, False), max_dist)
    pr_eb = devkit_filter(to_evalboxes(pr, True), max_dist)
    out = {}
    for c in CLASSES:
        for t in DIST_THS:
            out[(c, t)] = accumulate(gt_eb, pr_eb, DEVKIT_NAME[c], center_distance, t)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_devkit_accumulate_and_calc_ap(seed):
    pr, gt = make_scene(seed, n_logs=2 + seed % 2, n_frames=10 + 3 * seed)
    cfg = EvalConfig(classes=CLASSES, dist_thresholds_m=DIST_THS, max_range_m=50.0,
                     class_max_range_m={"pedestrian": 40.0, "traffic_cone": 30.0})
    max_dist = {DEVKIT_NAME[c]: cfg.max_range(c) for c in CLASSES}
    res = evaluate(pr, gt, cfg)
    dk = run_devkit(pr, gt, max_dist)

    n_nontrivial = 0
    for c in CLASSES:
        for t in DIST_THS:
            md = dk[(c, t)]
            ours = res.curves[(c, t)]
            ap_dk = calc_ap(md, min_recall=0.1, min_precision=0.1)
            assert res.ap[c][t] == pytest.approx(ap_dk, abs=1e-9), (c, t)
            np.testing.assert_allclose(ours.precision, md.precision, atol=1e-12, err_msg=f"{c} {t}")
            np.testing.assert_allclose(ours.confidence, md.confidence, atol=1e-12, err_msg=f"{c} {t}")
            for m in ("trans_err", "scale_err", "orient_err"):
                np.testing.assert_allclose(getattr(ours, m), getattr(md, m), atol=1e-9, err_msg=f"{c} {t} {m}")
            n_nontrivial += 0.0 < ap_dk < 1.0
        # TP errors at 2 m, as the devkit's DetectionEval computes them (NaN orientation for cones)
        md2 = dk[(c, 2.0)]
        for m in ("trans_err", "scale_err", "orient_err"):
            if c == "traffic_cone" and m == "orient_err":
                assert np.isnan(res.tp_errors[c][m])
            else:
                assert res.tp_errors[c][m] == pytest.approx(calc_tp(md2, 0.1, m), abs=1e-9), (c, m)
    assert n_nontrivial >= 12, "the scene is too easy or too hard to test anything"
    # mAP the devkit's way: mean over classes of the mean over thresholds
    dk_map = np.mean([np.mean([calc_ap(dk[(c, t)], 0.1, 0.1) for t in DIST_THS]) for c in CLASSES])
    assert res.mean_ap == pytest.approx(dk_map, abs=1e-9)


def test_matches_devkit_with_classes_without_gt_or_without_predictions():
    # no bus / cyclist GT at all (predictions of them are all false positives), traffic_cone never predicted
    pr, gt = make_scene(7, gt_classes=("car", "truck", "pedestrian", "traffic_cone"), fp_only_classes=("bus", "cyclist"))
    pr = pr[pr.category != "traffic_cone"].reset_index(drop=True)
    cfg = EvalConfig(classes=CLASSES, max_range_m=50.0)
    res = evaluate(pr, gt, cfg)
    dk = run_devkit(pr, gt, {n: 50.0 for n in DEVKIT_NAME.values()})
    assert res.num_gt["bus"] == 0 and res.num_pred["bus"] > 0
    assert res.num_gt["traffic_cone"] > 0 and res.num_pred["traffic_cone"] == 0
    for c in CLASSES:
        for t in DIST_THS:
            assert res.ap[c][t] == pytest.approx(calc_ap(dk[(c, t)], 0.1, 0.1), abs=1e-9), (c, t)
    assert res.class_ap["bus"] == res.class_ap["cyclist"] == res.class_ap["traffic_cone"] == 0.0
    dk_map = np.mean([np.mean([calc_ap(dk[(c, t)], 0.1, 0.1) for t in DIST_THS]) for c in CLASSES])
    assert res.mean_ap == pytest.approx(dk_map, abs=1e-9)
    assert 0.0 < res.mean_ap < 0.5


def test_matches_devkit_without_filters():
    pr, gt = make_scene(11, n_logs=1, n_frames=15)
    cfg = EvalConfig(classes=CLASSES, max_range_m=None, ignore_empty_gt=False)
    res = evaluate(pr, gt.assign(num_lidar_pts=-1), cfg)
    dk = run_devkit(pr, gt.assign(num_lidar_pts=-1), {n: np.inf for n in DEVKIT_NAME.values()})
    for c in CLASSES:
        for t in DIST_THS:
            assert res.ap[c][t] == pytest.approx(calc_ap(dk[(c, t)], 0.1, 0.1), abs=1e-9), (c, t)
