"""Review propagation end to end: the nightly job (refinement on) pushes review tasks to a real Label Studio, a
person's corrections (here: the simulator's ground truth drawn as the annotation) come back through ``labeler
pull``, and the auto-accepted frames of the same log end with fewer label errors than the run accepted, while the
reviewed frames stay exactly what the person drew."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from labeler.classes import CLASSES
from labeler.eval.groundtruth import map_category
from labeler.geometry.bev import BevGrid
from labeler.geometry.boxes import BOX_COLUMNS
from labeler.io.tables import read_table
from labeler.logs.native import read_log_index
from labeler.pipeline.config import load_config
from labeler.pipeline.run import run_pipeline
from labeler.refine.efficiency import match_frame
from labeler.refine.propagate import PropagateCfg
from labeler.review.pull import pull_run
from labeler.studio.convert import bev_result_items

pytestmark = [pytest.mark.studio, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
MAX_RANGE_M = 50.0


def _gt(idx, ts: int):
    a = idx.annotations.to_pandas()
    g = a[(a.timestamp_ns == ts) & (a.num_lidar_pts > 0)].copy()
    g["category"] = [map_category(c) for c in g.category]
    return g[np.hypot(g.x, g.y) < MAX_RANGE_M]


def _errors(labels, idx, frames) -> int:
    n = 0
    for ts in frames:
        p = labels[labels.timestamp_ns == ts]
        p = p[np.hypot(p.x, p.y) < MAX_RANGE_M]
        g = _gt(idx, ts)
        n += match_frame(p[list(BOX_COLUMNS)].to_numpy(float), p.category.to_numpy(), g[list(BOX_COLUMNS)].to_numpy(float),
                         g.category.to_numpy()).errors
    return n


def test_reviewed_labels_reach_the_auto_accepted_frames(studio, studio_client, tmp_path, monkeypatch, caplog):
    from labeler.simulate import SimConfig, simulate_logs

    if studio.document_root is None:
        pytest.skip("the external Label Studio's document root is unknown: set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    state = Path(str(studio.document_root)) / f"propagate-{os.getpid()}-{time.time_ns()}"
    (path,) = simulate_logs(str(state / "logs"), num_logs=1, seed=21, cfg=SimConfig(duration_s=8.0), workers=1,
                            progress=False)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio.api_key)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(studio.document_root))
    cfg = load_config(REPO / "pipelines" / "nightly.yaml", {
        "night": "propagate", "studio.project_title": f"test propagation {time.time_ns()}", "studio.url": studio.url,
        "simulate.enabled": False, "dask.n_workers": 1, "selection.budget_fraction": 0.2}).resolved(str(state))
    assert cfg.review.propagate.enabled, "pipelines/nightly.yaml turns review propagation on"
    s = run_pipeline(cfg, progress=False)
    assert s.review >= 2 and s.auto_accepted > 0
    run = cfg.output_dir
    idx = read_log_index(path)

    # the person draws every visible object of each review frame (the classes Label Studio offers)
    ls = studio_client
    for t in ls.tasks.list(project=s.project_id):
        grid = BevGrid(**t.data["bev_grid"])
        ts = int(t.data["frame_key"].rsplit("/", 1)[1])
        g = _gt(idx, ts)
        g = g[g.category.isin(CLASSES) & (g.x > grid.x_min_m) & (g.x < grid.x_max_m) & (g.y > grid.y_min_m)
              & (g.y < grid.y_max_m)]
        result = []
        for k, r in enumerate(g.itertuples()):
            result += bev_result_items([getattr(r, c) for c in BOX_COLUMNS], r.category, f"gt{k}", grid)
        ls.annotations.create(id=t.id, result=result, lead_time=30.0)

    plain = pull_run(run, ls, export=False, propagate=PropagateCfg(enabled=False))
    before = read_table(run, "labels").to_pandas()
    res = pull_run(run, ls, export=False)                      # the run's config: review.propagate on
    after = read_table(run, "labels").to_pandas()
    assert plain.propagated == 0 and res.propagated > 0
    assert res.frames_reviewed == s.review and res.frames_auto == plain.frames_auto > 0

    frames = read_table(run, "frames").to_pandas()
    auto_ts = sorted(frames.loc[frames.outcome == "auto_accepted", "timestamp_ns"])
    review_ts = sorted(frames.loc[frames.outcome == "review", "timestamp_ns"])
    prop = after[after.provenance == "propagated"]
    assert len(prop) == res.propagated and set(prop.timestamp_ns) <= set(auto_ts)
    # reviewed frames: exactly the person's boxes, in both pulls
    key = ["timestamp_ns", "object_id"]
    h0 = before[before.timestamp_ns.isin(review_ts)].sort_values(key).reset_index(drop=True)
    h1 = after[after.timestamp_ns.isin(review_ts)].sort_values(key).reset_index(drop=True)
    assert (h1.provenance == "human").all() and h0[key + list(BOX_COLUMNS)].equals(h1[key + list(BOX_COLUMNS)])
    # auto-accepted frames: fewer errors against the ground truth than the run accepted
    e0, e1 = _errors(before, idx, auto_ts), _errors(after, idx, auto_ts)
    assert e1 < e0, f"propagation should remove label errors on the auto-accepted frames: {e0} -> {e1}"
    # 2D labels follow their 3D labels
    l2 = read_table(run, "labels_2d").to_pandas()
    assert set(l2.loc[l2.provenance == "propagated", "object_id"]) <= set(prop.object_id)

    # the log moved away: the pull keeps the run's accepted labels for it, and says so
    Path(path).rename(str(path) + ".moved")
    with caplog.at_level(logging.WARNING, logger="labeler.review.propagation"):
        gone = pull_run(run, ls, export=False)
    assert gone.propagated == 0 and "could not be opened" in caplog.text and idx.log_id in caplog.text
    again = read_table(run, "labels").to_pandas()
    cols = key + list(BOX_COLUMNS) + ["provenance"]
    assert again.sort_values(key)[cols].reset_index(drop=True).equals(before.sort_values(key)[cols].reset_index(drop=True))

