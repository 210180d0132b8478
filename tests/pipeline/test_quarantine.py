"""Malformed-input corpus: every kind of bad input ends as a quarantine row (file + cause) or a filter drop, the run
goes on, and the counts reconcile.

The corpus is built once per module from two short freshly simulated native logs (3.5 s, 35 frames each) and a copy
of the real KITTI object sample, then run through the whole pipeline (Dask LocalCluster, ``push=False``: no Label
Studio). Copies of a log are hard links; a broken file is always replaced (unlink + write), never edited in place.

Kinds of bad input (16):

per frame, log A (``sim-0023-000``)        cause / outcome
  truncated point file                     truncated_point_file
  point file with 3 floats per point       truncated_point_file (byte count not a multiple of 16)
  empty point file                         empty_point_file
  missing point file                       missing_point_file
  NaN/inf-filled sweep                     filtered: lidar_nonfinite_values (NOT quarantined)
  corrupt (truncated) JPEG                 corrupt_image
  missing image file                       missing_image
  duplicated timestamp (across chunks)     duplicate_timestamp on the later row; the first row keeps its cameras
log B (``sim-0023-001``)
  frames.parquet rows out of order         accepted: the reader orders frames by time (no quarantine)
whole log (copies of log B; frames_affected = its frame count)
  calibration.json missing                 missing_file
  calibration.json not JSON                corrupt_json
  poses.parquet missing                    missing_file
  poses.parquet empty                      missing_poses
  log.json unreadable (binary garbage)     corrupt_json
  log.json without log_id                  bad_log_json
  log.json missing: not any known format   unknown_format (the folder is named)
real KITTI object sample (3 frames)
  truncated velodyne scan                  truncated_point_file
  calib file missing                       missing_calibration
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeler.io.tables import read_run_record, read_table
from labeler.logs.native import read_log_index
from labeler.pipeline.config import load_config
from labeler.pipeline.run import run_pipeline
from tests.realdata import REAL_DATA

SEED = 23
CHUNK = 10
# frame index in log A -> what is broken there
A_BROKEN = {3: "truncated", 5: "three_floats", 7: "empty", 9: "nonfinite", 11: "corrupt_image", 13: "missing_image",
            15: "missing_lidar", 20: "duplicate"}  # 20 gets frame 19's timestamp: 19 and 20 are in different chunks
WHOLE_LOG = ("no_calibration", "bad_calibration", "no_poses", "empty_poses", "bad_log_json", "no_log_id", "not_a_log")


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` without touching other hard links of the file."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _write_parquet(path: Path, table: pa.Table) -> None:
    path.unlink(missing_ok=True)
    pq.write_table(table, path)


def _break_log_a(log: Path) -> dict:
    """Per-frame damage in log A; returns {kind: (timestamp_ns, file)} of what to expect."""
    idx = read_log_index(str(log))
    ts = [int(t) for t in idx.timestamps_ns]
    lidar = {i: log / idx.lidar_files[i] for i in A_BROKEN}
    exp = {}
    raw = lidar[3].read_bytes()
    _replace(lidar[3], raw[:-5])
    exp["truncated_point_file"] = (ts[3], str(lidar[3]))
    pts = np.frombuffer(lidar[5].read_bytes(), dtype=np.float32).reshape(-1, 4)
    n = len(pts) - (len(pts) % 4) - 1  # 12 * n bytes is not a multiple of 16
    _replace(lidar[5], np.ascontiguousarray(pts[:n, :3]).tobytes())
    exp["truncated_point_file@5"] = (ts[5], str(lidar[5]))
    _replace(lidar[7], b"")
    exp["empty_point_file"] = (ts[7], str(lidar[7]))
    pts = np.frombuffer(lidar[9].read_bytes(), dtype=np.float32).reshape(-1, 4).copy()
    pts[::7, 0] = np.nan
    pts[3::11, 2] = np.inf
    _replace(lidar[9], pts.tobytes())
    front = log / idx.camera_files["front"][11]
    _replace(front, front.read_bytes()[:300])
    exp["corrupt_image"] = (ts[11], str(front))
    back = log / idx.camera_files["back"][13]
    back.unlink()
    exp["missing_image"] = (ts[13], str(back))
    lidar[15].unlink()
    exp["missing_point_file"] = (ts[15], str(lidar[15]))
    frames = pq.read_table(log / "frames.parquet")
    col = frames.column("timestamp_ns").to_pylist()
    k = col.index(ts[20])
    col[k] = ts[19]
    _write_parquet(log / "frames.parquet", frames.set_column(0, "timestamp_ns", pa.array(col, pa.int64())))
    exp["duplicate_timestamp"] = (ts[19], str(lidar[20]))
    return {"expected": exp, "ts": ts, "n": len(ts), "log_id": idx.log_id}


def _break_whole_log(log: Path, kind: str) -> tuple[str, str]:
    """Damage a copy of log B so that the whole log is unusable; returns (cause, file)."""
    if kind == "no_calibration":
        (log / "calibration.json").unlink()
        return "missing_file", str(log / "calibration.json")
    if kind == "bad_calibration":
        _replace(log / "calibration.json", b'{"ego_from_lidar": [[1, 0, 0, 0], ')
        return "corrupt_json", str(log / "calibration.json")
    if kind == "no_poses":
        (log / "poses.parquet").unlink()
        return "missing_file", str(log / "poses.parquet")
    if kind == "empty_poses":
        t = pq.read_table(log / "poses.parquet")
        _write_parquet(log / "poses.parquet", t.slice(0, 0))
        return "missing_poses", str(log / "poses.parquet")
    if kind == "bad_log_json":
        _replace(log / "log.json", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage")
        return "corrupt_json", str(log / "log.json")
    if kind == "no_log_id":
        _replace(log / "log.json", json.dumps({"format": "labeler-native", "version": 1}).encode())
        return "bad_log_json", str(log / "log.json")
    if kind == "not_a_log":
        (log / "log.json").unlink()
        return "unknown_format", str(log)
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from labeler.simulate import SimConfig, simulate_logs

    sim = tmp_path_factory.mktemp("sim")
    paths = simulate_logs(str(sim), num_logs=2, seed=SEED, cfg=SimConfig(duration_s=3.5), workers=2, progress=False)
    state = tmp_path_factory.mktemp("state")
    logs = state / "logs"
    logs.mkdir()
    a, b = logs / Path(paths[0]).name, logs / Path(paths[1]).name
    shutil.copytree(paths[0], a, copy_function=os.link)
    shutil.copytree(paths[1], b, copy_function=os.link)
    info = {"a": _break_log_a(a)}
    idx_b = read_log_index(str(b))
    info["b"] = {"n": len(idx_b), "log_id": idx_b.log_id, "ts": [int(t) for t in idx_b.timestamps_ns]}
    whole = {}
    for kind in WHOLE_LOG:
        d = logs / f"broken-{kind}"
        shutil.copytree(b, d, copy_function=os.link)
        whole[d.name] = _break_whole_log(d, kind)
    info["whole"] = whole
    # log B's frames table written newest first (the rows are out of time order)
    fr = pq.read_table(b / "frames.parquet")
    _write_parquet(b / "frames.parquet", fr.take(pa.array(np.arange(fr.num_rows)[::-1])))
    # a copy of the real KITTI object sample with a truncated scan and a missing calib file
    kitti_src = REAL_DATA / "kitti_object" / "training"
    if kitti_src.is_dir():
        k = logs / "kitti_object" / "training"
        shutil.copytree(kitti_src, k)
        scan = k / "velodyne" / "000001.bin"
        scan.write_bytes(scan.read_bytes()[:-6])
        (k / "calib" / "000002.txt").unlink()
        info["kitti"] = {"log_id": "kitti_object-training", "n": 3, "expected": {
            "truncated_point_file": (100_000_000, str(scan)), "missing_calibration": (200_000_000, str(k / "calib" / "000002.txt"))}}
    cfg = load_config(None, {"night": "quarantine", "simulate.enabled": False, "input.logs": str(logs),
                             "input.chunk_frames": CHUNK, "dask.n_workers": 2}).resolved(str(state))
    summary = run_pipeline(cfg, progress=False, push=False)
    run_dir = cfg.output_dir
    return {"summary": summary, "info": info, "logs": logs, "run_dir": run_dir,
            "frames": read_table(run_dir, "frames").to_pandas(), "quarantine": read_table(run_dir, "quarantine").to_pylist(),
            "scores": read_table(run_dir, "frame_scores").to_pandas()}


def _qrow(corpus, log_id: str, cause: str, file: str) -> dict:
    rows = [r for r in corpus["quarantine"] if r["log_id"] == log_id and r["cause"] == cause and r["file"] == file]
    assert len(rows) == 1, (log_id, cause, file, corpus["quarantine"])
    return rows[0]


def test_per_frame_bad_inputs_are_quarantined_with_file_and_cause(corpus):
    a = corpus["info"]["a"]
    for key, (ts, file) in a["expected"].items():
        r = _qrow(corpus, a["log_id"], key.split("@")[0], file)
        assert r["timestamp_ns"] == ts and r["frames_affected"] == 1 and r["stage"] == "ingest", r
        assert r["detail"]
    # exactly these rows for log A: nothing else quarantined, nothing silently dropped
    got = sorted((r["cause"], r["file"]) for r in corpus["quarantine"] if r["log_id"] == a["log_id"])
    assert got == sorted((k.split("@")[0], f) for k, (_, f) in a["expected"].items())
    fa = corpus["frames"][corpus["frames"].log_id == a["log_id"]]
    assert len(fa) + len(a["expected"]) == a["n"]
    quarantined_idx = {3, 5, 7, 11, 13, 15, 20}
    assert set(fa.frame_index) == set(range(a["n"])) - quarantined_idx


def test_nonfinite_sweep_is_a_filter_drop_not_quarantine(corpus):
    a = corpus["info"]["a"]
    fa = corpus["frames"].set_index(["log_id", "frame_index"])
    row = fa.loc[(a["log_id"], 9)]
    assert row.filter_reason == "lidar_nonfinite_values" and row.outcome == "filtered"
    assert not any(r["timestamp_ns"] == a["ts"][9] and r["log_id"] == a["log_id"] for r in corpus["quarantine"])


def test_duplicate_timestamp_keeps_the_first_frame_whole(corpus):
    a = corpus["info"]["a"]
    f = corpus["frames"]
    kept = f[(f.log_id == a["log_id"]) & (f.timestamp_ns == a["ts"][19])]
    assert len(kept) == 1 and kept.frame_index.iloc[0] == 19
    assert kept.lidar_file.iloc[0].endswith(f"lidar/{a['ts'][19]}.bin")
    assert list(kept.cameras.iloc[0]) == ["back", "front"]  # its camera rows were not handed to the duplicate
    assert not f.duplicated(["log_id", "timestamp_ns"]).any()


def test_out_of_order_rows_are_read_in_time_order(corpus):
    b = corpus["info"]["b"]
    fb = corpus["frames"][corpus["frames"].log_id == b["log_id"]].sort_values("frame_index")
    assert len(fb) == b["n"] and list(fb.timestamp_ns) == sorted(b["ts"])
    assert all(lf.endswith(f"lidar/{t}.bin") for lf, t in zip(fb.lidar_file, fb.timestamp_ns))
    assert not [r for r in corpus["quarantine"] if r["log_id"] == b["log_id"]]


def test_unusable_logs_are_quarantined_whole(corpus):
    n = corpus["info"]["b"]["n"]
    for name, (cause, file) in corpus["info"]["whole"].items():
        r = _qrow(corpus, name, cause, file)
        assert r["timestamp_ns"] is None and r["frames_affected"] == n, r
        assert r["detail"].startswith("whole log quarantined")
    r = _qrow(corpus, "broken-not_a_log", "unknown_format", corpus["info"]["whole"]["broken-not_a_log"][1])
    assert "log.json" in r["detail"] and "velodyne/" in r["detail"]  # says which layouts it looked for
    assert not corpus["frames"].log_id.str.startswith("broken-").any()


def test_real_kitti_sample_damage_is_quarantined(corpus):
    k = corpus["info"].get("kitti")
    if k is None:
        pytest.skip(f"real KITTI sample not found under {REAL_DATA}")
    for cause, (ts, file) in k["expected"].items():
        r = _qrow(corpus, k["log_id"], cause, file)
        assert r["timestamp_ns"] == ts and r["frames_affected"] == 1
    fk = corpus["frames"][corpus["frames"].log_id == k["log_id"]]
    assert list(fk.frame_index) == [0]


def test_counts_reconcile_and_the_run_went_on(corpus):
    s, info = corpus["summary"], corpus["info"]
    n_kitti = info["kitti"]["n"] if "kitti" in info else 0
    expected_in = info["a"]["n"] + info["b"]["n"] + len(WHOLE_LOG) * info["b"]["n"] + n_kitti
    assert s.frames_in == expected_in
    assert s.logs == 2 + len(WHOLE_LOG) + (1 if n_kitti else 0)
    assert s.reconciles
    assert s.frames_in == s.quarantined + s.filtered + s.auto_accepted + s.review
    f, q = corpus["frames"], corpus["quarantine"]
    assert s.quarantined == sum(r["frames_affected"] for r in q)
    assert len(f) + s.quarantined == s.frames_in
    assert s.filtered == (f.outcome == "filtered").sum() and s.filtered > 0
    assert s.auto_accepted + s.review == len(corpus["scores"]) > 0
    n_causes = len(info["a"]["expected"]) + (2 if n_kitti else 0)
    assert len(q) == n_causes + len(WHOLE_LOG)
    assert s.filter_reasons.get("lidar_nonfinite_values") == 1
    rec = read_run_record(corpus["run_dir"])
    assert rec["summary"]["frames_in"] == s.frames_in and rec["summary"]["quarantined"] == s.quarantined
