"""Push and pull through Label Studio: ours vs the raw SDK, side by side on one server.

1,000 tasks x 20 BEV boxes (+ z/height per box). Measures
  push:  labeler.studio.push.push_tasks (idempotency checks, conversion, batched import, id read-back)
         vs raw ``projects.import_tasks`` of the same, pre-built payload in the same batch size, into another project;
  pull:  export (full predictions) + conversion to 3D boxes + review-log analysis (labeler.review.pull.analyse_task)
         vs the raw snapshot export (create, poll, download, json.loads) of the raw project.
Prints raw_time / our_time per stage (goal >= 0.85: our overhead at most ~15 %).

Usage: .venv/bin/python benchmarks/studio_push_pull.py [--tasks 1000] [--boxes 20] [--batch 100]
Starts its own server in a temporary state dir (first start ~60 s) and stops it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--boxes", type=int, default=20)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved raw/ours push rounds (default 2)")
    a = ap.parse_args()

    from labeler.classes import CLASSES
    from labeler.geometry.bev import BevGrid
    from labeler.review.pull import analyse_task
    from labeler.studio.client import connect
    from labeler.studio.push import _payload, _project_cameras, ensure_project, export_tasks, push_tasks
    from labeler.studio.server import free_port, start_server, stop_server
    from labeler.studio.tasks import ReviewTask

    state = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    t0 = time.perf_counter()
    info = start_server(state, port=free_port(), wait_s=400)
    print(f"server up in {time.perf_counter() - t0:.1f} s at {info.url}")
    try:
        ls = connect(info.url, info.token_file.read_text().strip())
        grid = BevGrid()
        img = state / "assets" / "bev.png"
        img.parent.mkdir(parents=True)
        Image.new("RGB", (grid.width_px, grid.height_px)).save(img)
        rng = np.random.default_rng(0)
        tasks = []
        for i in range(a.tasks):
            n = a.boxes
            boxes = np.column_stack([rng.uniform(-35, 55, n), rng.uniform(-35, 35, n), rng.uniform(-1.5, 0.5, n),
                                     rng.uniform(3, 6, n), rng.uniform(1.5, 2.5, n), rng.uniform(1.4, 3, n),
                                     rng.uniform(-math.pi, math.pi, n)])
            tasks.append(ReviewTask(f"bench/{i}", "bench", i, str(img), grid, boxes, [CLASSES[k % 4] for k in range(n)],
                                    list(rng.uniform(0.3, 1, n)), [f"o{k}" for k in range(n)], [], 1.0, ["bench"],
                                    "det-v1", "bench"))
        cams = _project_cameras(ls, ensure_project(ls, "bench cams", list(CLASSES), []))
        t = time.perf_counter()
        payloads = [_payload(t_, str(state), cams) for t_ in tasks]
        build = time.perf_counter() - t  # part of our push (conversion + validation), not of the raw one
        mb = len(json.dumps(payloads)) / 1e6

        # interleaved (raw, ours, raw, ours) into fresh projects: the SQLite db grows as we go, so order matters
        raw_t, our_t = [], []
        for r in range(a.rounds):
            raw = ensure_project(ls, f"bench raw {r}", list(CLASSES), [])
            t = time.perf_counter()
            for i in range(0, len(payloads), a.batch):
                ls.projects.import_tasks(id=raw, request=payloads[i : i + a.batch], return_task_ids=True)
            raw_t.append(time.perf_counter() - t)
            ours = ensure_project(ls, f"bench ours {r}", list(CLASSES), [])
            t = time.perf_counter()
            pushed = push_tasks(ls, ours, tasks, str(state), batch_size=a.batch)
            our_t.append(time.perf_counter() - t)
            assert len({p.task_id for p in pushed}) == a.tasks
        raw_push, our_push = sum(raw_t) / len(raw_t), sum(our_t) / len(our_t)
        print(f"push rounds raw {[round(x, 1) for x in raw_t]} ours {[round(x, 1) for x in our_t]}; "
              f"payload build (in ours) {build:.1f} s")

        t = time.perf_counter()
        snap = ls.projects.exports.create(id=raw, serialization_options={"predictions": {"only_id": False}})
        while str(ls.projects.exports.get(id=raw, export_pk=snap.id).status) != "completed":
            time.sleep(0.5)
        raw_tasks = json.loads(b"".join(ls.projects.exports.download(id=raw, export_pk=snap.id, export_type="JSON")))
        raw_pull = time.perf_counter() - t
        t = time.perf_counter()
        exported = export_tasks(ls, ours)
        rows = [analyse_task(x, run_id="bench", project_id=ours) for x in exported]
        our_pull = time.perf_counter() - t
        assert len(raw_tasks) == len(exported) == a.tasks and sum(r["frame"]["num_predicted"] for r in rows) == a.tasks * a.boxes

        print(f"{a.tasks} tasks x {a.boxes} boxes, payload {mb:.1f} MB, batch {a.batch}")
        print("| stage | raw SDK (s) | labeler (s) | raw/ours | labeler tasks/s |")
        print("|---|---|---|---|---|")
        print(f"| push | {raw_push:.1f} | {our_push:.1f} | {raw_push / our_push:.2f} | {a.tasks / our_push:.0f} |")
        print(f"| pull (export + convert) | {raw_pull:.1f} | {our_pull:.1f} | {raw_pull / our_pull:.2f} | {a.tasks / our_pull:.0f} |")
    finally:
        stop_server(state)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
