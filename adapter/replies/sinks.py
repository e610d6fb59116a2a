"""Where replies go: the HIS's broker (AMQP, or the embedded queue) or an HTTPS webhook.

A sink delivers one reply at a time, in the outbox's order, and raises :class:`DeliveryFailed`
when the reply did not reach the HIS (the outbox keeps it and tries again). Both sinks deliver at
least once: a crash after delivery and before the outbox's mark delivers that reply once more, with
the same ``reply_id`` (AMQP ``message_id``; webhook ``X-Reply-Id``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import httpx
from kombu import Connection, Exchange, Producer, Queue

from adapter.broker.connection import close_after_failure, connect
from adapter.config import AdapterConfig, BrokerConfig, RepliesConfig, read_secret
from adapter.tls import client_verify

SIGNATURE_HEADER = "X-Adapter-Signature"
TIMESTAMP_HEADER = "X-Adapter-Timestamp"


class DeliveryFailed(Exception):
    """The reply did not reach the HIS; ``permanent``: retrying the same body will not help."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class Sink(Protocol):
    name: str
    retries_each: bool
    """True: a failed reply is retried on its own schedule (webhook backoff, then dead); False: the
    whole outbox waits for the sink to come back (a broker that is down)."""

    def deliver(self, reply: dict[str, Any], facility: str | None) -> None: ...

    def together(self) -> AbstractContextManager[Any]:
        """Deliveries inside this block may be held until it ends (then all of them reach the HIS,
        or, when it raises, maybe none): the outbox marks a group only after its block."""
        ...

    def close(self, graceful: bool = True) -> None: ...


def encode(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def routing_key(replies: RepliesConfig, broker: BrokerConfig, facility: str | None) -> str:
    return replies.routing_key.format(queue=broker.reply_queue, facility=facility or "unknown")


def reply_queue(broker: BrokerConfig, key: str | None = None) -> Queue:
    """The durable queue a reply routing key leads to (its name is the key), bound to ``broker.exchange``."""
    key = key or broker.reply_queue
    return Queue(key, exchange=Exchange(broker.exchange, type="direct", durable=True), routing_key=key, durable=True)


class AmqpSink:
    """Persistent messages on the HIS's broker, confirmed (publisher confirms) before they count.

    Each routing key's queue is declared the first time it is used, so a reply never goes to an
    exchange with nothing bound (it would be dropped)."""

    name = "amqp"
    retries_each = False

    def __init__(self, broker: BrokerConfig, replies: RepliesConfig):
        self._broker = broker
        self._replies = replies
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._declared: set[str] = set()

    def deliver(self, reply: dict[str, Any], facility: str | None) -> None:
        key = routing_key(self._replies, self._broker, facility)
        try:
            producer = self._ready(key)
            producer.publish(encode(reply), routing_key=key, content_type="application/json",
                             content_encoding="utf-8", delivery_mode=2, message_id=reply["reply_id"],
                             headers={"type": reply["type"], "schema_version": reply["schema_version"]})
        except Exception as exc:  # the broker is away: the outbox keeps the reply and tries again
            self.close(graceful=False)
            raise DeliveryFailed(f"broker: {type(exc).__name__}: {str(exc)[:200]}") from exc

    def together(self) -> AbstractContextManager[Any]:
        """On the embedded queue, one commit for the group (its ``publish_together``); on RabbitMQ
        each message is confirmed as it goes, so nothing is held."""
        channel = self._connection.default_channel if self._connection is not None else None
        grouped = getattr(channel, "publish_together", None)
        return grouped() if grouped is not None else nullcontext()

    def _ready(self, key: str) -> Producer:
        if self._producer is None or self._connection is None:
            self._connection = connect(self._broker)
            self._connection.ensure_connection(max_retries=0)  # one attempt: the outbox paces the retries
            self._declared = set()
            queue = reply_queue(self._broker)
            self._producer = Producer(self._connection.default_channel, exchange=queue.exchange,
                                      serializer=None, auto_declare=False)
        if key not in self._declared:
            reply_queue(self._broker, key)(self._connection.default_channel).declare()
            self._declared.add(key)
        return self._producer

    def close(self, graceful: bool = True) -> None:
        if self._connection is not None:
            try:
                if graceful:
                    self._connection.release()
                else:
                    close_after_failure(self._connection, self._broker)
            except Exception:  # already gone
                pass
        self._connection = self._producer = None


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body): what the HIS recomputes."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSink:
    """One HTTPS POST per reply, signed; 2xx is delivered, anything else is retried (backoff), and a
    4xx other than 408/429 is permanent for that body (the HIS refuses it: retried until dead anyway,
    since the HIS may be fixed, but alerted sooner)."""

    name = "webhook"
    retries_each = True

    def __init__(self, replies: RepliesConfig, secret: bytes, client: httpx.Client | None = None,
                 clock: Any = time.time):
        if not replies.webhook.url:
            raise ValueError("replies.webhook.url is not set")
        self._url = replies.webhook.url
        self._secret = secret
        self._clock = clock
        self._client = client or httpx.Client(timeout=replies.webhook.timeout_s)

    def deliver(self, reply: dict[str, Any], facility: str | None) -> None:
        body = encode(reply)
        stamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Reply-Id": reply["reply_id"],
                   "X-Reply-Type": reply["type"], TIMESTAMP_HEADER: stamp,
                   SIGNATURE_HEADER: signature(self._secret, stamp, body)}
        try:
            answer = self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"webhook: {type(exc).__name__}") from exc
        if 200 <= answer.status_code < 300:
            return
        permanent = 400 <= answer.status_code < 500 and answer.status_code not in (408, 429)
        raise DeliveryFailed(f"webhook answered HTTP {answer.status_code}", permanent=permanent)

    def together(self) -> AbstractContextManager[Any]:
        return nullcontext()  # each POST is answered on its own

    def close(self, graceful: bool = True) -> None:
        self._client.close()


def sink_for(config: AdapterConfig) -> Sink:
    """The sink ``replies.sink`` names (the webhook's secret read now: a missing one is a config error)."""
    replies = config.replies
    if replies.sink == "webhook":
        webhook = replies.webhook
        secret = read_secret(webhook.secret_env, webhook.secret_file, None,
                             what="replies.webhook.secret_env / secret_file (the webhook's signing secret)",
                             source=config.source_file)
        client = httpx.Client(timeout=webhook.timeout_s,
                              verify=client_verify(webhook.tls, "replies.webhook.tls", config.source_file))
        return WebhookSink(replies, secret.encode("utf-8"), client)
    return AmqpSink(config.broker, replies)
