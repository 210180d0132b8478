"""Ingest + filter throughput vs a bare read of the same files, side by side in one run (one process, no Dask).

    .venv/bin/python benchmarks/filter_throughput.py [--logs DIR] [--num-logs 2] [--duration 5] [--repeats 3]

* bare read: per frame, ``native.read_points`` of the point file and every camera image read and decoded as the
  pipeline decodes it: the file's bytes and a JPEG decode at the health-check scale
  (``labeler.logs.images.open_image``: libjpeg DCT scaling to >= 320 px wide, i.e. 1/2 scale for 640 x 360;
  PNG and small images in full). That is the least any ingest of these files has to do, since the pipeline never
  decodes a full image before the model (the detectors read points; review assets copy the image files; a
  ``frame.images[cam]`` access decodes in full, once, on demand).
* bare read, full decode (reference, the definition used before 2026-11-29 12:00): ``read_points`` + a full PIL
  decode (open + load + RGB) of every image. Printed so the two definitions can be compared.
* ingest + filter: exactly what ``steps.process_chunk`` does before the model: ``LogIndex.load_frame`` (points,
  images, poses, ground truth), ``filters.lidar_health``, ``filters.image_means``, ``filters.camera_health``,
  ``filters.scenario_tags``, the drop/flag rules and (once per log) ``filters.pose_decisions`` +
  ``filters.ego_speed_mps``.

All passes run over the same frames, interleaved log by log and repeated (median taken), after a warm-up pass
so all read from the page cache. Reported: frames/s, MB/s (bytes of point + image files) and the ratio
ingest+filter / bare read (goal >= 0.5). Logs: ``--logs`` or simulated once into /tmp/labeler-bench (cached).
"""

from __future__ import annotations

import argparse
import os
import platform
import posixpath
import statistics
import time

import fsspec

from _logs import cached_logs  # noqa: E402  (benchmarks/ is on sys.path)


def bare_read(idx, full: bool = False) -> tuple[int, int]:
    """Read every frame's point file and decode its images as the pipeline does (``full``: decode them in full);
    returns (frames, bytes)."""
    from labeler.logs.native import open_image_file, read_image, read_points

    decode = read_image if full else open_image_file
    fs, root = fsspec.core.url_to_fs(idx.path)
    nbytes = 0
    for i in range(len(idx)):
        p = posixpath.join(root, idx.lidar_files[i])
        pts = read_points(fs, p, p, None)
        nbytes += pts.nbytes
        for cam, files in idx.camera_files.items():
            if files[i] is not None:
                ip = posixpath.join(root, files[i])
                decode(fs, ip, ip, None)
                nbytes += fs.size(ip)
    return len(idx), nbytes


STAGES: dict[str, float] = {}  # seconds per stage of ingest_filter, summed over the timed repeats


def _tick(name: str, t0: float) -> float:
    t = time.perf_counter()
    STAGES[name] = STAGES.get(name, 0.0) + t - t0
    return t


