"""The local Label Studio server: secrets, binding, signup, reuse, restart, client errors."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from labeler.errors import StudioError
from labeler.studio.client import connect, health
from labeler.studio.server import free_port, server_info, start_server, stop_server, studio_dir

pytestmark = pytest.mark.studio


def _own(studio):
    if not studio.started_here:
        pytest.skip("uses an external server (LABEL_STUDIO_URL): server-management checks need one started here")


def test_started_and_healthy(studio):
    assert health(studio.url)
    if studio.started_here:
        print(f"\nLabel Studio first start took {studio.start_s:.1f} s")
        assert studio.url.startswith("http://127.0.0.1:")


def test_secret_files_are_0600_and_token_not_logged(studio, capfd):
    _own(studio)
    d = studio_dir(studio.state_dir)
    for name in ("token", "admin_password"):
        mode = stat.S_IMODE((d / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    token = (d / "token").read_text().strip()
    assert token and token == studio.api_key
    info = start_server(studio.state_dir)  # reuse path, prints nothing secret either
    out = capfd.readouterr()
    assert token not in out.out and token not in out.err
    assert token not in info.log_file.read_text(errors="replace")
    # no other file in the state dir holds the token (db aside: it stores tokens by design)
    for p in d.rglob("*"):
        if p.is_file() and p.name not in ("token",) and p.suffix not in (".sqlite3",) and p.stat().st_size < 10_000_000:
            assert token not in p.read_text(errors="replace"), p


def test_reuses_running_server(studio):
    _own(studio)
    before = server_info(studio.state_dir)
    t0 = time.monotonic()
    again = start_server(studio.state_dir, port=free_port())
    assert again.pid == before.pid and again.url == studio.url
    assert time.monotonic() - t0 < 10


def test_revoked_token_is_replaced(studio):
    """A token rotated / revoked elsewhere: the next start_server (reuse) writes a new valid one."""
    _own(studio)
    ls = connect(studio.url, studio.api_key)
    ls.tokens.rotate(refresh=studio.api_key)  # blacklists ours; the new one is "lost"
    with pytest.raises(StudioError, match="refused the API key"):
        connect(studio.url, studio.api_key)
    info = start_server(studio.state_dir)
    new = info.token_file.read_text().strip()
    assert new != studio.api_key and stat.S_IMODE(info.token_file.stat().st_mode) == 0o600
    studio.api_key = new
    assert connect(studio.url, studio.api_key).users.whoami().email


def test_binds_loopback_only(studio):
    _own(studio)
    port = int(studio.url.rsplit(":", 1)[1])
    listeners = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            addr, p = f[1].split(":")
            if int(p, 16) == port and f[3] == "0A":  # LISTEN
                listeners.append((table, addr))
    assert listeners == [("/proc/net/tcp", "0100007F")], listeners  # 127.0.0.1 only, no IPv6 / 0.0.0.0


def test_signup_without_invite_refused(studio):
    s = requests.Session()
    s.get(f"{studio.url}/user/login/", timeout=30)
    r = s.post(
        f"{studio.url}/user/signup/",
        data={"email": "intruder@example.com", "password": "Sup3r-secret-pw", "csrfmiddlewaretoken": s.cookies.get("csrftoken")},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code == 403
    users = connect(studio.url, studio.api_key).users.list()
    assert "intruder@example.com" not in [u.email for u in users]
    assert requests.get(f"{studio.url}/api/projects/", timeout=30).status_code == 401


def test_connect_errors_and_precedence(studio, monkeypatch):
    with pytest.raises(StudioError, match="set LABEL_STUDIO_API_KEY or run `labeler studio up`"):
        connect(studio.url, "not-a-key")
    with pytest.raises(StudioError, match="unreachable"):
        connect(f"http://127.0.0.1:{free_port()}", "x")
    monkeypatch.setenv("LABEL_STUDIO_URL", studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong")
    with pytest.raises(StudioError, match="refused the API key"):
        connect()
    assert connect(api_key=studio.api_key).users.whoami().email  # explicit key beats env
    if studio.started_here:
        monkeypatch.delenv("LABEL_STUDIO_URL")
        monkeypatch.delenv("LABEL_STUDIO_API_KEY")
        assert connect(state_dir=studio.state_dir).users.whoami().email  # token file of the state dir


def test_error_on_start_timeout(tmp_path):
    """An unusable data dir: the error carries the server log's last lines."""
    state = tmp_path / "s"
    d = state / "label-studio"
    d.mkdir(parents=True)
    (d / "label_studio.sqlite3").write_text("this is not a database")
    with pytest.raises(StudioError, match=r"(?s)Label Studio (exited|did not answer).*\n.+"):
        start_server(state, port=free_port(), wait_s=120)
    assert server_info(state) is None or not health(server_info(state).url)
    stop_server(state)


def test_detached_restart_keeps_token(studio):
    """stop -> start from a child Python that exits: the server outlives it. First with the port held by someone
    else (a free port is chosen), then on the old port again: same URL, same token."""
    _own(studio)
    port = int(studio.url.rsplit(":", 1)[1])
    code = "import sys; from labeler.studio.server import start_server; print(start_server(sys.argv[1], port=int(sys.argv[2])).url)"

    def restart() -> str:
        assert stop_server(studio.state_dir)
        assert not health(studio.url)
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-c", code, str(studio.state_dir), str(port)], check=True, timeout=300, capture_output=True, text=True
        )
        print(f"\nLabel Studio restart took {time.monotonic() - t0:.1f} s")
        assert studio.api_key not in r.stdout + r.stderr
        return r.stdout.strip().splitlines()[-1]

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        squatter_port = squatter.getsockname()[1]
        port = squatter_port
        url = restart()
        assert url != f"http://127.0.0.1:{squatter_port}" and health(url)
        assert connect(url, studio.api_key).users.whoami().email
    port = int(studio.url.rsplit(":", 1)[1])
    studio_url = studio.url
    studio.url = url  # restart() stops the server found in the state dir
    assert restart() == studio_url
    studio.url = studio_url
    assert health(studio.url) and server_info(studio.state_dir).url == studio.url
    assert (studio_dir(studio.state_dir) / "token").read_text().strip() == studio.api_key  # not replaced
    assert connect(studio.url, studio.api_key).users.whoami().email
