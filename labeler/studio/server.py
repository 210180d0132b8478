"""Start, reuse and stop a local Label Studio server (a detached ``label-studio`` subprocess).

Everything lives under ``<state_dir>/label-studio/``:

* the Label Studio data (SQLite db, media, its ``.env`` with the SECRET_KEY that signs tokens: keep the dir);
* ``admin_password`` and ``token`` (mode 0600): the admin's password and personal access token (a JWT refresh token);
* ``server.json`` (url, port, pid, document root), ``server.pid`` and ``server.log``.

The server binds 127.0.0.1 only, refuses signup without an invite, has telemetry off and serves local files
from a document root. It keeps running after the Python process exits; :func:`start_server` reuses a healthy
server of the same state dir, :func:`stop_server` stops it. The token is never printed or logged.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from labeler.errors import StudioError

DEFAULT_USERNAME = "admin@labeler.local"
_SUBDIR = "label-studio"
# bare names Label Studio also reads: never pass them to the child
_BARE_ENV = ("USERNAME", "PASSWORD", "HOST", "PORT")


@dataclass(frozen=True)
class ServerInfo:
    """A running server: where it listens and where its secrets and log are (never the secrets themselves)."""

    url: str
    username: str
    password_file: Path
    token_file: Path
    pid: int
    log_file: Path


def studio_dir(state_dir) -> Path:
    """``<state_dir>/label-studio``: Label Studio's data dir and our server files."""
    return Path(state_dir).expanduser().resolve() / _SUBDIR


def token_file(state_dir) -> Path:
    """Path of the 0600 file holding the admin's personal access token."""
    return studio_dir(state_dir) / "token"


def label_studio_bin() -> Path:
    """The ``label-studio`` executable next to the running Python (the venv's)."""
    exe = Path(sys.executable).parent / "label-studio"
    if not exe.exists():
        raise StudioError(f"{exe} not found: install the server with `pip install 'labeler[studio]'` (label-studio==1.23.2)")
    return exe


def health(url: str, timeout: float = 3.0) -> bool:
    """True when ``GET <url>/health`` answers 200."""
    try:
        return requests.get(url.rstrip("/") + "/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (created so, never world-readable in between)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is not "taken"
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and is a label-studio process (guards against pid reuse)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust kill(0)
    return b"label-studio" in cmd or b"label_studio" in cmd


def _read_state(d: Path) -> dict | None:
    try:
        return json.loads((d / "server.json").read_text())
    except (OSError, ValueError):
        return None


def _log_tail(log: Path, n: int = 30) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return "(no server log)"
    return "\n".join(lines)


def _child_env(d: Path, port: int, document_root: Path, username: str, password: str, allow_local_webhooks: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _BARE_ENV and not k.startswith("LABEL_STUDIO_")}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(d),
        LABEL_STUDIO_USERNAME=username,
        LABEL_STUDIO_PASSWORD=password,
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
        LATEST_VERSION_CHECK="false",
        PYTHONUNBUFFERED="1",
    )
    if allow_local_webhooks:  # webhooks to 127.0.0.1 (labeler webhook) are refused (403) otherwise
        env["LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS"] = "false"
    return env