def ingest_filter(idx, fcfg) -> tuple[int, int]:
    """The pre-model part of steps.process_chunk over a whole log; returns (frames, kept)."""
    from labeler.pipeline import filters
    from labeler.pipeline.rules import compile_rules

    t = time.perf_counter()
    poses_known = bool(getattr(idx, "has_poses", True))
    decisions = filters.pose_decisions(idx.timestamps_ns, idx.world_from_ego, fcfg, poses_known,
                                       bool(getattr(idx, "sequential", True)))
    speed = filters.ego_speed_mps(idx.timestamps_ns, idx.world_from_ego)
    drop_rules = compile_rules(fcfg.drop_rules, "filter.drop_rules")
    flag_rules = compile_rules(fcfg.flag_rules, "filter.flag_rules")
    kept = 0
    t = _tick("pose_decisions + speed + rules compile", t)
    for i in range(len(idx)):
        ts = int(idx.timestamps_ns[i])
        frame = idx.load_frame(i)
        t = _tick("load_frame (points + reduced image decode + GT)", t)
        drop, flags = filters.lidar_health(frame.points, fcfg)
        t = _tick("lidar_health", t)
        means = filters.image_means(frame.images)
        cam_flags = filters.camera_health(frame.images, ts, frame.camera_timestamps_ns, fcfg, means)
        if drop is None and cam_flags and fcfg.drop_broken_camera_frames:
            drop = filters.DROP_CAMERA_BROKEN
        t = _tick("image_means + camera_health (sharpness)", t)
        tags, brightness = filters.scenario_tags(frame.images, float(speed[i]), fcfg, means)
        t = _tick("scenario_tags", t)
        fields = {"speed_mps": float(speed[i]), "num_points": int(len(frame.points)), "frame_index": i,
                  "log_id": idx.log_id, "brightness": brightness, "hour": int(ts // 3_600_000_000_000 % 24), "tags": tags}
        if drop is None:
            drop = next((f"rule:{r.name}" for r in drop_rules if r(fields)), None)
        if drop is None:
            drop = decisions[i]
        _ = flags + cam_flags + [f"rule:{r.name}" for r in flag_rules if r(fields)]
        _ = {"cameras": sorted(frame.images), "tags": tags, "filter_reason": drop}
        kept += drop is None
        t = _tick("rules", t)
    return len(idx), kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", help="folder of native logs (default: simulated, cached under /tmp/labeler-bench)")
    ap.add_argument("--num-logs", type=int, default=2)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from labeler.logs.native import find_native_logs, read_log_index
    from labeler.pipeline.config import FilterCfg

    load0 = os.getloadavg()
    paths = find_native_logs(args.logs)[: args.num_logs] if args.logs else cached_logs(args.num_logs, args.duration)
    idxs = [read_log_index(p) for p in paths]
    fcfg = FilterCfg()
    for idx in idxs:  # warm-up: page cache, imports
        bare_read(idx)
        bare_read(idx, full=True)
        ingest_filter(idx, fcfg)
    t_bare, t_full, t_filt, nbytes, frames = [], [], [], 0, 0
    STAGES.clear()
    for _ in range(args.repeats):
        tb = tfull = tf = 0.0
        nbytes = frames = 0
        for idx in idxs:  # interleaved per log so machine load hits all passes alike
            t0 = time.perf_counter()
            n, b = bare_read(idx)
            t1 = time.perf_counter()
            ingest_filter(idx, fcfg)
            t2 = time.perf_counter()
            bare_read(idx, full=True)
            t3 = time.perf_counter()
            tb += t1 - t0
            tf += t2 - t1
            tfull += t3 - t2
            frames += n
            nbytes += b
        t_bare.append(tb)
        t_filt.append(tf)
        t_full.append(tfull)
    mb = nbytes / 1e6
    tb, tf, tfull = statistics.median(t_bare), statistics.median(t_filt), statistics.median(t_full)
    la = os.getloadavg()
    print(f"machine: {platform.node()} nproc={os.cpu_count()} loadavg={la[0]:.2f},{la[1]:.2f},{la[2]:.2f} (after) "
          f"{load0[0]:.2f},{load0[1]:.2f},{load0[2]:.2f} (before)")
    print(f"input: {len(idxs)} logs, {frames} frames, {mb:.1f} MB (points as float32 + JPEG bytes), {args.repeats} repeats, median")

    def runs(ts):
        return ", ".join(f"{t:.2f}" for t in ts)

    print(f"bare read (read_points + images decoded as the pipeline does): {frames / tb:7.1f} frames/s  {mb / tb:7.1f} MB/s   ({tb:.2f} s; runs {runs(t_bare)})")
    print(f"bare read, full image decode (reference):                     {frames / tfull:7.1f} frames/s  {mb / tfull:7.1f} MB/s   ({tfull:.2f} s; runs {runs(t_full)})")
    print(f"ingest + filter (load_frame + filters):                        {frames / tf:7.1f} frames/s  {mb / tf:7.1f} MB/s   ({tf:.2f} s; runs {runs(t_filt)})")
    total = sum(STAGES.values())
    print("ingest + filter breakdown (all repeats): " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in STAGES.items()))
    print(f"per frame: bare read {1e3 * tb / frames:.2f} ms, full-decode read {1e3 * tfull / frames:.2f} ms, ingest + filter {1e3 * tf / frames:.2f} ms")
    ratios = [b / f for b, f in zip(t_bare, t_filt)]
    print(f"ratio ingest+filter / bare read throughput: {tb / tf:.2f}  (per repeat {', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.5)")
    print(f"ratio ingest+filter / full-decode bare read (reference): {tfull / tf:.2f}")


if __name__ == "__main__":
    main()
