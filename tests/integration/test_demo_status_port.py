"""``adapter demo`` on a machine where port 8090 is taken (an ``adapter run``, another demo): the
demo's status service comes up on a free port, and the demo says which, instead of running
without it."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapter.ops.demo import run_demo
from tests.support.pipeline import EMBEDDED

STATUS_PORT = 8090  # config/embedded.yaml takes the default status.port


@pytest.fixture
def port_8090_busy() -> Iterator[None]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", STATUS_PORT))
        holder.listen(1)
    except OSError:  # something on this machine already listens there: busy all the same
        pass
    try:
        yield
    finally:
        holder.close()


def test_the_demo_takes_a_free_status_port_when_8090_is_busy(tmp_path: Path, port_8090_busy: None) -> None:
    notices: list[str] = []
    answers: list[int] = []

    def probe(_: int, __: int) -> None:  # called while the adapter runs, its status service up
        if notices and not answers:
            url = re.search(r"http://\S+/", notices[0])
            assert url is not None, notices
            answers.append(httpx.get(url.group(0) + "healthz", timeout=10).status_code)

    summary = run_demo(EMBEDDED, tmp_path / "demo", patients=1, progress=probe, notice=notices.append)
    assert len(notices) == 1 and f"port {STATUS_PORT} is busy" in notices[0], notices
    assert f":{STATUS_PORT}/" not in notices[0]
    assert answers == [200], "the status service answered on the port the demo named"
    assert summary["complete"] is True
