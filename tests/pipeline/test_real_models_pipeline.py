"""Detectors inside the real pipeline on the real samples (KITTI, nuScenes): the same code path as simulated logs.

mmdet3d models run with random initialisation (no checkpoint can be downloaded here): the point is that they load
once per worker, take our frames, and their outputs land in the tables in our conventions.
"""

from __future__ import annotations

import importlib.util

import pytest

from labeler.io.tables import read_run_record, read_table
from labeler.pipeline.config import load_config
from labeler.pipeline.run import run_pipeline
from tests.realdata import require_real_data

MMDET3D = importlib.util.find_spec("mmdet3d") is not None


def _run(tmp_path, logs, model, night):
    cfg = load_config(None, {"night": night, "input.logs": str(logs), "model.name": model, "simulate.enabled": False,
                             "dask.n_workers": 1, "filter.min_points": 1000}).resolved(str(tmp_path))
    s = run_pipeline(cfg, progress=False, push=False)
    return cfg, s


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("model", [
    "geometric",
    "bev",
    pytest.param("mmdet3d:pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class", marks=pytest.mark.skipif(not MMDET3D, reason="mmdet3d not installed (bash .ci/install-mmdet3d)")),
    pytest.param("mmdet3d:centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d", marks=pytest.mark.skipif(not MMDET3D, reason="mmdet3d not installed (bash .ci/install-mmdet3d)")),
])
def test_models_run_in_the_pipeline_on_kitti_and_nuscenes(tmp_path, model):
    kitti = require_real_data("kitti_object", "training")
    nus = require_real_data("nuscenes_keyframe")
    for logs, n_frames, night in ((kitti, 3, "kitti"), (nus, 1, "nus")):
        cfg, s = _run(tmp_path, logs, model, night)
        assert s.frames_in == n_frames and s.quarantined == 0 and s.reconciles
        rec = read_run_record(cfg.output_dir)
        assert rec["model_version"].startswith(model.split(":")[0])
        frames = read_table(cfg.output_dir, "frames").to_pandas()
        assert (frames.outcome != "filtered").sum() == n_frames  # KITTI samples are not a sequence: all kept
        scores = read_table(cfg.output_dir, "frame_scores").to_pandas()
        assert len(scores) == n_frames
        preds = read_table(cfg.output_dir, "predictions_3d").to_pandas()
        if len(preds):
            assert preds[["x", "y", "z", "l", "w", "h", "yaw"]].notna().all().all()
            assert (preds[["l", "w", "h"]] > 0).all().all()
        if model == "geometric":
            assert len(preds) > 0  # the geometric model finds objects in every real sample
