import json

import numpy as np
import pandas as pd
import pytest

from labeler.refine.rescore import FEATURES, BoxScorer, RescoreCfg, fit_scorer, load_scorer
from labeler.refine.rescore_train import auc, average_precision, box_labels
from labeler.refine.smoothing import RefineCfg, refine_log
from tests.refine.test_smoothing import T0, _car_track

F = {name: i for i, name in enumerate(FEATURES)}


def test_features_of_a_hand_made_track():
    """The car of _car_track: 18 detections over 20 frames (2 missed), 80 points each, 0.7 scores, at 11-21 m."""
    preds, poses = _car_track()
    refined, _, X = refine_log(preds, poses, log_id="L", return_features=True)
    r = refined.to_pandas()
    assert X.shape == (len(r), len(FEATURES))
    assert (X[:, F["n_det"]] == 18).all() and (X[:, F["span_frames"]] == 20).all()
    np.testing.assert_allclose(X[:, F["det_fraction"]], 0.9)
    np.testing.assert_allclose(X[:, F["score_max"]], 0.7)
    np.testing.assert_allclose(X[:, F["log_points_max"]], np.log1p(80))
    assert (X[:, F["class_index"]] == 0).all()  # car
    np.testing.assert_allclose(X[:, F["class_share"]], 17 / 18, atol=1e-9)  # one detection voted truck
    np.testing.assert_allclose(X[:, F["speed_mps"]], 6.0, atol=1.0)
    interp = (r["source"] == "interpolated").to_numpy()
    assert interp.sum() == 2
    assert (X[interp, F["detected"]] == 0).all() and (X[interp, F["det_score"]] == 0).all()
    assert (X[~interp, F["detected"]] == 1).all()
    np.testing.assert_allclose(X[~interp, F["det_score"]], 0.7)
    # range from the LiDAR (identity poses: the box's own x, y) and distance to the nearer track end
    np.testing.assert_allclose(X[:, F["range_m"]], np.hypot(r["x"], r["y"]), atol=1e-6)
    k = (r["timestamp_ns"].to_numpy() - T0) / 1e8
    np.testing.assert_allclose(X[:, F["edge_s"]], np.minimum(k, 19 - k) / 10, atol=1e-9)


def _split_on(feature: str, threshold: float, low: float, high: float) -> BoxScorer:
    """A one-tree model: rows with ``feature <= threshold`` get logit ``low``, the others ``high``."""
    return BoxScorer({"features": list(FEATURES), "init": 0.0, "learning_rate": 1.0, "max_depth": 1,
                      "trees": [{"left": [1, -1, -1], "right": [2, -1, -1], "feature": [F[feature], -2, -2],
                                 "threshold": [threshold, -2.0, -2.0], "value": [0.0, low, high]}]})


def test_refine_log_uses_the_model_scores(tmp_path):
    """A model that distrusts filled-in boxes: with rescoring on, the two interpolated boxes score sigmoid(-2), the
    detected ones sigmoid(2); without it every box has the track score."""
    path = _split_on("detected", 0.5, -2.0, 2.0).save(str(tmp_path / "m.json"))
    preds, poses = _car_track()
    plain, _ = refine_log(preds, poses, log_id="L")
    cfg = RefineCfg(rescore=RescoreCfg(enabled=True, model_path=path))
    res, _ = refine_log(preds, poses, log_id="L", cfg=cfg)
    p, q = plain.to_pandas(), res.to_pandas()
    assert len(p) == len(q)
    interp = q["source"] == "interpolated"
    np.testing.assert_allclose(q.loc[interp, "score"], 1 / (1 + np.exp(2.0)))
    np.testing.assert_allclose(q.loc[~interp, "score"], 1 / (1 + np.exp(-2.0)))
    assert p.loc[p["source"] == "detected", "score"].nunique() == 1


def test_exported_trees_match_scikit_learn():
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, len(FEATURES)))
    y = ((X[:, 1] + 0.5 * X[:, 4] ** 2 - X[:, 20] + rng.normal(0, 0.5, 600)) > 0.3).astype(int)
    m = fit_scorer(X, y, n_estimators=30, max_depth=3)
    ref = GradientBoostingClassifier(n_estimators=30, max_depth=3, learning_rate=0.1, subsample=0.8,
                                     random_state=0).fit(X, y)
    np.testing.assert_allclose(m.predict(X), ref.predict_proba(X)[:, 1], atol=1e-9)
    # it learnt something: held-out rows ranked far better than chance
    Xt = rng.normal(size=(400, len(FEATURES)))
    yt = ((Xt[:, 1] + 0.5 * Xt[:, 4] ** 2 - Xt[:, 20]) > 0.3).astype(int)
    assert auc(yt, m.predict(Xt)) > 0.85


