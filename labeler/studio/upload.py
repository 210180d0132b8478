"""Uploading review images to a Label Studio server that cannot see our files (a remote server).

Label Studio stores uploads per project; files are uploaded once into a holding project
(``POST /api/projects/{id}/import?commit_to_project=false``) and referenced from tasks of any project as
``/data/upload/<project>/<file>``. Files are named by their content hash, so a re-run finds and reuses what it
uploaded before (tasks keep the same URLs and are not re-written).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests
from label_studio_sdk import LabelStudio

from labeler.errors import StudioError

HOLDING_TITLE = "labeler uploads (holding project, do not label)"


class ImageUploader:
    """Maps local image paths to server URLs, uploading each distinct file once."""

    def __init__(self, client: LabelStudio, timeout_s: float = 120.0):
        self.client = client
        self.timeout_s = timeout_s
        self.base = client._client_wrapper.get_base_url().rstrip("/")
        self.project_id = self._holding_project()
        self.known = self._existing()

    def _auth(self) -> dict:
        return {k: v for k, v in self.client._client_wrapper.get_headers().items() if k.lower() == "authorization"}

    def _holding_project(self) -> int:
        found = [p for p in self.client.projects.list(title=HOLDING_TITLE) if p.title == HOLDING_TITLE]
        if found:
            return min(p.id for p in found)
        return self.client.projects.create(title=HOLDING_TITLE, label_config='<View><Image name="i" value="$image"/></View>').id

    def _existing(self) -> dict[str, str]:
        r = requests.get(f"{self.base}/api/projects/{self.project_id}/file-uploads", params={"all": "true"},
                         headers=self._auth(), timeout=self.timeout_s)
        if r.status_code != 200:
            raise StudioError(f"cannot list uploaded files of project {self.project_id}: HTTP {r.status_code}")
        out = {}
        for f in r.json():
            name = str(f.get("file", ""))
            key = name.rsplit("/", 1)[-1].split("-", 1)[-1]  # "<uuid8>-<sha>.<ext>" -> "<sha>.<ext>"
            out[key] = "/data/" + name
        return out

    def url(self, path: str) -> str:
        """Server URL of the image at ``path`` (uploaded now unless an identical file is there already)."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise StudioError(f"cannot read review image {p}: {e}") from None
        key = hashlib.sha256(raw).hexdigest()[:20] + p.suffix.lower()
        if key in self.known:
            return self.known[key]
        r = requests.post(f"{self.base}/api/projects/{self.project_id}/import", params={"commit_to_project": "false"},
                          headers=self._auth(), files={key: (key, raw)}, timeout=self.timeout_s)
        if r.status_code not in (200, 201):
            raise StudioError(f"uploading {p} to {self.base} failed: HTTP {r.status_code} {r.text[:200]}")
        ids = r.json().get("file_upload_ids") or []
        if not ids:
            raise StudioError(f"uploading {p}: the server returned no file id")
        g = requests.get(f"{self.base}/api/import/file-upload/{ids[0]}", headers=self._auth(), timeout=self.timeout_s)
        if g.status_code != 200:
            raise StudioError(f"reading upload {ids[0]} back failed: HTTP {g.status_code}")
        self.known[key] = "/data/" + g.json()["file"]
        return self.known[key]
