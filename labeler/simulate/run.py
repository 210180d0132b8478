"""Public API of the road-test log simulator: :class:`SimConfig`, :func:`simulate_log`, :func:`simulate_logs`.

Each log is written with :class:`labeler.logs.native.NativeLogWriter`: LiDAR sweeps (LiDAR frame, ego_from_lidar =
translation (0, 0, lidar_height_m), so the road is at z = -lidar_height_m), camera JPEGs, world_from_ego poses,
ground-truth boxes (LiDAR frame, geometric centre, stable track ids, num_lidar_pts) and corner-case records.
Everything is a deterministic function of the seed (numpy Generators only, no clock).
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import fsspec
import numpy as np

from labeler.logs.native import NativeLogWriter
from labeler.simulate.camera import CameraRenderer, black_frame, make_calib, overexposed_frame
from labeler.simulate.lidar import Lidar
from labeler.simulate.scene import CORNER_KINDS, Scenario, build_scenario, corner_detail, lidar_from_world

_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BASE_TIME_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z; logs start at BASE + a seed-derived offset


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings (defaults in brackets).

    Attributes:
        duration_s: log length, seconds [20.0].
        rate_hz: LiDAR sweep rate; one frame (sweep + one image per camera) per sweep [10.0].
        num_beams: LiDAR lasers, elevations evenly from +10.67 to -30.67 deg (HDL-32E-like) [32].
        azimuth_res_deg: LiDAR horizontal step, degrees [0.25].
        max_range_m: LiDAR max range; also the ground-truth range (box centre distance) [80.0].
        range_noise_m: Gaussian LiDAR range noise sigma, metres [0.02].
        lidar_height_m: LiDAR origin above the ground; the ground is at z = -lidar_height_m in the LiDAR frame [1.84].
        image_width, image_height: camera image size, pixels [640, 360].
        cameras: camera names from :data:`labeler.simulate.camera.MOUNTS` [("front", "back")]; front has a
            70 deg horizontal FOV, back 90 deg.
        corner_cases: inject seeded corner cases (see :data:`labeler.simulate.scene.CORNER_KINDS`) [True].
        force_corner_cases: kinds injected whenever ``corner_cases`` is on, on top of the random draw [()].
        lidar_dropout: range (lo, hi) of the per-log random return dropout probability [(0.03, 0.05)].
        lidar_vfov_deg: (top, bottom) beam elevations, degrees [(10.67, -30.67)].
        lidar_profiles: names from :data:`labeler.simulate.lidar.PROFILES`; when given, each log draws one of
            them (uniformly, from its seed) and it replaces num_beams, lidar_vfov_deg, azimuth_res_deg and
            lidar_height_m, so a batch mixes sensors like a fleet does [() = use those fields].
    """

    duration_s: float = 20.0
    rate_hz: float = 10.0
    num_beams: int = 32
    azimuth_res_deg: float = 0.25
    max_range_m: float = 80.0
    range_noise_m: float = 0.02
    lidar_height_m: float = 1.84
    image_width: int = 640
    image_height: int = 360
    cameras: tuple[str, ...] = ("front", "back")
    corner_cases: bool = True
    force_corner_cases: tuple[str, ...] = ()
    lidar_dropout: tuple[float, float] = (0.03, 0.05)
    lidar_vfov_deg: tuple[float, float] = (10.67, -30.67)
    lidar_profiles: tuple[str, ...] = ()


