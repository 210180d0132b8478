"""Label Studio killed (SIGKILL) in the middle of a push, restarted on the same state dir, push re-run: every frame
is present exactly once."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

import pytest

from labeler.classes import CLASSES
from labeler.errors import StudioError
from labeler.studio.client import connect
from labeler.studio.push import ensure_project, list_frame_tasks, push_tasks
from labeler.studio.server import start_server, stop_server
from tests.review import CAMS, make_task, private_server, uid
from tests.review.test_pull import A, B, C, GRID

pytestmark = pytest.mark.studio
N = 60


def test_kill_mid_push_then_resume(studio, tmp_path):
    state = tmp_path / "ls"
    info, key = private_server(studio, state)
    port = int(info.url.rsplit(":", 1)[1])
    try:
        ls = connect(info.url, key)
        pid = ensure_project(ls, f"outage {uid()}", list(CLASSES), CAMS)
        tasks = [make_task(state / "assets", "out", 1000 + i, GRID, [A, B, C], ["car"] * 3, ["a", "b", "c"]) for i in range(N)]
        outcome = {}

        def push():
            try:
                outcome["pushed"] = push_tasks(connect(info.url, key), pid, tasks, str(state), batch_size=3)
            except StudioError as e:
                outcome["error"] = e

        th = threading.Thread(target=push)
        th.start()
        watcher = connect(info.url, key)
        deadline = time.monotonic() + 120
        landed = 0
        while landed < 6 and time.monotonic() < deadline:  # the first batches landed
            landed = len(list_frame_tasks(watcher, pid))
            time.sleep(0.1)
        assert 6 <= landed < N, f"{landed} tasks landed before the kill: cannot test an interrupted push"
        os.killpg(info.pid, signal.SIGKILL)
        time.sleep(1.0)
        # restart on the same state dir and port while the push is still retrying with backoff
        info2 = start_server(state, port=port, wait_s=300, document_root=state)
        assert info2.url == info.url
        th.join(timeout=300)
        assert not th.is_alive()
        ls2 = connect(info2.url, info2.token_file.read_text().strip())
        before = len(list_frame_tasks(ls2, pid))
        if "pushed" in outcome:  # the interrupted push resumed by itself once the server was back
            assert [p.status for p in outcome["pushed"]] == ["created"] * N
            assert before == N
        else:  # it gave up ("unreachable, re-run"): the re-run resumes
            assert "unreachable" in str(outcome["error"]) and landed <= before < N
        again = push_tasks(ls2, pid, tasks, str(state), batch_size=3)
        st = collections.Counter(p.status for p in again)
        assert st["existing"] == before and st["created"] == N - before and not st["updated"]
        keys = [t.data["frame_key"] for t in ls2.tasks.list(project=pid, page_size=1000)]
        assert len(keys) == N and sorted(set(keys)) == sorted(t.frame_key for t in tasks)
        assert all(t.total_predictions == 1 for t in ls2.tasks.list(project=pid, page_size=1000))
    finally:
        stop_server(state)
