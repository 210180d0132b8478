"""Shared fixtures. ``studio``: a real Label Studio server for the session (tests marked ``studio``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class StudioServer:
    url: str
    api_key: str
    state_dir: Path
    document_root: Path | None  # the server's local-files document root (None: unknown, external server)
    started_here: bool
    start_s: float  # seconds start_server took (0 when an external server is used)
    log_file: Path | None = None


@pytest.fixture(scope="session")
def studio(tmp_path_factory) -> StudioServer:
    """The server given by env LABEL_STUDIO_URL + LABEL_STUDIO_API_KEY, else the one `labeler studio up` started in
    env LABELER_STUDIO_STATE (what .ci/run does), else a fresh one started for the session.

    With an external server, ``document_root`` is env LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (tests needing
    local files skip without it). A started one lives in a session tmp state dir (first start ~60 s) and is stopped
    at the end.
    """
    url, key = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_API_KEY")
    if url and key:
        root = os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        state = tmp_path_factory.mktemp("studio-external")
        yield StudioServer(url.rstrip("/"), key, state, Path(root) if root else None, False, 0.0)
        return
    from labeler.studio.server import free_port, start_server, stop_server

    ci_state = os.environ.get("LABELER_STUDIO_STATE")
    if ci_state:
        # a server .ci/run started with `labeler studio up --state $LABELER_STUDIO_STATE`: reuse it (and its state dir,
        # so the server-management tests run against it too); .ci/run stops it
        t0 = time.monotonic()
        info = start_server(Path(ci_state), wait_s=300)
        yield StudioServer(info.url, info.token_file.read_text().strip(), Path(ci_state), Path(ci_state), True,
                           time.monotonic() - t0, info.log_file)
        return

    state = tmp_path_factory.mktemp("studio-state")
    t0 = time.monotonic()
    info = start_server(state, port=free_port(), wait_s=300)  # first start ~50-100 s on a loaded box
    dt = time.monotonic() - t0
    try:
        yield StudioServer(info.url, info.token_file.read_text().strip(), state, state, True, dt, info.log_file)
    finally:
        stop_server(state)


@pytest.fixture
def studio_client(studio):
    """An authenticated SDK client for :func:`studio` (per test: a test may replace the server's token)."""
    from labeler.studio.client import connect

    return connect(studio.url, studio.api_key)
