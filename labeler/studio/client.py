"""Connect to a Label Studio server with the SDK, with clear errors when it is down or the key is wrong."""

from __future__ import annotations

import os

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from labeler.errors import StudioError
from labeler.studio.server import health, server_info, token_file

_KEY_HINT = "set LABEL_STUDIO_API_KEY or run `labeler studio up`"
_URL_HINT = "set LABEL_STUDIO_URL or run `labeler studio up`"

__all__ = ["connect", "health"]


def connect(url: str | None = None, api_key: str | None = None, state_dir=None, timeout: float = 120.0) -> LabelStudio:
    """An authenticated SDK client, checked with one ``whoami`` call.

    Precedence for each of url and api_key: explicit argument > env ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``
    > the running server and token file of ``state_dir`` (see :func:`labeler.studio.server.start_server`).
    Always passes base_url and api_key explicitly (the SDK reads ``LABEL_STUDIO_API_KEY`` at import time only).

    Raises:
        StudioError: no url/key found, the server is unreachable, or the key is refused (401/403).
    """
    url = url or os.environ.get("LABEL_STUDIO_URL")
    api_key = api_key or os.environ.get("LABEL_STUDIO_API_KEY")
    if state_dir is not None and (not url or not api_key):
        info = server_info(state_dir)
        if not url and info is not None:
            url = info.url
        tf = token_file(state_dir)
        if not api_key and tf.exists():
            api_key = tf.read_text().strip()
    if not url:
        raise StudioError(f"no Label Studio URL: {_URL_HINT}")
    if not api_key:
        raise StudioError(f"no Label Studio API key: {_KEY_HINT}")
    url = url.rstrip("/")
    if not health(url):
        raise StudioError(f"Label Studio at {url} is unreachable (GET /health failed): {_URL_HINT}")
    client = LabelStudio(base_url=url, api_key=api_key, timeout=timeout)
    try:
        client.users.whoami()
    except ApiError as e:
        if e.status_code in (401, 403):
            raise StudioError(f"Label Studio at {url} refused the API key (HTTP {e.status_code}): {_KEY_HINT}") from None
        raise StudioError(f"Label Studio at {url} answered HTTP {e.status_code} to whoami") from None
    except httpx.HTTPError as e:
        raise StudioError(f"Label Studio at {url} is unreachable ({type(e).__name__}): {_URL_HINT}") from None
    return client
