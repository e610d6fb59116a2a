"""The running adapter: a consumer thread (broker -> intake) and the dispatch loop.

Shutdown (SIGTERM/SIGINT or ``stop()``): the consumer stops taking messages, finishes the
one in hand, and closes its channel so prefetched, unacked messages go back to the
queue; the dispatcher finishes the batch it is sending. Nothing is lost either way:
what was not committed was not acked.

The reply outbox (``adapter.replies.outbox``) runs on a thread of its own and publishes the replies to
the HIS: woken by intake and by the dispatcher when they commit replies, and in a sweep every
quarter second for any left unpublished (a crash, a broker hiccup); once more at shutdown.

Operations (issue 7): both loops stamp a heartbeat (``Liveness``) on every cycle, so the status
service's ``/readyz`` turns red when a consumer silently stops (a ``drain_events`` that hangs,
kombu #131/#514) even though the process is up. The status service (``adapter.ops.http_status``)
runs beside the loops while ``run()`` runs, and so does the scheduled prune
(``retention.prune_every_s``) and the alert evaluation (``alerts.evaluate_every_s``, when a
webhook or email channel is configured; ``adapter.ops.alerts``).
"""

from __future__ import annotations

import faulthandler
import hashlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from kombu import Connection, Consumer
from sqlalchemy import text
from kombu.message import Message

from adapter.app import App
from adapter.broker.connection import close_after_failure, connect, declare, event_queue, is_embedded, queue_depth
from adapter.broker.link import BrokerLink
from adapter.pipeline import metrics
from adapter.replies.outbox import ReplyOutbox
from adapter.replies.sinks import sink_for
from adapter.pipeline.intake import IntakeResult, Received
from adapter.store.health import StoreHealth, is_store_error, is_store_outage, store_reason

if TYPE_CHECKING:  # imported where used, only when that part is switched on
    from adapter.ops.alerts.service import AlertService
    from adapter.ops.http_status import StatusService

log = logging.getLogger(__name__)
POISON_AFTER = 3  # failures of one message body before it is quarantined as an invalid event
EMBEDDED_POLL_S = 0.01  # the embedded queue is polled; each idle poll is one indexed SELECT
INTAKE_BATCH = 50  # deliveries already waiting that are stored in one transaction (at most broker.prefetch)


def _reason(exc: Exception) -> str:
    """An exception as a log reason: its type, and its message when it says more (no URL or secret is in them)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _digest(body: bytes | str) -> str:
    return hashlib.sha256(body if isinstance(body, bytes) else str(body).encode()).hexdigest()


@dataclass
class RunStats:
    received: int = 0
    stored: int = 0
    invalid: int = 0
    duplicates: int = 0
    conflicts: int = 0
    dispatched: int = 0
    intake_errors: int = 0
    fallbacks: int = 0
    replies_published: int = 0


class Liveness:
    """Heartbeats of the runner's loops (monotonic clock), read by ``/readyz`` and ``/metrics``,
    with what the loops find of the store (``store``, ``adapter.store.health``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, store: StoreHealth | None = None):
        self._clock = clock
        self.store = store if store is not None else StoreHealth()
        self._lock = threading.Lock()
        self.started = clock()
        self.consumer_attached = False
        self._beats: dict[str, float] = {}

    def beat(self, loop: str) -> None:
        """``loop``: consumer (each drain cycle), dispatcher (each round) or delivery (a message came)."""
        now = self._clock()
        with self._lock:
            self._beats[loop] = now

    def attached(self, yes: bool) -> None:
        with self._lock:
            self.consumer_attached = yes
        if yes:
            self.beat("consumer")

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        with self._lock:
            ages = {f"{loop}_age_s": (round(now - self._beats[loop], 3) if loop in self._beats else None)
                    for loop in ("consumer", "dispatcher", "delivery")}
            beats = {"consumer_attached": self.consumer_attached, "uptime_s": round(now - self.started, 3), **ages}
        return {**beats, **self.store.snapshot()}


