"""The reply outbox: publishes the ``replies`` rows to the HIS, in the order they were written.

Rows are written in the transaction of the state change that causes them (intake, the dispatcher,
the paper-fallback records); this loop, on a thread of its own in ``adapter run``, reads the
pending ones in ``id`` order, hands each to the sink (``adapter.replies.sinks``) and marks it
``published`` once the sink has it. At least once: a crash between a delivery and its mark
delivers that reply again after the restart, with the same ``reply_id``.

Order: replies leave in ``id`` order. A broker that is down stops the line (everything waits,
nothing overtakes); a webhook that refuses one reply retries it with backoff while the replies
behind it wait, and after ``replies.webhook.max_attempts`` it is ``dead`` (an alert; an operator
resends it with ``adapter replies resend``) and the line moves on.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from adapter.config import AdapterConfig, ReplyWebhookConfig
from adapter.replies import rows
from adapter.replies.contract import LEGACY_PAPER_TYPE
from adapter.replies.sinks import AmqpSink, DeliveryFailed, Sink
from adapter.store.models import FallbackRecord
from adapter.store.types import utcnow

log = logging.getLogger(__name__)
_ISSUED = ("paper_fallback.issued", LEGACY_PAPER_TYPE)
_GROUP = 50
"""Replies delivered (and, on the embedded queue, committed) together, then marked together."""


def backoff_s(webhook: ReplyWebhookConfig, attempts: int) -> float:
    return float(min(webhook.max_delay_s, webhook.base_delay_s * 2 ** max(0, attempts - 1)))


class ReplyOutbox:
    """Owned by one thread; ``publish_pending`` is also called once more at shutdown."""

    def __init__(self, sessions: sessionmaker[Session], config: AdapterConfig, sink: Sink | None = None, *,
                 sweep_s: float = 0.25, gap_s: float | None = None, clock: Callable[[], dt.datetime] = utcnow):
        self._sessions = sessions
        self._config = config
        self._sink = sink or AmqpSink(config.broker, config.replies)
        self._sweep_s = sweep_s
        self._gap_s = config.replies.round_interval_ms / 1000 if gap_s is None else gap_s
        self._clock = clock
        self._wake = threading.Event()
        self._failing_since: float | None = None
        self.published = 0
        self.dead = 0

    def wake(self) -> None:
        """New replies were committed: publish without waiting for the next sweep."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop``; every ``sweep_s`` or when woken; a failure waits a little longer.

        A busy adapter wakes this loop on every settled round; starting a round at most every
        ``gap_s`` (``replies.round_interval_ms``) lets one round carry the replies of many (one
        read, one queue commit, one mark) instead of paying those per reply -- each of them a
        write the dispatcher's settles would otherwise queue behind on SQLite. A lone reply is not
        delayed: its round starts at once."""
        while not stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            self.publish_pending()
            wait = self._sweep_s if self._failing_since is None else min(5.0, self._sweep_s * 8)
            self._wake.wait(wait)
            rest = self._gap_s - (time.monotonic() - started)
            if rest > 0:
                stop.wait(rest)

    def publish_pending(self) -> int:
        """Deliver every due reply in order; the number delivered. Store or broker trouble is logged
        and left for the next round (the rows stay pending)."""
        total = 0
        try:
            while True:
                with self._sessions() as session:
                    batch = rows.due(session, self._config.replies.batch, self._clock())
                if not batch:
                    break
                delivered, blocked = self._deliver(batch)
                total += delivered
                if blocked or len(batch) < self._config.replies.batch:
                    break
        except Exception as exc:  # the store is away: next round
            self._failed(f"store: {type(exc).__name__}")
            self._sink.close(graceful=False)
            return total
        if self._failing_since is not None and total:
            log.info("replies to the HIS flow again (%s)", self._sink.name)
            self._failing_since = None
        return total

    def _deliver(self, batch: list[Any]) -> tuple[int, bool]:
        """Deliver ``batch`` in order, in groups of ``_GROUP``; (delivered, stopped early)."""
        delivered = 0
        now = self._clock()
        for start in range(0, len(batch), _GROUP):
            sent, blocked = self._deliver_group(batch[start:start + _GROUP], now)
            delivered += sent
            if blocked:
                return delivered, True
        return delivered, False

    def _deliver_group(self, group: list[Any], now: dt.datetime) -> tuple[int, bool]:
        """One group inside the sink's ``together`` block, marked after it: a group whose block
        fails (the embedded queue's commit) counts as not delivered and goes again."""
        done: list[Any] = []
        blocked = False
        try:
            with self._sink.together():
                for row in group:
                    if row.next_attempt_at is not None and row.next_attempt_at > now:
                        blocked = True  # a webhook retry not due yet: the replies behind it wait
                        break
                    try:
                        self._sink.deliver(row.body, row.facility_siam_id)
                    except DeliveryFailed as exc:
                        if self._sink.retries_each and self._retry_later(row, str(exc)):
                            continue  # dead after its attempts: the line moves on
                        blocked = True
                        self._failed(str(exc))
                        break
                    done.append(row)
        except Exception as exc:  # the group's commit failed: none of it reached the HIS
            self._sink.close(graceful=False)
            self._failed(f"broker: {type(exc).__name__}: {str(exc)[:200]}")
            return 0, True
        return self._mark(done), blocked

    def _mark(self, done: list[Any]) -> int:
        if not done:
            return 0
        now = self._clock()
        with self._sessions() as session:
            rows.mark_published(session, [row.id for row in done], now)
            papers = [row.body.get("fallback_no") for row in done if row.type in _ISSUED]
            if papers:  # the paper record's own mark, as before contract v1
                session.execute(update(FallbackRecord).where(FallbackRecord.fallback_no.in_(papers))
                                .values(reply_published_at=now))
            session.commit()
        self.published += len(done)
        return len(done)

    def _retry_later(self, row: Any, error: str) -> bool:
        """A webhook refusal: retry with backoff (False: the line waits for it) or dead (True: move on)."""
        webhook = self._config.replies.webhook
        attempts = row.attempts + 1
        dead = attempts >= webhook.max_attempts
        next_at = None if dead else self._clock() + dt.timedelta(seconds=backoff_s(webhook, attempts))
        with self._sessions() as session:
            rows.mark_failed(session, row.id, attempts=attempts, error=error, next_at=next_at)
            session.commit()
        if dead:
            self.dead += 1
            log.error("reply %s (%s) is dead after %d attempts (%s); resend it with adapter replies resend",
                      row.reply_id, row.type, attempts, error)
            return True
        return False

    def _failed(self, reason: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("could not deliver replies to the HIS (%s); they wait and will be sent", reason)

    def close(self) -> None:
        self._sink.close()