def test_saved_model_round_trips_and_refuses_other_features(tmp_path):
    m = _split_on("n_det", 3.5, -1.0, 1.0)
    path = m.save(str(tmp_path / "m.json"))
    X = np.zeros((2, len(FEATURES)))
    X[1, F["n_det"]] = 10
    np.testing.assert_allclose(load_scorer(path).predict(X), 1 / (1 + np.exp([1.0, -1.0])))
    with open(path) as f:
        spec = json.load(f)
    spec["features"] = spec["features"][:-1]
    with pytest.raises(ValueError, match="retrain it"):
        BoxScorer(spec)
    with pytest.raises(FileNotFoundError, match="train-rescorer"):
        load_scorer(str(tmp_path / "missing.json"))


def test_box_labels_match_one_to_one_and_need_the_class():
    pred = pd.DataFrame({"x": [0.0, 0.5, 10.0, 20.0], "y": [0.0, 0.0, 0.0, 0.0],
                         "category": ["car", "car", "car", "pedestrian"]})
    gt = pd.DataFrame({"x": [0.2, 10.5, 20.3], "y": [0.0, 0.0, 0.0], "category": ["car", "truck", "pedestrian"]})
    # one of the two cars at the first GT is a duplicate; the car at 10 m is a truck; the pedestrian is right
    assert box_labels(pred, gt).tolist() == [1, 0, 0, 1]
    assert box_labels(pred, gt.iloc[:0]).tolist() == [0, 0, 0, 0]


def test_ranking_metrics():
    y = np.array([1, 1, 0, 0])
    assert auc(y, [0.9, 0.8, 0.2, 0.1]) == 1.0 and auc(y, [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert average_precision(y, [0.9, 0.8, 0.2, 0.1]) == 1.0
    # ranked: 0.9 (y=1), 0.8 (0), 0.2 (0), 0.1 (1): precision 1/1 and 2/4 at the positives
    assert average_precision(y, [0.9, 0.1, 0.8, 0.2]) == pytest.approx((1 + 2 / 4) / 2)


def test_train_rescorer_command_writes_a_model_the_pipeline_config_can_use(tmp_path):
    """`labeler train-rescorer` on two short simulated logs (one held out for validation): a loadable model with its
    provenance; a pipeline config can switch it on and point at it."""
    from labeler.cli import main
    from labeler.pipeline.config import load_config
    from labeler.simulate import SimConfig, simulate_log

    logs = tmp_path / "logs"
    cfg = SimConfig(duration_s=1.5, azimuth_res_deg=0.4, cameras=("front",), image_width=160, image_height=90)
    for i in range(2):
        simulate_log(str(logs), f"sim-9000-00{i}", 11 + i, cfg, threads=1)
    out = tmp_path / "m.json"
    rc = main(["train-rescorer", "--logs", str(logs), "--state", str(tmp_path / "state"), "--val-logs", "1",
               "--trees", "5", "--out", str(out)])
    assert rc == 0
    m = load_scorer(str(out))
    assert m.version.startswith("rescorer-") and len(m.trees) == 5
    assert m.spec["trained_on"]["logs"] == ["sim-9000-000", "sim-9000-001"]
    assert m.spec["trained_on"]["boxes"] > 0 and 0.0 < m.spec["trained_on"]["right"] < 1.0
    assert m.spec["detector_version"][0].startswith("bev-")
    p = m.predict(np.zeros((3, len(FEATURES))))
    assert ((p > 0) & (p < 1)).all()
    pc = load_config("pipelines/nightly.yaml", {"refine.rescore.enabled": True, "refine.rescore.model_path": str(out)})
    assert pc.refine.rescore == RescoreCfg(enabled=True, model_path=str(out))


def test_the_shipped_model_loads_and_belongs_to_the_shipped_detector():
    from labeler.refine.bank import resolve_model

    m = load_scorer()
    assert m.version.startswith("rescorer-") and len(m.trees) > 0
    assert m.spec["detector_version"] == [resolve_model("bev").version], \
        "models/box_rescorer.json was trained on another detector: retrain it with `labeler train-rescorer`"