class Runner:
    depth_check_every_s = 5.0  # while busy, the queue depth is still asked this often (metrics, "drained")

    def __init__(self, app: App, *, until_idle: bool = False, idle_horizon_s: float = 5.0,
                 on_progress: Callable[[RunStats], None] | None = None):
        self._app = app
        self._until_idle = until_idle
        self._idle_horizon_s = idle_horizon_s
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._broker_drained = threading.Event()
        self._consumer_error: BaseException | None = None
        self._replies = ReplyOutbox(app.sessions, app.config, sink_for(app.config))
        self._replies_due = False
        self.stats = RunStats()
        self._failures: dict[str, int] = {}  # body digest -> intake failures (poison detection)
        self._consuming = False  # the current broker session got as far as consuming
        self._link = BrokerLink()
        self.store_health = StoreHealth()  # every loop reports store errors here (/readyz, the store alert)
        self.liveness = Liveness(store=self.store_health)
        self._store_wait = 0.0  # seconds the consumer backs off before its next store try (0: none)
        self.status_server: StatusService | None = None  # the status service while run() runs (None when off)
        self._depth_checked = 0.0
        self._pending: list[Message] = []  # delivered, not yet stored (the consumer thread's)

    def stop(self, *_: object) -> None:
        self._stop.set()  # the dispatch loop sees it within poll_interval_s (no lock taken in a signal handler)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop; SIGUSR1 writes every thread's stack to stderr (a stuck adapter,
        docs/operations.md: names and lines only, no values)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def run(self) -> RunStats:
        self.status_server = self._start_status()
        consumer = threading.Thread(target=self._consume_forever, name="consumer", daemon=True)
        consumer.start()
        replier = threading.Thread(target=self._replies.run, args=(self._stop,), name="replies", daemon=True)
        replier.start()
        self._app.dispatcher.on_replies = self._replies.wake
        pruner = self._start_pruner()
        deadline = self._start_deadline()
        alerter = self._start_alerts()
        try:
            self._dispatch_loop()
        finally:
            self._stop.set()
            consumer.join(timeout=30)
            replier.join(timeout=30)
            if not replier.is_alive():  # the outbox belongs to its thread while it runs
                self._publish_replies(final=True)
            if pruner is not None:
                pruner.join(timeout=30)
            if deadline is not None:
                deadline.join(timeout=30)
            if alerter is not None:
                alerter.join(timeout=30)
            self._stop_status()
        return self.stats

    # -- operations: status service, scheduled prune -----------------------------------------
    def _start_status(self) -> StatusService | None:
        """The status service; a port already in use is logged, never a reason to stop delivering."""
        if not self._app.config.status.enabled:
            return None
        from adapter.ops.http_status import StatusService

        service = StatusService(self._app, self.liveness)
        try:
            return service.start()
        except (OSError, RuntimeError) as exc:
            status = self._app.config.status
            log.error("status service not started on %s:%s (%s) -- fix: free the port or set status.port",
                      status.host, status.port, exc)
            service.stop()
            return None

    def _stop_status(self) -> None:
        if self.status_server is not None:
            self.status_server.stop()
            self.status_server = None

    def _start_pruner(self) -> threading.Thread | None:
        every = self._app.config.retention.prune_every_s
        if not every:
            return None
        thread = threading.Thread(target=self._prune_every, args=(every,), name="pruner", daemon=True)
        thread.start()
        return thread

    def _start_deadline(self) -> threading.Thread | None:
        """The answer-deadline sweep (``adapter.pipeline.deadline``), every second, when paper fallback is on."""
        fallback = self._app.config.fallback
        if not fallback.enabled or not fallback.answer_within_s:
            return None
        thread = threading.Thread(target=self._deadline_every, name="deadline", daemon=True)
        thread.start()
        return thread

    def _deadline_every(self, every: float = 1.0) -> None:
        from adapter.app import reply_rules
        from adapter.pipeline.deadline import AnswerDeadline, issue_overdue_paper

        fallback = self._app.config.fallback
        deadline = AnswerDeadline(fallback.answer_within_s, fallback.late_grace_s, fallback.answer_horizon_s,
                                  fallback.number_prefix, fallback.timezone)
        rules, failing = reply_rules(self._app.config), False
        while not self._stop.wait(every):
            try:
                if issue_overdue_paper(self._app.sessions, deadline, rules):
                    self._replies.wake()
                failing = False
            except Exception as exc:  # the store did not answer, or another process issued it first: next time
                if not failing:
                    reason = store_reason(exc) if is_store_error(exc) else _reason(exc)
                    log.warning("answer-deadline sweep failed (%s); retrying every %.0f s", reason, every)
                failing = True

    def _prune_every(self, every: float) -> None:
        from adapter.ops.prune import prune

        while not self._stop.wait(every):
            try:
                report = prune(self._app.sessions, self._app.config.retention, stop=self._stop.is_set)
                if report.total:
                    log.info("pruned: %s", report.summary())
            except Exception as exc:  # a failed prune is retried next time; delivery goes on
                if is_store_error(exc):
                    log.warning("scheduled prune failed (%s); retrying in %.0f s", store_reason(exc), every)
                else:
                    log.exception("scheduled prune failed")

    def _start_alerts(self) -> threading.Thread | None:
        """Alert evaluation every ``alerts.evaluate_every_s`` (first one at once), when a channel is set."""
        config = self._app.config
        if not config.alerts.enabled or not (config.alerts.webhooks or config.alerts.email):
            return None
        from adapter.ops.alerts.service import AlertService

        try:
            service = AlertService.from_config(config, self._app.sessions)
        except Exception:  # checked by build(); a monitoring channel is never a reason to stop delivering
            log.exception("alerts not started")
            return None
        thread = threading.Thread(target=self._alert_every, args=(service, config.alerts.evaluate_every_s),
                                  name="alerts", daemon=True)
        thread.start()
        return thread

    def _alert_every(self, service: AlertService, every: float) -> None:
        """The rules on the store's facts, and the ``store_unavailable`` rule on what the loops
        found of the store -- sent even while the store does not answer (channel failures are
        logged inside and retried at the next evaluation)."""
        failing = False
        try:
            while True:
                health = self.store_health.snapshot()
                try:
                    service.evaluate_store(self.store_health.unavailable_for_s(), health["store_reason"])
                except Exception:  # a bug: the other rules still run
                    log.exception("store alert evaluation failed")
                try:
                    service.evaluate_once()
                    if failing:
                        log.info("alert evaluation works again")
                    failing = False
                except Exception as exc:  # the store did not answer: next time
                    if not is_store_error(exc):
                        log.exception("alert evaluation failed; retrying in %.0f s", every)
                    elif not failing:
                        log.warning("alert evaluation failed (%s); retrying every %.0f s", store_reason(exc), every)
                    failing = is_store_error(exc)
                if self._stop.wait(every):
                    return
        finally:
            service.close()

    def _publish_replies(self, due: bool = False, final: bool = False) -> None:
        """Wake the reply outbox's thread when intake wrote replies (``due``); at shutdown
        (``final``, after that thread ended) publish what is left and close it."""
        if final:
            self._replies.publish_pending()
            self._replies.close()
        elif due:
            self._replies.wake()
        self._replies_due = False
        self.stats.replies_published = self._replies.published

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        """Claim whenever a send slot is free and work may be there: woken by intake's commit and
        by each finished send, else every ``poll_interval_s`` (retries becoming due, other processes)."""
        dispatcher = self._app.dispatcher
        dispatcher.store_health = self.store_health
        poll = self._app.config.dispatch.poll_interval_s
        try:
            while not self._stop.is_set():
                self.liveness.beat("dispatcher")
                try:
                    started = dispatcher.pump()
                    idle = not started and self._until_idle and self._is_idle()
                except Exception as exc:  # the store is down or refused the claim: wait, then a new connection
                    if not is_store_error(exc):
                        raise
                    self._stop.wait(self.store_health.failed("dispatcher", exc))
                    continue
                self.stats.dispatched += started
                self._progress()
                if started:
                    continue
                if idle:
                    log.info("idle: nothing queued or due")
                    return
                dispatcher.wait_for_work(poll)
        finally:
            dispatcher.wait_idle()  # the sends in flight are settled before the loop returns

    def _is_idle(self) -> bool:
        if not self._broker_drained.is_set() or self._app.dispatcher.in_flight:
            return False
        due_in = self._app.dispatcher.next_due_in()
        return due_in is None or due_in > self._idle_horizon_s

    def _progress(self) -> None:
        if self._on_progress:
            self._on_progress(self.stats)

    # -- consume ---------------------------------------------------------------------------
    def _consume_forever(self) -> None:
        """Reconnect for ever, one connection attempt per round, paced by ``BrokerLink`` (every
        second at first, so the tenth broker restart is met as fast as the first)."""
        while not self._stop.is_set():
            self._consuming = False
            try:
                self._consume_session()
            except Exception as exc:
                self.liveness.attached(False)
                self._broker_drained.clear()
                self._stop.wait(self._link.lost(_reason(exc), self._consuming))

    def _consume_session(self) -> None:
        broker = self._app.config.broker
        connection = connect(broker)
        try:
            self._consume_on(connection)
        except Exception:
            close_after_failure(connection, broker)
            raise
        connection.release()

    def _consume_on(self, connection: Connection) -> None:
        broker = self._app.config.broker
        if is_embedded(broker.url):  # look for new messages every 10 ms, not kombu's 100 ms: latency
            options = cast(dict[str, Any], connection.transport_options)  # a dict once made; kombu types it None
            options["polling_interval"] = EMBEDDED_POLL_S
        connection.ensure_connection(max_retries=0)  # one attempt: BrokerLink paces the retries
        declare(connection, broker)
        channel = connection.channel()
        self._pending = []
        consumer = Consumer(channel, [event_queue(broker)], on_message=self._received, prefetch_count=broker.prefetch)
        consumer.consume()
        self.liveness.attached(True)
        self._consuming = True
        self._link.restored(broker.queue)
        self._publish_replies(due=True)  # anything a crash left unpublished
        while not self._stop.is_set():
            self.liveness.beat("consumer")
            connection.heartbeat_check()  # sends ours; raises when the broker has been silent too long
            self._consume_cycle(connection, broker.prefetch)
        self.liveness.attached(False)
        consumer.cancel()
        channel.close()  # unacked prefetched messages return to the queue

    def _consume_cycle(self, connection: Connection, prefetch: int) -> None:
        """Wait up to half a second for deliveries, store what came, and keep the depth reading fresh."""
        try:
            connection.drain_events(timeout=0.5)
            self._drain_ready(connection, min(prefetch, INTAKE_BATCH))
        except socket.timeout:
            self._check_drained(connection)
            # nothing came -- except what RabbitMQ delivered while the depth was being asked
            # (py-amqp hands deliveries over during any wait for a reply): stored now, or a
            # full prefetch window would wait here for ever
            self._store_pending()
            self._probe_store_when_idle()
        except Exception:
            self._pending = []  # not stored, not acked: the broker delivers them again
            raise
        else:
            # stored before the depth is read: a delivered message no longer counts as queued,
            # and "drained" must not be seen while it is still in hand
            self._store_pending()
            if time.monotonic() - self._depth_checked > self.depth_check_every_s:  # busy: still report it
                self._check_drained(connection)
        self._back_off_store(connection)
        self._publish_replies(self._replies_due)

    def _back_off_store(self, connection: Connection) -> None:
        """After the store refused a delivery (requeued, not acked): wait the back-off before taking
        more, still answering the broker's heartbeats so it does not drop the connection meanwhile."""
        wait, self._store_wait = self._store_wait, 0.0
        end = time.monotonic() + wait
        while not self._stop.is_set() and (left := end - time.monotonic()) > 0:
            self._stop.wait(min(left, 1.0))
            self.liveness.beat("consumer")
            connection.heartbeat_check()

    def _probe_store_when_idle(self) -> None:
        """Nothing in hand while the consumer found the store unavailable (the requeued messages went
        to another consumer): ask the store itself, so the consumer's outage ends when the store is back."""
        if not self._pending and self.store_health.retry_due("consumer"):
            try:
                with self._app.engine.connect() as probe:
                    probe.execute(text("SELECT 1"))
            except Exception as exc:
                if not is_store_error(exc):
                    raise
                self._store_wait = self.store_health.failed("consumer", exc)
            else:
                self.store_health.ok("consumer")

    def _check_drained(self, connection: Connection) -> None:
        self._depth_checked = time.monotonic()
        broker = self._app.config.broker
        try:
            depth = queue_depth(connection, broker)
            metrics.queue_depth(depth)
            empty = depth == 0 and not self._pending  # a delivery that came meanwhile is not stored yet
        except Exception as exc:  # a failed depth check only delays "idle" ...
            if not is_embedded(broker.url) and isinstance(exc, connection.connection_errors):
                raise  # ... unless the AMQP connection is dead (reset, closed, silent too long): reconnect
            empty = False
        if empty:
            self._broker_drained.set()
        else:
            self._broker_drained.clear()

    def _quarantine_if_poison(self, body: bytes, exc: Exception) -> IntakeResult | None:
        """After ``POISON_AFTER`` failures of the same body, store it as invalid. If even that
        fails, the store itself is down: the message goes back to the queue (nothing lost)."""
        key = _digest(body)
        self._failures[key] = self._failures.get(key, 0) + 1
        while len(self._failures) > 1000:
            self._failures.pop(next(iter(self._failures)))
        if self._failures[key] < POISON_AFTER:
            return None
        try:
            result = self._app.intake.quarantine(body, type(exc).__name__)
        except Exception:
            return None
        log.error("quarantined a message that failed %d times (%s) as invalid event %s",
                  self._failures[key], type(exc).__name__, result.event_id)
        return result

    def _received(self, message: Message) -> None:
        """A delivery: kept until ``_store_pending`` (the same drain cycle) stores and acks it."""
        self._broker_drained.clear()
        self.liveness.beat("delivery")
        self.stats.received += 1
        self._pending.append(message)

    def _drain_ready(self, connection: Connection, most: int) -> None:
        """Take the deliveries that are already there (no waiting), up to ``most`` in hand."""
        while len(self._pending) < most:
            try:
                connection.drain_events(timeout=0)
            except socket.timeout:
                return

    def _store_pending(self) -> None:
        """Store what was delivered in one transaction, then ack each message. If the batch cannot
        be stored as one, each message goes the one-by-one way (retries, poison quarantine)."""
        batch, self._pending = self._pending, []
        if len(batch) > 1:
            try:
                results = self._app.intake.receive_many([m.body for m in batch])
            except Exception as exc:  # e.g. a poison message: find it one by one
                if is_store_outage(exc):  # the store, not a message: every one back to the queue
                    self._store_unavailable(batch, exc)
                    return
                log.debug("batch of %d not stored as one; storing one by one", len(batch), exc_info=True)
                results = None
            if results is not None:
                for message, result in zip(batch, results):
                    self._stored(message, result)
                return
        for number, message in enumerate(batch):
            if self._store_wait:  # the store went away during this batch: the rest wait too
                self._store_unavailable(batch[number:], None)
                return
            self._on_message(message)

    def _store_unavailable(self, messages: list[Message], exc: Exception | None) -> None:
        """The store is down (``exc``, or found so by an earlier message): ``messages`` go back to the
        queue unacked -- not counted as a failure of theirs (a store outage is not poison) -- and
        the consumer backs off (``_back_off_store``)."""
        if exc is not None:
            self._store_wait = self.store_health.failed("consumer", exc)
        for message in messages:
            metrics.event_received("error")
            message.requeue()

    def _on_message(self, message: Message) -> None:
        """Store, then ack. A storage failure requeues the message and slows down; nothing is dropped."""
        try:
            result = self._app.intake.receive(message.body)
        except Exception as exc:
            self.stats.intake_errors += 1
            if is_store_outage(exc):
                self._store_unavailable([message], exc)
                return
            quarantined = self._quarantine_if_poison(message.body, exc)
            if quarantined is None:
                metrics.event_received("error")
                log.exception("could not store a message; returning it to the queue")
                message.requeue()
                time.sleep(min(5.0, 0.5 * self.stats.intake_errors))
                return
            result = quarantined
        self._stored(message, result)

    def _stored(self, message: Message, result: IntakeResult) -> None:
        """Committed: ack, count, and wake the dispatcher for the new submissions."""
        self.store_health.ok("consumer")
        if self._failures:
            self._failures.pop(_digest(message.body), None)
        message.ack()
        metrics.event_received(result.outcome.value, result.fallbacks if result.outcome is Received.stored else 0)
        if result.outcome is Received.stored:
            self.stats.stored += 1
            if result.submissions:
                self._app.dispatcher.wake(result.destinations)
            if result.fallbacks:
                self.stats.fallbacks += result.fallbacks
                self._replies_due = True
        elif result.outcome is Received.invalid:
            self.stats.invalid += 1
        elif result.outcome is Received.conflict:
            self.stats.conflicts += 1
        else:
            self.stats.duplicates += 1
