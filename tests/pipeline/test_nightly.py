"""The nightly job end to end: simulated logs with injected bad inputs -> Dask -> a real Label Studio server.

Uses the session's real Label Studio (fixture ``studio`` in tests/conftest.py) and a real Dask LocalCluster;
a second test runs through an external ``dask scheduler`` with two ``dask worker`` processes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labeler.io.tables import read_run_record, read_table
from labeler.logs.native import read_log_index
from labeler.pipeline.config import load_config
from labeler.pipeline.run import run_pipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim_logs(tmp_path_factory):
    """Three short simulated logs: one with a truncated point file and a corrupt image, one unreadable."""
    from labeler.simulate import SimConfig, simulate_logs

    root = tmp_path_factory.mktemp("logs")
    paths = simulate_logs(str(root), num_logs=3, seed=7, cfg=SimConfig(duration_s=6.0), workers=2, progress=False)
    return root, paths


def _corrupt(root: Path, paths: list[str]) -> dict:
    """Break inputs in a copy: returns what was broken."""
    a = read_log_index(paths[0])
    lidar = Path(paths[0]) / a.lidar_files[10]
    lidar.write_bytes(lidar.read_bytes()[:-5])
    cam = next(iter(a.camera_files))
    img = Path(paths[0]) / a.camera_files[cam][20]
    img.write_bytes(img.read_bytes()[:200])  # truncated JPEG: cannot be decoded
    (Path(paths[2]) / "calibration.json").write_text("{ this is not json")
    return {"lidar": str(lidar), "image": str(img), "log": paths[2], "n_log": len(read_log_index(paths[1]))}


def _copy_logs(src_root: Path, dst: Path) -> list[str]:
    shutil.copytree(src_root, dst)
    return sorted(str(p) for p in dst.iterdir() if (p / "log.json").exists())


def _tasks(client, pid):
    return list(client.tasks.list(project=pid))


@pytest.mark.studio
@pytest.mark.slow
def test_nightly_job_into_label_studio(sim_logs, studio, studio_client, tmp_path, monkeypatch):
    root, _ = sim_logs
    state = Path(str(studio.document_root)) / f"pipeline-{os.getpid()}-{time.time_ns()}"
    logs = _copy_logs(root, state / "logs")
    broken = _corrupt(state / "logs", logs)
    overrides = {"night": "test-night", "studio.project_title": f"test nightly {time.time_ns()}",
                 "studio.url": studio.url, "simulate.enabled": False, "input.chunk_frames": 25,
                 "selection.budget_fraction": 0.3, "filter.keyframe_hz": 5.0,
                 "filter.flag_rules": {"bus_seen": 'tag == "obj:bus" or tag == "obj:truck"'}}
    if studio.document_root is None:
        pytest.skip("the external Label Studio's document root is unknown: set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio.api_key)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(studio.document_root))
    cfg = load_config(REPO / "pipelines" / "nightly.yaml", overrides).resolved(str(state))
    s1 = run_pipeline(cfg, progress=False)

    # counts reconcile and match the inputs
    n_frames = sum(len(read_log_index(p)) for p in logs[:2]) + len(list((Path(logs[2]) / "lidar").glob("*.bin")))
    assert s1.frames_in == n_frames
    assert s1.reconciles and s1.review > 0 and s1.auto_accepted > 0 and s1.filtered > 0
    run_dir = cfg.output_dir
    frames = read_table(run_dir, "frames").to_pandas()
    quarantine = read_table(run_dir, "quarantine").to_pandas()
    scores = read_table(run_dir, "frame_scores").to_pandas()
    preds = read_table(run_dir, "predictions_3d").to_pandas()
    b2d = read_table(run_dir, "boxes_2d").to_pandas()
    tasks_t = read_table(run_dir, "review_tasks").to_pandas()
    assert len(frames) + quarantine["frames_affected"].sum() == n_frames

    # the bad inputs are quarantined with file and cause; the rest went on
    q = {r.cause: r for r in quarantine.itertuples()}
    assert q["truncated_point_file"].file == broken["lidar"] and q["truncated_point_file"].timestamp_ns is not None
    assert q["corrupt_image"].file == broken["image"]
    assert q["corrupt_json"].frames_affected == len(list((Path(broken["log"]) / "lidar").glob("*.bin")))
    assert np.isnan(q["corrupt_json"].timestamp_ns) or q["corrupt_json"].timestamp_ns is None
    assert set(frames["log_id"]) == {Path(logs[0]).name, Path(logs[1]).name}

    # every kept frame was scored; predictions exist with 2D boxes; keys are unique
    kept = frames[frames.outcome != "filtered"]
    assert len(scores) == len(kept) and len(preds) > 0 and len(b2d) > 0
    assert not preds.duplicated(["log_id", "timestamp_ns", "object_id"]).any()
    assert not b2d.duplicated(["log_id", "timestamp_ns", "object_id", "camera"]).any()
    assert set(preds.run_id) == {s1.run_id} and preds.model_version.str.startswith(cfg.model.name).all()
    # the selection respects the budget
    assert s1.review <= int(np.ceil(0.3 * len(kept)))
    # model-derived tags on kept frames (filtered frames never saw the detector), and a flag rule over them
    confident = preds[preds.score >= cfg.filter.model_tag_score]
    for fr in kept.itertuples():
        on = set(confident[(confident.log_id == fr.log_id) & (confident.timestamp_ns == fr.timestamp_ns)].category)
        assert {t for t in fr.tags if t.startswith("obj:")} == {f"obj:{c}" for c in on}
    assert not any(t.startswith("obj:") for ts in frames[frames.outcome == "filtered"].tags for t in ts)
    big = {(r.log_id, r.timestamp_ns) for r in kept.itertuples() if {"obj:bus", "obj:truck"} & set(r.tags)}
    flagged = {(r.log_id, r.timestamp_ns) for r in scores.itertuples() if "rule:bus_seen" in list(r.reasons)}
    assert big and flagged == big

    # Label Studio has exactly one task per review frame, with a prediction holding the boxes
    tasks = _tasks(studio_client, s1.project_id)
    keys = [t.data["frame_key"] for t in tasks]
    assert sorted(keys) == sorted(tasks_t.frame_key) and len(keys) == len(set(keys)) == s1.review
    t0 = studio_client.tasks.get(tasks[0].id)
    preds_ls = list(studio_client.predictions.list(task=t0.id))
    assert len(preds_ls) == 1
    bev = [r for r in preds_ls[0].result if r["from_name"] == "bev_box"]
    key = t0.data["frame_key"]
    log_id, ts = key.rsplit("/", 1)
    # refinement is on in pipelines/nightly.yaml: the pre-annotations are the frame's refined boxes shown to reviewers
    refined = read_table(run_dir, "refined_3d").to_pandas()
    shown = refined[(refined.log_id == log_id) & (refined.timestamp_ns == int(ts)) & (refined.score >= cfg.selection.review_min_score)]
    assert len(bev) == len(shown) and {r["id"] for r in bev} <= set(t0.data["object_ids"])
    assert set(t0.data["object_ids"].values()) == set(shown.object_id)
    assert preds_ls[0].model_version.startswith(cfg.model.name)
    assert preds.uncertainty.between(0, 1).all()  # TTA is on in pipelines/nightly.yaml

    # re-running the same night does not duplicate tasks
    s2 = run_pipeline(cfg, progress=False)
    assert s2.review == s1.review and s2.tasks_created == 0
    assert s2.tasks_existing + s2.tasks_updated == s2.review
    assert len(_tasks(studio_client, s1.project_id)) == len(tasks)

    # the analyst notebook runs on this run's tables
    monkeypatch.setenv("LABELER_RUN_DIR", str(run_dir))
    _run_notebook(tmp_path)


def _run_notebook(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "run_overview.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the notebook should draw the funnel and the score plots"
    out = Path(os.environ.get("LABELER_TEST_ARTIFACTS", tmp_path)) / "run_overview.executed.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_external_dask_scheduler_via_cli(sim_logs, tmp_path):
    """`labeler run --scheduler tcp://...` runs on an existing cluster: a real scheduler and two workers."""
    root, paths = sim_logs
    port = _free_port()
    bindir = Path(sys.executable).parent
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        time.sleep(3)
        for _ in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                                           "--no-dashboard", "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env=env))
        from dask.distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
            n_workers = len(c.scheduler_info()["workers"])
        assert n_workers == 2
        state = tmp_path / "state"
        r = subprocess.run([str(bindir / "labeler"), "--state", str(state), "run", "--scheduler", f"tcp://127.0.0.1:{port}",
                            "--logs", str(root), "--night", "ext", "--no-push", "--no-progress"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "reconciles      yes" in r.stdout
        rec = read_run_record(str(state / "runs" / "ext"))
        assert rec["config"]["dask"]["scheduler"] == f"tcp://127.0.0.1:{port}"
        frames = read_table(str(state / "runs" / "ext"), "frames")
        assert frames.num_rows == sum(len(read_log_index(p)) for p in paths)
        assert rec["summary"]["frames_in"] == frames.num_rows
        # the work ran on the external workers, each of which loaded the model once (not per frame)
        with Client(f"tcp://127.0.0.1:{port}", timeout="30s") as c:
            from labeler.pipeline.steps import loaded_models

            loaded = c.run(loaded_models)
        assert len(loaded) == 2 and sum(loaded.values()) >= 1 and max(loaded.values()) == 1, loaded
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
