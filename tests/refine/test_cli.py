import argparse

import pytest

from labeler.errors import ConfigError
from labeler.refine.cli import _class_scores, _from_pipeline, _refine_cfg
from labeler.refine.efficiency import BenchCfg


def test_class_scores_and_refine_overrides_name_the_fix():
    assert _class_scores("car=0.45, truck=0.4", "--accept-raw") == {"car": 0.45, "truck": 0.4}
    with pytest.raises(ConfigError, match=r"lorry.*known.*car=0.45"):
        _class_scores("lorry=0.4", "--accept-raw")
    r = _refine_cfg(["extrapolate_s=0.5", "track.max_coast_s=2"])
    assert r.extrapolate_s == 0.5 and r.track.max_coast_s == 2.0
    with pytest.raises(ConfigError, match=r"unknown setting.*extrapolate_s"):
        _refine_cfg(["extrapolate_frames=3"])


def test_benchmark_settings_from_the_nightly_config_unless_given():
    args = argparse.Namespace(config="pipelines/nightly.yaml", min_score=0.3, accept_score=0.3, accept_refined=None,
                              refine=None, refine_step=0, spread=None, propagate=None)
    cfg = _from_pipeline(BenchCfg(), args)
    from labeler.pipeline.config import load_config

    nightly = load_config("pipelines/nightly.yaml")
    assert cfg.accept_refined == nightly.selection.accept_score_by_class and cfg.refine == nightly.refine
    assert cfg.refine_step == (1 if nightly.refine.context_hz >= 10 else 0)
    assert cfg.pred_min_score == nightly.model.score_threshold
    assert cfg.spread_s == nightly.selection.spread_s > 0 and cfg.propagate == nightly.review.propagate
    assert cfg.propagate.enabled
    mine = _from_pipeline(BenchCfg(refine_step=5), argparse.Namespace(**{**vars(args), "refine_step": 5}))
    assert mine.refine_step == 5
    from labeler.refine.propagate import PropagateCfg

    given = _from_pipeline(BenchCfg(spread_s=0.0, propagate=PropagateCfg(enabled=True, follow_s=1.0)),
                           argparse.Namespace(**{**vars(args), "spread": 0.0, "propagate": ["follow_s=1"]}))
    assert given.spread_s == 0.0 and given.propagate.follow_s == 1.0
