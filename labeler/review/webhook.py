"""A small webhook receiver: Label Studio posts ANNOTATION_CREATED / ANNOTATION_UPDATED (and bulk variants) and the
receiver pulls the run that owns the project, debounced (a burst of submissions gives one pull).

Runs on 127.0.0.1 only (stdlib ``http.server``). Registered in each project with a random shared secret sent as
the ``X-Labeler-Token`` header; posts without it are refused (403). Label Studio refuses webhook URLs on 127.0.0.1
unless its server runs with ``LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS=false``
(``start_server(..., allow_local_webhooks=True)``). Without Redis, Label Studio sends webhooks synchronously with a
1 s timeout, so the handler only schedules the pull and answers at once.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

PULL_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED")
TOKEN_HEADER = "X-Labeler-Token"


def register_webhook(client, project_id: int, url: str, token: str) -> int:
    """Create (or update) the project's webhook to ``url`` for :data:`PULL_ACTIONS`; returns its id."""
    from labeler.studio.push import _retry

    actions = list(PULL_ACTIONS)
    for w in _retry("listing webhooks", client.webhooks.list, project=str(project_id)):
        if w.url == url and w.project == project_id:
            _retry("updating the webhook", client.webhooks.update, id=w.id, url=url, actions=actions,
                   headers={TOKEN_HEADER: token}, is_active=True, send_payload=True, send_for_all_actions=False)
            return w.id
    w = _retry("creating the webhook", client.webhooks.create, url=url, project=project_id, actions=actions,
               headers={TOKEN_HEADER: token}, is_active=True, send_payload=True, send_for_all_actions=False)
    return w.id


class Receiver:
    """Debounced pulls of runs keyed by Label Studio project id.

    Args:
        runs: ``project_id -> run_dir``.
        pull: called as ``pull(run_dir)`` (default :func:`labeler.review.pull.pull_run` with a fresh client).
        debounce_s: wait this long after the last event of a project before pulling.
        port: 0 = any free port.
    """

    def __init__(self, runs: dict[int, str], pull=None, debounce_s: float = 2.0, port: int = 0, token: str | None = None):
        self.runs = {int(k): str(v) for k, v in runs.items()}
        self.pull = pull or _default_pull
        self.debounce_s = debounce_s
        self.token = token or secrets.token_urlsafe(24)
        self.pulls: list[tuple[str, object]] = []  # (run_dir, PullResult or the exception)
        self.events = 0
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/webhook"

    def _handler(self):
        rx = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                log.debug("webhook %s", fmt % args)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if not hmac.compare_digest(self.headers.get(TOKEN_HEADER, ""), rx.token):
                    self.send_response(403)
                    self.end_headers()
                    return
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                rx.on_event(payload)

            def do_GET(self):  # liveness
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok\n")

        return H

    def on_event(self, payload: dict) -> None:
        action = payload.get("action")
        proj = payload.get("project")
        pid = proj.get("id") if isinstance(proj, dict) else proj
        if pid is None and isinstance(payload.get("task"), dict):
            pid = payload["task"].get("project")
        self.events += 1
        if action not in PULL_ACTIONS or pid is None or int(pid) not in self.runs:
            log.debug("webhook %s for project %s: ignored", action, pid)
            return
        run = self.runs[int(pid)]
        with self._lock:
            old = self._timers.get(run)
            if old is not None:
                old.cancel()
            t = threading.Timer(self.debounce_s, self._pull, args=(run,))
            t.daemon = True
            self._timers[run] = t
            t.start()

    def _pull(self, run: str) -> None:
        try:
            res = self.pull(run)
            log.info("pulled %s after a webhook", run)
        except Exception as e:  # keep serving; the next event retries
            log.exception("pull of %s failed", run)
            res = e
        self.pulls.append((run, res))

    def start(self) -> "Receiver":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for t in self._timers.values():
                t.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


def _default_pull(run_dir: str):
    from labeler.review.pull import pull_run, state_of_run

    return pull_run(run_dir, bank_state=str(state_of_run(run_dir)))


def run_projects(run_dir: str) -> list[int]:
    """Label Studio project ids of a run (from its review_tasks table)."""
    from labeler.io.tables import read_table

    return sorted({int(p) for p in read_table(run_dir, "review_tasks").column("project_id").to_pylist()})


def serve(run_dirs: list[str], client, port: int = 0, debounce_s: float = 2.0, echo=print) -> Receiver:
    """Start a receiver for ``run_dirs`` and register it in their projects; pulls use ``client`` (caller stops it)."""
    from labeler.review.pull import pull_run, state_of_run

    runs = {pid: r for r in run_dirs for pid in run_projects(r)}
    rx = Receiver(runs, pull=lambda run: pull_run(run, client, bank_state=str(state_of_run(run))), debounce_s=debounce_s,
                  port=port).start()
    for pid in sorted(runs):
        register_webhook(client, pid, rx.url, rx.token)
        echo(f"webhook of project {pid} -> {rx.url} (pulls {runs[pid]})")
    return rx
