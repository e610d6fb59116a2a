"""Log redaction cannot be bypassed: stdlib and structlog loggers, any handler, exception
tracebacks (with values in them), secrets the process holds; and the session-wide leak scan
(tests/conftest.py) really finds clear text."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import structlog

from adapter.config import read_secret
from adapter.ops.logs import configure, install_redaction
from adapter.pipeline.metrics import observe_attempt

CODE = "0012345679"  # a valid-looking national code
MOBILE = "09123456789"
SECRET = "adapter-test-secret"


def capture(logger_name: str = "adapter.test.redaction") -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # a plain handler someone attached: no adapter formatter
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, stream, handler


def fail_with_values(national_code: str, secret: str) -> None:
    patient = {"national_code": national_code, "mobile": MOBILE}
    raise ValueError(f"insurer refused {patient} with client_secret={secret}")


def test_any_handler_gets_masked_messages_and_tracebacks() -> None:
    install_redaction()
    read_secret(None, None, SECRET, what="x", source="test")  # the process now holds this secret
    logger, stream, handler = capture()
    try:
        logger.info("patient %s mobile %s", CODE, MOBILE)
        logger.warning("national_code=%s token=%s", "۰۰۱۲۳۴۵۶۷۹", "eyJabc.def")
        try:
            fail_with_values(CODE, SECRET)
        except ValueError:
            logger.exception("send failed for %s", CODE)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert CODE not in text and MOBILE not in text and SECRET not in text and "eyJabc" not in text
    assert "**********" in text and "Traceback" in text and "fail_with_values" in text
    assert "ValueError: insurer refused" in text


def test_structlog_and_stdlib_through_configure_are_json_and_masked() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers), root.level
    configure("INFO", "json", stream)
    try:
        structlog.get_logger("adapter.test").info("sent", patient_national_code=CODE, note=f"for {CODE}",
                                                   password="hospital-password")
        logging.getLogger("adapter.test").error("stdlib %s", CODE)
        try:
            fail_with_values(CODE, SECRET)
        except ValueError:
            structlog.get_logger("adapter.test").exception("boom")
            logging.getLogger("adapter.test").exception("stdlib boom")
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert CODE not in text and SECRET not in text and "hospital-password" not in text
    assert [line["event"] for line in lines] == ["sent", "stdlib **********", "boom", "stdlib boom"]
    assert all("ValueError" in line["exception"] for line in lines[2:])


def test_configure_keeps_handlers_others_attached() -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    mine = logging.NullHandler()
    root.addHandler(mine)
    try:
        configure("INFO", "json", io.StringIO())
        configure("INFO", "json", io.StringIO())
        assert mine in root.handlers
        assert sum(1 for h in root.handlers if getattr(h, "_adapter_log_handler", False)) == 1
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])


def test_each_attempt_logs_ids_outcome_and_duration() -> None:
    from adapter.destinations.base import Job
    from adapter.destinations.outcome import Outcome, OutcomeClass

    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers), root.level
    configure("INFO", "json", stream)
    try:
        job = Job(submission_id=7, event_id="evt-1", destination="tamin", operation="create", params={},
                  payload={}, principal="", idempotency_key="k", ambiguous=False, subject_key=None,
                  after_key=None, attempts=2, deadline=0.0)
        observe_attempt(job, Outcome(OutcomeClass.transient, f"503 for patient {CODE}", duration_ms=120))
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines() if '"attempt"' in x]
    assert {k: line[k] for k in ("event", "event_id", "submission_id", "destination", "attempt", "outcome",
                                 "duration_ms")} == {"event": "attempt", "event_id": "evt-1", "submission_id": 7,
                                                     "destination": "tamin", "attempt": 2, "outcome": "transient",
                                                     "duration_ms": 120}
    assert CODE not in line["message"]


def test_the_session_leak_scan_finds_clear_text(log_leak_scan: Any) -> None:
    fresh = type(log_leak_scan)()
    assert fresh.identifiers > 100, "the scan knows the sample generator's national codes and mobiles"
    fresh.scan("nothing here **********", "t")
    assert fresh.hits == []
    fresh.scan("token adapter-sim-secret", "t")
    fresh.scan("a leaked code 1234567891 here", "t")
    assert len(fresh.hits) == 2
