"""Replies to the HIS, published from a small outbox: the paper-fallback records.

Intake writes a ``fallback_records`` row (``reply_published_at`` NULL) in the same
transaction as the event. The runner's consumer thread then publishes, for each row not yet
marked, one persistent message on ``broker.reply_queue`` (bound to ``broker.exchange``)::

    {"type": "adapter.paper_fallback", "event_id": ..., "prescription_id": ...,
     "fallback_no": ..., "destination": "tamin", "reason": ..., "issued_at": ...}

and marks the row right after the broker has it (publisher confirms on RabbitMQ). Delivery
is **at least once**: a crash between the publish and the mark publishes that one reply
again after the restart (at most once more per crash). The HIS should treat ``event_id`` +
``fallback_no`` as the reply's identity (the message id is the fallback number).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from kombu import Connection, Exchange, Producer, Queue
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from adapter.broker.connection import close_after_failure, connect
from adapter.config import BrokerConfig
from adapter.store.models import FallbackRecord
from adapter.store.types import utcnow

log = logging.getLogger(__name__)
REPLY_TYPE = "adapter.paper_fallback"


def reply_queue(config: BrokerConfig) -> Queue:
    exchange = Exchange(config.exchange, type="direct", durable=True)
    return Queue(config.reply_queue, exchange=exchange, routing_key=config.reply_queue, durable=True)


def reply_body(record: FallbackRecord) -> dict[str, Any]:
    return {"type": REPLY_TYPE, "event_id": record.event_id, "prescription_id": record.prescription_id,
            "fallback_no": record.fallback_no, "destination": record.destination, "reason": record.reason,
            "issued_at": record.created_at.isoformat()}


class ReplyOutbox:
    """Publishes unpublished replies; owned by one thread (it keeps its own broker connection)."""

    def __init__(self, sessions: sessionmaker[Session], config: BrokerConfig, *, sweep_s: float = 1.0,
                 batch: int = 200):
        self._sessions = sessions
        self._config = config
        self._sweep_s = sweep_s
        self._batch = batch
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._swept_at = 0.0
        self.published = 0

    def maybe_publish(self, due: bool = False) -> int:
        """Publish now when ``due`` (intake just issued a record), else at most every ``sweep_s``."""
        if not due and time.monotonic() - self._swept_at < self._sweep_s:
            return 0
        return self.publish_pending()

    def publish_pending(self) -> int:
        """Publish every unmarked reply; a broker problem is logged and left for the next sweep."""
        self._swept_at = time.monotonic()
        total = 0
        try:
            while True:
                with self._sessions() as session:
                    rows = list(session.scalars(select(FallbackRecord).where(FallbackRecord.reply_published_at.is_(None))
                                                .order_by(FallbackRecord.id).limit(self._batch)))
                if not rows:
                    return total
                for row in rows:
                    self._publish(reply_body(row), row.fallback_no)
                    with self._sessions() as session:
                        session.execute(update(FallbackRecord).where(FallbackRecord.id == row.id)
                                        .values(reply_published_at=utcnow()))
                        session.commit()
                    total += 1
                    self.published += 1
                if len(rows) < self._batch:
                    return total
        except Exception as exc:  # broker or store away: the rows stay unmarked, the next sweep retries
            log.warning("could not publish paper-fallback replies (%s: %s); will retry", type(exc).__name__, exc)
            self.close(graceful=False)
            return total

    def _publish(self, body: dict[str, Any], message_id: str) -> None:
        if self._producer is None:
            self._connection = connect(self._config)
            self._connection.ensure_connection(max_retries=0)  # on the consumer's thread: the next sweep retries
            queue = reply_queue(self._config)
            queue(self._connection.default_channel).declare()
            self._producer = Producer(self._connection.default_channel, exchange=queue.exchange,
                                      routing_key=self._config.reply_queue, serializer=None, auto_declare=False)
        self._producer.publish(json.dumps(body, ensure_ascii=False).encode("utf-8"), content_type="application/json",
                               content_encoding="utf-8", delivery_mode=2, message_id=message_id,
                               headers={"type": REPLY_TYPE})

    def close(self, graceful: bool = True) -> None:
        """Close the connection; after a failure (``graceful=False``) as ``close_after_failure`` does."""
        if self._connection is not None:
            try:
                if graceful:
                    self._connection.release()
                else:
                    close_after_failure(self._connection, self._config)
            except Exception:  # already gone
                pass
        self._connection = self._producer = None
