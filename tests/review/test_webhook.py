"""A real server (local webhooks allowed) posts to the receiver when an annotation is created -> a pull happens."""

from __future__ import annotations

import time

import pytest
import requests

from labeler.classes import CLASSES
from labeler.io.tables import read_table
from labeler.review.webhook import TOKEN_HEADER, Receiver, register_webhook, serve
from labeler.studio.client import connect
from labeler.studio.push import ensure_project, push_tasks
from labeler.studio.server import stop_server
from tests.review import CAMS, make_run_dir, make_task, private_server, uid, write_review_tasks
from tests.review.test_pull import A, B, GRID

pytestmark = pytest.mark.studio


def test_annotation_created_triggers_pull(studio, tmp_path):
    state = tmp_path / "ls"
    info, key = private_server(studio, state, allow_local_webhooks=True)
    rx = None
    try:
        ls = connect(info.url, key)
        tasks = [make_task(state / "assets", "wh", 100 + i, GRID, [A, B], ["car", "car"], ["a", "b"]) for i in range(2)]
        pid = ensure_project(ls, f"webhook {uid()}", list(CLASSES), CAMS)
        pushed = push_tasks(ls, pid, tasks, str(state))
        run = tmp_path / "runs" / "wh"
        make_run_dir(run, "run-wh", tasks, [])
        write_review_tasks(run, "run-wh", pid, tasks, pushed)

        rx = serve([str(run)], ls, debounce_s=0.5, echo=lambda *_: None)
        assert register_webhook(ls, pid, rx.url, rx.token) == register_webhook(ls, pid, rx.url, rx.token)  # idempotent
        assert len([w for w in ls.webhooks.list(project=str(pid)) if w.url == rx.url]) == 1
        assert requests.post(rx.url, json={"action": "ANNOTATION_CREATED", "project": {"id": pid}}, timeout=5).status_code == 403
        assert not (run / "tables" / "review_log").exists()

        # two quick submissions -> one debounced pull
        for p in pushed:
            pred = ls.predictions.list(task=p.task_id)[0]
            ls.annotations.create(id=p.task_id, result=pred.result, parent_prediction=pred.id, lead_time=2.0)
        deadline = time.monotonic() + 60
        while not rx.pulls and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rx.events >= 2 and len(rx.pulls) == 1, rx.pulls
        assert not isinstance(rx.pulls[0][1], Exception), rx.pulls[0][1]
        rows = read_table(str(run), "review_log").to_pylist()
        assert sorted((r["timestamp_ns"], r["object_id"], r["action"]) for r in rows) == [
            (100, "a", "accepted"), (100, "b", "accepted"), (101, "a", "accepted"), (101, "b", "accepted")]
    finally:
        if rx is not None:
            rx.stop()
        stop_server(state)


def test_receiver_ignores_other_projects_and_actions():
    seen = []
    rx = Receiver({7: "/run"}, pull=seen.append, debounce_s=0.05, token="t").start()
    try:
        h = {TOKEN_HEADER: "t"}
        for body in ({"action": "PROJECT_UPDATED", "project": {"id": 7}}, {"action": "ANNOTATION_CREATED", "project": {"id": 8}},
                     {"action": "ANNOTATION_UPDATED", "project": {"id": 7}}, {"action": "ANNOTATION_CREATED", "project": {"id": 7}}):
            assert requests.post(rx.url, json=body, headers=h, timeout=5).status_code == 200
        assert requests.post(rx.url, data=b"{nope", headers=h, timeout=5).status_code == 400
        time.sleep(0.5)
        assert seen == ["/run"] and rx.events == 4
    finally:
        rx.stop()
