"""Frames/s of the BEV detector and of the geometric detector on the same frames, in one run.

    .venv/bin/python benchmarks/bev_speed.py [--logs state/heldout_logs] [--frames 40] [--threads 2] [--tta]

Batch 1, warm (a few warm-up frames first), BEV time includes rasterisation, the network, decoding and point
counting (everything in ``predict``). Frames come from the first log under ``--logs``; without it (or when the
folder is missing) a 4 s log of the held-out seed 0 is simulated into a temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time

import numpy as np
import torch


def load_frames(logs: str | None, n: int):
    from labeler.logs.native import find_native_logs, load_frame, read_log_index

    paths = []
    if logs:
        try:
            paths = find_native_logs(logs)
        except Exception:
            paths = []
    if not paths:
        from labeler.simulate import SimConfig, simulate_logs

        tmp = tempfile.mkdtemp(prefix="bev-speed-")
        paths = simulate_logs(tmp, num_logs=1, seed=0, cfg=SimConfig(duration_s=4, image_width=64, image_height=36),
                              workers=1, progress=False)
    idx = read_log_index(paths[0])
    step = max(1, len(idx) // n)
    return [load_frame(idx, i, with_images=False) for i in range(0, len(idx), step)][:n]


def fps(det, frames, warmup: int = 3) -> tuple[float, float]:
    """(frames/s, median ms/frame) at batch 1."""
    for f in frames[:warmup]:
        det.predict([f])
    times = []
    for f in frames:
        t = time.perf_counter()
        det.predict([f])
        times.append(time.perf_counter() - t)
    return len(frames) / sum(times), 1000 * float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logs", default="state/heldout_logs", help="folder of native logs (first log used)")
    p.add_argument("--frames", type=int, default=40, help="frames to time")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--weights", default=None, help="BEV checkpoint (default models/bev_small.pt)")
    p.add_argument("--tta", action="store_true", help="also time the BEV detector with test-time augmentation")
    p.add_argument("--pointpillars", type=int, default=0, metavar="N",
                   help="also time mmdet3d PointPillars (KITTI 3-class, random init) on the first N of the same frames "
                        "(needs `bash .ci/install-mmdet3d`)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from labeler.models.bev import BevDetector
    from labeler.models.geometric import GeometricDetector

    frames = load_frames(a.logs, a.frames)
    npts = np.mean([len(f.points) for f in frames])
    bev = BevDetector(a.weights, threads=a.threads)
    geo = GeometricDetector()
    print(f"{len(frames)} frames of {frames[0].log_id} ({npts:.0f} points/frame), torch {torch.__version__}, "
          f"{a.threads} threads, {platform.processor() or platform.machine()}")
    rows = [("bev", *fps(bev, frames))]
    if a.tta:
        rows.append(("bev+tta", *fps(BevDetector(a.weights, tta=True, threads=a.threads), frames)))
    rows.append(("geometric", *fps(geo, frames)))
    if a.pointpillars:
        from labeler.models.mmdet3d_backend import MMDet3DDetector

        pp = MMDet3DDetector("pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class")
        rows.append(("mmdet3d PointPillars", *fps(pp, frames[: a.pointpillars], warmup=1)))
    print("| detector | frames/s | median ms/frame |\n|---|---|---|")
    for name, f, ms in rows:
        print(f"| {name} | {f:.2f} | {ms:.0f} |")
    print(f"BEV / geometric speed ratio: {rows[0][1] / rows[2 if a.tta else 1][1]:.1f}x")
    if a.pointpillars:
        print(f"BEV / mmdet3d PointPillars speed ratio: {rows[0][1] / rows[-1][1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
