"""Who runs an ``adapter`` command, and the audit of every command that changes state.

``current_who`` takes the OS account from the process's uid (``pwd``), not from ``LOGNAME`` /
``USER``, which anyone can set; ``SUDO_USER`` is kept beside it (it names the person when root
was reached through sudo). ``--actor`` stays what it always was, free text, and is stored as
*claimed*. ``audited`` wraps a command: the ``started`` row is committed before the command
changes anything, so a change without its audit row cannot happen (a store that takes no writes
stops the command first), and the row is finished ``ok`` or ``failed`` however the command ends.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from adapter.redact import redact_text
from adapter.store import operator_actions
from adapter.store.operator_actions import FAILED, OK, Who

log = logging.getLogger(__name__)


def current_who(claimed_actor: str | None = None, environ: Mapping[str, str] | None = None,
                uid: int | None = None) -> Who:
    """The OS account of this process, the sudo caller (when set) and the claimed ``--actor``."""
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    try:
        os_user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (some containers): the number is still the truth
        os_user = f"uid:{uid}"
    sudo_user = (env.get("SUDO_USER") or "").strip() or None
    claimed = (claimed_actor or "").strip() or None
    return Who(os_user=os_user, sudo_user=sudo_user, claimed_actor=claimed, host=socket.gethostname())


def actor_name(who: Who) -> str:
    """The name the command's own records carry (outage started_by, a replay's state changes):
    the ``--actor`` given, else the OS account (with the sudo caller when there is one)."""
    if who.claimed_actor:
        return who.claimed_actor[:64]
    if who.sudo_user and who.sudo_user != who.os_user:
        return f"{who.sudo_user} (sudo {who.os_user})"[:64]
    return who.os_user


@dataclass
class Action:
    """The command's handle on its audit row: ``done``/``failed`` say how it ended, in words."""

    id: int
    result: str | None = None
    detail: str | None = None

    def done(self, detail: str | None = None) -> None:
        self.result, self.detail = OK, detail

    def failed(self, detail: str) -> None:
        self.result, self.detail = FAILED, detail


@contextmanager
def audited(sessions: sessionmaker[Session], who: Who, command: str, arguments: dict[str, Any],
            reason: str | None) -> Iterator[Action]:
    """Audit the block as one operator action. Ends ``failed`` on an exception (a clean exit with
    code 0 -- typer's ``Exit(0)``, ``SystemExit(0)`` -- counts as ending), or when the block
    called ``failed``; ``ok`` otherwise."""
    action = Action(operator_actions.begin(sessions, who, command, arguments, reason))
    try:
        yield action
    except BaseException as exc:
        if _exit_code(exc) == 0:
            _finish(sessions, action.id, action.result or OK, action.detail)
        else:
            _finish(sessions, action.id, FAILED, action.detail or _describe(exc))
        raise
    else:
        _finish(sessions, action.id, action.result or OK, action.detail)


def _exit_code(exc: BaseException) -> int | None:
    """0 for an exit that means success; None for anything else that is not an exit."""
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    code = getattr(exc, "exit_code", None)  # click's / typer's Exit
    return code if isinstance(code, int) else None


def _describe(exc: BaseException) -> str:
    code = _exit_code(exc)
    if code is not None:
        return f"exit code {code}"
    text = str(exc).strip()
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:500]


def _finish(sessions: sessionmaker[Session], action_id: int, result: str, detail: str | None) -> None:
    """Finish the row; a store gone away after the command ran leaves the row ``started`` and
    says so, without hiding how the command itself ended."""
    try:
        operator_actions.finish(sessions, action_id, result, detail)
    except Exception as exc:
        log.error("operator action %s ran (%s) but its audit row could not be finished: %s",
                  action_id, result, redact_text(str(exc)))
