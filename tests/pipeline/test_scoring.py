import numpy as np

from labeler.pipeline.config import ScoringCfg
from labeler.pipeline.scoring import score_frame, unusual_size


def test_confident_frame_scores_high_and_low_priority():
    boxes = np.array([[10, 0, -1, 4.5, 1.85, 1.6, 0.0], [20, 3, -1, 4.4, 1.8, 1.5, 0.1]])
    s = score_frame(boxes, ["car", "car"], np.array([0.9, 0.85]), np.array([300, 200]), [], ScoringCfg())
    assert s.reasons == []
    assert s.confidence > 0.85 and s.priority < 0.2


def test_reasons_raise_priority():
    cfg = ScoringCfg()
    boxes = np.array([[10, 0, -1, 18.0, 2.6, 3.5, 0.0], [20, 3, -1, 4.4, 1.8, 1.5, 0.1]])
    s = score_frame(boxes, ["truck", "car"], np.array([0.9, 0.3]), np.array([300, 5]), ["camera_black:front"], cfg)
    assert s.reasons == ["low_score", "sparse_box", "unusual_size", "camera_black:front"]
    ok = score_frame(boxes[1:], ["car"], np.array([0.9]), np.array([300]), [], cfg)
    assert s.priority > ok.priority + 1.0 and s.confidence < ok.confidence


def test_unusual_size():
    boxes = np.array([[0, 0, 0, 4.5, 1.85, 1.6, 0], [0, 0, 0, 2.3, 1.4, 1.5, 0], [0, 0, 0, 0.6, 0.6, 1.7, 0]])
    assert list(unusual_size(["car", "car", "pedestrian"], boxes, 3.0)) == [False, True, False]


def test_tta_disagreement_is_a_reason():
    boxes = np.array([[10, 0, -1, 4.5, 1.85, 1.6, 0.0]])
    calm = score_frame(boxes, ["car"], np.array([0.9]), np.array([300]), [], ScoringCfg(), uncertainty=np.array([0.05]))
    torn = score_frame(boxes, ["car"], np.array([0.9]), np.array([300]), [], ScoringCfg(), uncertainty=np.array([0.6]))
    assert calm.reasons == [] and torn.reasons == ["tta_disagreement"] and torn.priority > calm.priority
