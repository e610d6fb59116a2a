"""The status page as a person sees it: headless Chromium (Debian's ``chromium``, installed by
``scripts/services.sh``) loads ``/`` of a running status service with real data and takes a
screenshot; the picture must show a rendered page (not blank, not an error page)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
from PIL import Image

from adapter.app import build
from adapter.ops.http_status import StatusService
from adapter.pipeline.runner import Liveness
from adapter.store.models import InboxEvent, Submission
from tests.support import services as svc
from tests.support.pipeline import adapter_config


def test_status_page_renders_in_a_headless_browser(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        svc.unavailable("chromium is not installed")
    config = adapter_config(f"sqlite:///{tmp_path / 'a.db'}", "http://127.0.0.1:9", tmp_path, status__port=0)
    app = build(config)
    liveness = Liveness()
    liveness.attached(True)
    liveness.beat("dispatcher")
    with app.sessions() as session:
        session.add(InboxEvent(event_id="evt-1", event_type="prescription.created", status="accepted", body="{}"))
        for index, state in enumerate(["accepted", "accepted", "retry_wait", "rejected"]):
            session.add(Submission(event_id="evt-1", destination="tamin", operation=f"op{index}", state=state,
                                   idempotency_key=f"k{index}", last_error="insurer said no" if state == "rejected" else None,
                                   last_error_class="rejected" if state == "rejected" else None))
        session.commit()
    service = StatusService(app, liveness).start()
    try:
        page = httpx.get(service.base_url + "/", timeout=10).text
        assert "accepted=2" in page and "retry_wait=1" in page and "insurer said no" in page
        shot = tmp_path / "status.png"
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,800", f"--screenshot={shot}",
             service.base_url + "/"],
            capture_output=True, text=True, timeout=120)
        assert shot.exists(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    finally:
        service.stop()
        app.close()
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 800)
    histogram = image.histogram()
    dark = sum(histogram[:128])  # text and borders
    assert dark > 500, "the page looks blank"
    assert max(histogram) < image.size[0] * image.size[1] * 0.995, "a single colour: nothing rendered"