def _wait_healthy(url: str, proc: subprocess.Popen | None, pid: int, log: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if health(url, timeout=2.0):
            return
        exited = proc.poll() is not None if proc is not None else not _pid_alive(pid)
        if exited:
            raise StudioError(f"Label Studio exited during start (log {log}):\n{_log_tail(log)}")
        time.sleep(1.0)
    raise StudioError(f"Label Studio did not answer {url}/health within {wait_s:.0f} s (log {log}):\n{_log_tail(log)}")


def _obtain_token(url: str, username: str, password: str) -> str:
    """Log in through the web form and create the user's personal access token (blacklisting a lost one)."""
    s = requests.Session()
    r = s.get(f"{url}/user/login/", timeout=30)
    csrf = s.cookies.get("csrftoken")
    if r.status_code != 200 or not csrf:
        raise StudioError(f"cannot open {url}/user/login/ (HTTP {r.status_code})")
    r = s.post(
        f"{url}/user/login/",
        data={"email": username, "password": password, "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{url}/user/login/"},
        timeout=30,
        allow_redirects=False,
    )
    if r.status_code not in (302, 303) or "sessionid" not in s.cookies:
        raise StudioError(
            f"login as {username} failed (HTTP {r.status_code}): the stored admin password does not match the server's; "
            "stop the server and remove the state dir to start over"
        )
    hdr = {"X-CSRFToken": s.cookies.get("csrftoken", csrf), "Referer": url + "/"}
    r = s.post(f"{url}/api/token/", headers=hdr, timeout=30)
    if r.status_code == 409:  # one PAT per user and ours is lost: revoke it, then create a new one
        for item in s.get(f"{url}/api/token/", timeout=30).json():
            s.post(f"{url}/api/token/blacklist/", json={"refresh": item["token"]}, headers=hdr, timeout=30)
        r = s.post(f"{url}/api/token/", headers=hdr, timeout=30)
    if r.status_code not in (200, 201) or "token" not in r.json():
        raise StudioError(f"cannot create an API token on {url} (HTTP {r.status_code})")
    return r.json()["token"]


def _token_valid(url: str, token: str, tries: int = 10) -> bool:
    """True when the server accepts ``token`` (a JWT refresh token), False when it answers 401 (revoked / rotated /
    foreign). Other answers (a server still warming up) are retried: a good token is never replaced by mistake."""
    status = None
    for _ in range(tries):
        try:
            status = requests.post(f"{url}/api/token/refresh/", json={"refresh": token}, timeout=30).status_code
        except requests.RequestException as e:
            status = type(e).__name__
        if status in (200, 401):
            return status == 200
        time.sleep(1.0)
    raise StudioError(f"Label Studio at {url} does not answer token checks (last: {status}); see {url}/health and the server log")


def _info(d: Path, url: str, username: str, pid: int) -> ServerInfo:
    return ServerInfo(url, username, d / "admin_password", d / "token", pid, d / "server.log")


def start_server(
    state_dir,
    port: int = 8080,
    username: str = DEFAULT_USERNAME,
    password: str | None = None,
    wait_s: float = 180,
    document_root=None,
    allow_local_webhooks: bool = False,
) -> ServerInfo:
    """Start (or reuse) the Label Studio server of ``state_dir`` and make sure its API token file exists.

    Args:
        state_dir: our state folder; the server's data goes to ``<state_dir>/label-studio/``.
        port: wanted port on 127.0.0.1; a free one is chosen when something else holds it.
        username: admin e-mail, created on first start.
        password: admin password; default: the stored one, else a new random one (stored 0600).
        wait_s: how long to wait for ``/health`` (first start runs migrations: ~60 s).
        document_root: folder local files are served from (default ``state_dir``).
        allow_local_webhooks: start with ``LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS=false`` so webhooks may target
            127.0.0.1 (``labeler webhook``); a running server started without it is an error (stop it first).
    Raises:
        StudioError: the server did not start (with the end of its log), or the token could not be obtained.
    """
    d = studio_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    with open(d / ".lock", "w") as lock:  # one start at a time per state dir
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start_locked(d, Path(state_dir), port, username, password, wait_s, document_root, allow_local_webhooks)


def _start_locked(d: Path, state_dir: Path, port, username, password, wait_s, document_root, allow_local_webhooks=False) -> ServerInfo:
    doc_root = Path(document_root if document_root is not None else state_dir).expanduser().resolve()
    pw_file, tok_file, log = d / "admin_password", d / "token", d / "server.log"
    if password is None:
        password = pw_file.read_text().strip() if pw_file.exists() else secrets.token_urlsafe(24)
    _write_secret(pw_file, password)

    st = _read_state(d)
    if st and _pid_alive(int(st["pid"])):
        if Path(st["document_root"]) != doc_root:
            raise StudioError(
                f"the Label Studio server of {state_dir} (pid {st['pid']}) serves local files from {st['document_root']}, "
                f"not {doc_root}: stop it first (`stop_server` / `labeler studio down`)"
            )
        if allow_local_webhooks and not st.get("allow_local_webhooks"):
            raise StudioError(
                f"the Label Studio server of {state_dir} (pid {st['pid']}) was started without local webhooks: "
                "stop it first (`stop_server` / `labeler studio down`)"
            )
        _wait_healthy(st["url"], None, int(st["pid"]), log, wait_s)
        info = _info(d, st["url"], st.get("username", username), int(st["pid"]))
    else:
        if not _port_free(port):
            port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [str(label_studio_bin()), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
        with open(log, "ab") as logf:
            proc = subprocess.Popen(
                cmd,
                env=_child_env(d, port, doc_root, username, password, allow_local_webhooks),
                cwd=d,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = {"url": url, "port": port, "pid": proc.pid, "document_root": str(doc_root), "username": username,
                 "allow_local_webhooks": bool(allow_local_webhooks)}
        (d / "server.json").write_text(json.dumps(state, indent=1))
        (d / "server.pid").write_text(f"{proc.pid}\n")
        try:
            _wait_healthy(url, proc, proc.pid, log, wait_s)
        except StudioError:
            _terminate(proc.pid)
            raise
        info = _info(d, url, username, proc.pid)

    token = tok_file.read_text().strip() if tok_file.exists() else ""
    if not token or not _token_valid(info.url, token):  # missing, or revoked / rotated elsewhere
        _write_secret(tok_file, _obtain_token(info.url, info.username, password))
    return info


def server_info(state_dir) -> ServerInfo | None:
    """The running server of ``state_dir``, or None."""
    d = studio_dir(state_dir)
    st = _read_state(d)
    if not st or not _pid_alive(int(st["pid"])):
        return None
    return _info(d, st["url"], st.get("username", DEFAULT_USERNAME), int(st["pid"]))


def _terminate(pid: int, timeout: float = 20.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)  # own session: pgid == pid, children included
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
                    return
            except ChildProcessError:
                pass
            if not _pid_alive(pid):
                return
            time.sleep(0.2)


def stop_server(state_dir) -> bool:
    """Stop the server of ``state_dir``; True when one was running."""
    d = studio_dir(state_dir)
    st = _read_state(d)
    running = bool(st) and _pid_alive(int(st["pid"]))
    if running:
        _terminate(int(st["pid"]))
    for name in ("server.json", "server.pid"):
        (d / name).unlink(missing_ok=True)
    return running
