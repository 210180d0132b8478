import pytest

from labeler.errors import ConfigError
from labeler.pipeline.config import load_config
from labeler.pipeline.rules import compile_rule

FIELDS = {"speed_mps": 7.0, "num_points": 30000, "frame_index": 3, "log_id": "a", "brightness": 40.0, "hour": 22,
          "tags": ["night", "speed:medium"]}


def test_rules_over_fields_and_tags():
    assert compile_rule("r", 'speed_mps > 5 and tag == "night"')(FIELDS)
    assert not compile_rule("r", 'speed_mps > 5 and tag == "day"')(FIELDS)
    assert compile_rule("r", 'tag != "day" and not (num_points < 1000)')(FIELDS)
    assert compile_rule("r", '"speed:medium" in tags or hour < 6')(FIELDS)
    assert compile_rule("r", '2 < frame_index <= 3 and log_id in ("a", "b")')(FIELDS)
    assert not compile_rule("r", "brightness >= 60")(FIELDS)


@pytest.mark.parametrize("text, msg", [
    ("speed > 5", "unknown field 'speed'"),
    ("__import__('os').system('x')", "Call"),
    ("speed_mps >", "not a valid expression"),
    ("tag > 'a'", "only supports == and !="),
    ("num_points.real > 1", "Attribute"),
])
def test_bad_rules_are_refused_at_load_time(tmp_path, text, msg):
    p = tmp_path / "p.yaml"
    p.write_text("filter:\n  drop_rules:\n    fast_night: " + repr(text) + "\n")
    with pytest.raises(ConfigError, match="fast_night") as e:
        load_config(p)
    assert msg in str(e.value)


def test_model_tags_only_in_flag_rules(tmp_path):
    fields = {**FIELDS, "tags": ["day", "speed:slow", "obj:bus", "vru_near"]}
    assert compile_rule("r", 'tag == "obj:bus" and "vru_near" in tags')(fields)
    assert compile_rule("r", 'tag == "obj:bus" and speed_mps > 5').model_tags() == ["obj:bus"]
    assert compile_rule("r", 'tag == "night"').model_tags() == []
    ok = tmp_path / "ok.yaml"
    ok.write_text("filter:\n  flag_rules:\n    crowd: 'tag == \"crowded\"'\n")
    assert load_config(ok).filter.flag_rules == {"crowd": 'tag == "crowded"'}
    bad = tmp_path / "bad.yaml"
    bad.write_text("filter:\n  drop_rules:\n    no_bus: 'tag == \"obj:bus\"'\n")
    with pytest.raises(ConfigError, match="no_bus.*obj:bus.*before the detector.*flag_rules"):
        load_config(bad)