def resolve_lidar(cfg: SimConfig, seed: int) -> tuple[SimConfig, str]:
    """``cfg`` with the LiDAR fields of the profile log ``seed`` draws (see ``SimConfig.lidar_profiles``) and the
    sensor's name. A draw from its own random stream: the rest of the log does not depend on it."""
    from labeler.simulate.lidar import PROFILES

    if not cfg.lidar_profiles:
        return cfg, "sim-hdl32e"
    unknown = [p for p in cfg.lidar_profiles if p not in PROFILES]
    if unknown:
        raise ValueError(f"SimConfig.lidar_profiles: unknown {unknown}; known: {sorted(PROFILES)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x11DA]))
    name = cfg.lidar_profiles[int(rng.integers(len(cfg.lidar_profiles)))]
    p = PROFILES[name]
    return replace(cfg, num_beams=p.num_beams, lidar_vfov_deg=p.vfov_deg, azimuth_res_deg=p.azimuth_res_deg,
                   lidar_height_m=p.height_m), f"sim-{name}"


def log_seed(seed: int, index: int) -> int:
    """Seed of log ``index`` in a batch started with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def batch_kinds(index: int) -> tuple[str, ...]:
    """Corner-case kinds log ``index`` of a batch always gets (on top of its random draw): kinds ``2i`` and
    ``2i + 1`` (mod 6) of :data:`CORNER_KINDS`, so any 3 consecutive logs of a batch cover every kind."""
    n = len(CORNER_KINDS)
    return CORNER_KINDS[(2 * index) % n], CORNER_KINDS[(2 * index + 1) % n]


def log_name(seed: int, index: int) -> str:
    """Name of log ``index`` in a batch started with ``seed``: ``sim-<seed:04d>-<index:03d>``."""
    return f"sim-{int(seed):04d}-{int(index):03d}"


def is_complete(log_url: str) -> bool:
    """A log is complete when its ``log.json`` and its last-written table exist."""
    fs, p = fsspec.core.url_to_fs(log_url)
    return fs.exists(posixpath.join(p, "log.json")) and fs.exists(posixpath.join(p, "corner_cases.parquet"))


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent random streams of a log: scenario, LiDAR noise, camera noise, camera look."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)]


def scenario_for(seed: int, cfg: SimConfig = SimConfig()) -> Scenario:
    """The world, traffic, ego motion and corner-case plan :func:`simulate_log` renders for ``seed`` (cheap:
    no ray casting)."""
    return build_scenario(_streams(seed)[0], cfg.duration_s, cfg.rate_hz, cfg.max_range_m, tuple(cfg.cameras),
                          cfg.corner_cases, cfg.force_corner_cases)


def simulate_log(out_root: str, log_id: str, seed: int, cfg: SimConfig = SimConfig(), *, threads: int = 0) -> str:
    """Simulate one log into ``<out_root>/<log_id>`` (an existing folder of that name is replaced).

    Args:
        seed: the whole log is a deterministic function of (seed, cfg).
        threads: ray-casting threads (0: all cores).

    Returns:
        The log's path (URL).
    """
    if len(cfg.cameras) < 1:
        raise ValueError("SimConfig.cameras must name at least one camera")
    url = str(out_root).rstrip("/") + "/" + log_id
    fs, p = fsspec.core.url_to_fs(url)
    if fs.exists(p):
        fs.rm(p, recursive=True)
    _, rng_lidar, rng_cam, rng_look = _streams(seed)
    scen = scenario_for(seed, cfg)
    cfg, sensor = resolve_lidar(cfg, seed)
    lidar = Lidar(cfg.num_beams, cfg.azimuth_res_deg, cfg.max_range_m, cfg.range_noise_m, cfg.lidar_vfov_deg, sensor)
    calibs = {n: make_calib(n, cfg.image_width, cfg.image_height) for n in cfg.cameras}
    renderers = {n: CameraRenderer(c, rng_look) for n, c in calibs.items()}
    ego_from_lidar = np.eye(4)
    ego_from_lidar[2, 3] = cfg.lidar_height_m
    meta = {**lidar.meta(), "rate_hz": float(cfg.rate_hz), "simulator": "labeler.simulate", "seed": int(seed)}
    writer = NativeLogWriter(out_root, log_id, calibs, ego_from_lidar, meta)
    dropout = float(rng_lidar.uniform(*cfg.lidar_dropout))
    t0 = BASE_TIME_NS + (int(seed) % 1_000_000) * 1_000_000_000
    plan = scen.corner
    for i, t_s in enumerate(scen.times_s):
        ts = t0 + int(round(t_s * 1e9))
        world_from_ego = scen.world_from_ego(i)
        world_from_lidar = world_from_ego @ ego_from_lidar
        rs = scen.ray_scene(i, threads=threads)
        points = lidar.scan(rs, world_from_lidar, rng_lidar, dropout, plan.sector.get(i))
        images, cam_ts = {}, {}
        for name, r in renderers.items():
            img = r.render(rs, world_from_lidar, scen.sun_dir, rng_cam)
            effect = plan.camera.get(i)
            if effect is not None and effect[0] == name:
                img = black_frame(img, rng_cam) if effect[1] == "black" else overexposed_frame(img, rng_cam)
            images[name] = img
            cam_ts[name] = ts + int(rng_cam.integers(1_000_000, 9_000_000))  # 1-9 ms after the sweep
        writer.add_frame(ts, points, world_from_ego, images, cam_ts)
        boxes, cats, tids = scen.ground_truth(i, lidar_from_world(world_from_ego, ego_from_lidar), cfg.max_range_m)
        counts = points_per_box(points, boxes)
        writer.add_annotations(ts, boxes, cats, tids, counts)
        _record_corner_cases(writer, plan, i, ts, boxes, cats, tids, cfg.rate_hz)
    return writer.close()


def points_per_box(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Points inside each box (:func:`labeler.geometry.boxes.count_points_windowed`)."""
    from labeler.geometry.boxes import count_points_windowed

    return count_points_windowed(points, boxes)


def _record_corner_cases(writer: NativeLogWriter, plan, i: int, ts: int, boxes, cats, tids, rate_hz: float) -> None:
    """Corner-case rows of frame ``i``; ``detail`` is a JSON object (see :func:`corner_detail`)."""
    for k, tid in enumerate(tids):
        kind = plan.tracks.get(tid)
        if kind is not None:
            l, w, h = (round(float(v), 3) for v in boxes[k, 3:6])
            writer.add_corner_case(ts, kind, tid, corner_detail(category=cats[k], l=l, w=w, h=h))
    if i in plan.sector:
        start, width = plan.sector[i]
        writer.add_corner_case(ts, "lidar_sector_dropout", None, corner_detail(start_deg=round(start, 3), width_deg=round(width, 3)))
    if i in plan.camera:
        cam, what = plan.camera[i]
        writer.add_corner_case(ts, f"camera_{what}", None, corner_detail(camera=cam))
    if i in plan.stationary:
        writer.add_corner_case(ts, "stationary", None, corner_detail(stopped_s=round(len(plan.stationary) / rate_hz, 2)))


def _cfg_to_json(cfg: SimConfig) -> str:
    return json.dumps(asdict(cfg))


def _cfg_from_json(text: str) -> SimConfig:
    d = json.loads(text)
    return SimConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _worker_main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process: ``argv`` = [out_root, log_id, seed, cfg JSON, threads]."""
    out_root, log_id, seed, cfg, threads = argv if argv is not None else sys.argv[1:]
    simulate_log(out_root, log_id, int(seed), _cfg_from_json(cfg), threads=int(threads))


class _Worker:
    """One log simulated in a fresh Python process (no fork of a threaded parent, no ``__main__`` guard needed)."""

    def __init__(self, job: tuple, threads: int):
        base, log_id, seed, cfg = job
        env = dict(os.environ)
        env.update({k: str(threads) for k in _BLAS_ENV})  # the cores are shared by the worker processes
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in [env.get("PYTHONPATH")] if p])
        self.log_id = log_id
        self.err = tempfile.TemporaryFile()
        cmd = [sys.executable, "-c", "from labeler.simulate.run import _worker_main; _worker_main()",
               base, log_id, str(seed), _cfg_to_json(cfg), str(threads)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.err)

    def done(self) -> bool:
        if self.proc.poll() is None:
            return False
        if self.proc.returncode != 0:
            self.err.seek(0)
            tail = self.err.read().decode("utf-8", "replace")[-3000:]
            raise RuntimeError(f"simulating log {self.log_id} failed (exit {self.proc.returncode}):\n{tail}")
        self.err.close()
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def simulate_logs(out_root: str, num_logs: int = 10, seed: int = 0, cfg: SimConfig = SimConfig(), workers: int = 2,
                  progress: bool = True) -> list[str]:
    """Simulate ``num_logs`` logs named ``sim-<seed:04d>-<i:03d>`` (per-log seed :func:`log_seed`), up to
    ``workers`` at a time in separate processes. Logs that already exist complete are kept, so re-runs are cheap.
    With ``cfg.corner_cases``, log ``i`` always gets the kinds :func:`batch_kinds` (i) besides its random ones.

    Returns:
        The log paths in index order.
    """
    from tqdm.auto import tqdm

    fs, root = fsspec.core.url_to_fs(str(out_root))
    fs.makedirs(root, exist_ok=True)
    base = str(out_root).rstrip("/")
    names = [log_name(seed, i) for i in range(num_logs)]
    todo = [(base, n, log_seed(seed, i), replace(cfg, force_corner_cases=tuple(cfg.force_corner_cases) + batch_kinds(i)))
            for i, n in enumerate(names) if not is_complete(base + "/" + n)]
    bar = tqdm(total=num_logs, initial=num_logs - len(todo), desc="simulate", unit="log", disable=not progress)
    try:
        if workers <= 1:
            for b, n, sd, c in todo:
                simulate_log(b, n, sd, c)
                bar.update(1)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            running: list[_Worker] = []
            try:
                while todo or running:
                    while todo and len(running) < workers:
                        running.append(_Worker(todo.pop(0), threads))
                    finished = [w for w in running if w.done()]
                    for w in finished:
                        running.remove(w)
                        bar.update(1)
                    if not finished:
                        time.sleep(0.1)
            finally:
                for w in running:
                    w.kill()
    finally:
        bar.close()
    return [base + "/" + n for n in names]
