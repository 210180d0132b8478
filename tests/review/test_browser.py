"""Headless Chromium logs in through the login form, opens a task and sees every pre-annotated box drawn.

Counts regions three ways: the editor's store (window.Htx), the region list (outliner) and the Konva canvas shapes.
Saves a screenshot to $LABELER_TEST_ARTIFACTS (default: the test's tmp dir). Needs the Debian packages `chromium` and
`chromium-driver` and the Python package selenium (skips with a message without them).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from labeler.classes import CLASSES
from labeler.studio.push import ensure_local_storage, ensure_project, push_tasks
from labeler.studio.server import DEFAULT_USERNAME
from tests.review import CAMS, make_task, uid
from tests.review.test_pull import A, B, C, GRID

pytestmark = pytest.mark.studio
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]

COUNT_JS = """
const out = {store: null, outliner: null, konva: null};
try { const a = window.Htx.annotationStore.selected; out.store = a ? a.regions.length : null; } catch (e) {}
out.outliner = document.querySelectorAll('.lsf-tree__node_type_rectangleregion').length;
try { out.konva = window.Konva.stages.map(s => s.find('Rect').filter(r => r.visible() && r.width() > 0).length); } catch (e) {}
return out;
"""


def _password(studio) -> str | None:
    pw = Path(studio.state_dir) / "label-studio" / "admin_password"
    return pw.read_text().strip() if pw.exists() else os.environ.get("LABEL_STUDIO_PASSWORD")


def test_task_page_draws_every_predicted_box(studio, studio_client, tmp_path):
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("chromium / chromedriver not installed: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    if studio.document_root is None or _password(studio) is None:
        pytest.skip("external server without a document root or admin password")
    ls = studio_client
    assets = Path(studio.document_root) / f"br-{uid()}"
    task = make_task(assets, "br", 7, GRID, [A, B, C], ["car", "car", "truck"], ["a", "b", "c"],
                     [("a", 3.5, 4.25, 30.0, 40.0, "car", 0.8)])
    n_pred = len(task.boxes) + len(task.cameras[0].boxes)
    pid = ensure_project(ls, f"browser {uid()}", list(CLASSES), CAMS)
    ensure_local_storage(ls, pid, str(assets), str(studio.document_root))
    (pushed,) = push_tasks(ls, pid, [task], str(studio.document_root))

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        opts.add_argument(f)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    out_dir = Path(os.environ.get("LABELER_TEST_ARTIFACTS") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        drv.get(f"{studio.url}/user/login/")
        drv.find_element(By.NAME, "email").send_keys(os.environ.get("LABEL_STUDIO_USERNAME") or DEFAULT_USERNAME)
        drv.find_element(By.NAME, "password").send_keys(_password(studio))
        drv.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        deadline = time.monotonic() + 30
        while "/user/login" in drv.current_url and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "/user/login" not in drv.current_url, "login through the form failed"
        drv.get(f"{studio.url}/projects/{pid}/data?task={pushed.task_id}")
        counts: dict = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = drv.execute_script(COUNT_JS)
            if counts.get("store") == n_pred and counts.get("outliner") == n_pred:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # let the canvas finish drawing before the screenshot
        shot = out_dir / f"studio_task_{pushed.task_id}.png"
        drv.save_screenshot(str(shot))
        counts = drv.execute_script(COUNT_JS)
    finally:
        drv.quit()
    assert counts["store"] == n_pred and counts["outliner"] == n_pred, counts
    assert counts["konva"] and sum(counts["konva"]) >= n_pred, counts  # every region is drawn on a canvas
    assert shot.stat().st_size > 10_000
