import pyarrow as pa
import pytest

from labeler.schemas import FRAMES, PREDICTIONS_3D, TABLES, check_keys, to_table


def test_every_table_has_keys_and_run_id():
    assert {"frames", "quarantine", "predictions_3d", "boxes_2d", "frame_scores", "review_tasks"} <= set(TABLES)
    for spec in TABLES.values():
        assert spec.keys and set(spec.keys) <= set(spec.columns)
        assert "run_id" in spec.columns and "log_id" in spec.keys
    for name in ("predictions_3d", "boxes_2d", "frame_scores", "review_tasks"):
        assert "model_version" in TABLES[name].columns


def _pred(obj):
    return {"log_id": "l", "timestamp_ns": 1, "object_id": obj, "run_id": "r", "x": 0, "y": 0, "z": 0, "l": 1, "w": 1, "h": 1,
            "yaw": 0, "category": "car", "score": 0.5, "num_points": 3, "uncertainty": None, "model_name": "m",
            "model_version": "v"}


def test_to_table_checks_columns_and_keys():
    t = to_table(PREDICTIONS_3D, [_pred("a"), _pred("b")])
    assert t.schema == PREDICTIONS_3D.schema
    check_keys(PREDICTIONS_3D, t)
    with pytest.raises(ValueError, match="duplicated keys"):
        check_keys(PREDICTIONS_3D, to_table(PREDICTIONS_3D, [_pred("a"), _pred("a")]))
    with pytest.raises(ValueError, match="missing columns"):
        to_table(FRAMES, [{"log_id": "l"}])
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        to_table(PREDICTIONS_3D, [{**_pred("a"), "x": "not a number"}])


def test_missing_nullable_column_is_null():
    row = _pred("a")
    del row["uncertainty"]
    t = to_table(PREDICTIONS_3D, [row])
    assert t.column("uncertainty").to_pylist() == [None]
    del row["score"]
    with pytest.raises(ValueError, match="score"):
        to_table(PREDICTIONS_3D, [row])
