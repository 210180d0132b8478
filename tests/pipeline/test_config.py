import pytest

from labeler.errors import ConfigError
from labeler.pipeline.config import PipelineConfig, load_config


def test_shipped_yaml_loads_and_resolves(tmp_path):
    cfg = load_config("pipelines/nightly.yaml").resolved(str(tmp_path))
    assert cfg.input.logs == f"{tmp_path}/logs"
    assert cfg.output_dir == f"{tmp_path}/runs/demo"
    assert cfg.model.name == "bev" and cfg.model.tta


def test_unknown_key_and_bad_type_name_the_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("filter:\n  min_pointz: 3\n")
    with pytest.raises(ConfigError, match=r"min_pointz.*filter"):
        load_config(p)
    p.write_text("selection:\n  budget_fraction: lots\n")
    with pytest.raises(ConfigError, match="selection.budget_fraction"):
        load_config(p)
    p.write_text("dask:\n  scheduler: localhost:8786\n")
    with pytest.raises(ConfigError, match="tcp://"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_overrides():
    cfg = load_config(None, {"dask.scheduler": "tcp://127.0.0.1:8786", "selection.budget_fraction": 0.5})
    assert cfg.dask.scheduler == "tcp://127.0.0.1:8786" and cfg.selection.budget_fraction == 0.5
    assert PipelineConfig().selection.budget_fraction == 0.2


def test_refinement_signals_and_accept_scores_are_typed_config(tmp_path):
    cfg = load_config("pipelines/nightly.yaml")
    assert cfg.refine.enabled and cfg.refine.extrapolate_s == 0.0 and cfg.selection.strategy == "diverse"
    assert cfg.selection.accept_threshold("car") == cfg.selection.accept_score_by_class["car"]
    assert cfg.selection.accept_threshold("animal") == cfg.selection.accept_score
    over = load_config(None, {"refine.track.max_coast_s": 2, "selection.accept_score_by_class": {"truck": 0.5}})
    assert over.refine.track.max_coast_s == 2.0 and over.selection.accept_threshold("truck") == 0.5
    p = tmp_path / "bad.yaml"
    p.write_text("selection:\n  accept_score_by_class:\n    lorry: 0.4\n")
    with pytest.raises(ConfigError, match=r"accept_score_by_class.*lorry.*known"):
        load_config(p)
    p.write_text("refine:\n  extrapolate_frames: 3\n")
    with pytest.raises(ConfigError, match=r"extrapolate_frames.*refine.*extrapolate_s"):
        load_config(p)
    p.write_text("selection:\n  strategy: best\n")
    with pytest.raises(ConfigError, match="diverse"):
        load_config(p)
