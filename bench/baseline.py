"""The bare pipeline: the simplest correct loop, no adapter code in it.

Each of ``--workers`` threads (the adapter's ``dispatch.workers``, so both have the same number
of requests in flight) repeats: take one message from the broker (``basic_get``, unacked), insert
one row into the database (committed), POST the body to the simulator's create endpoint
(``/api/v2/SendEpresc``, keep-alive, bearer token fetched once), ack. Same broker (the embedded
SQLite queue is registered as a kombu transport; the only adapter import, and not in the loop),
same database, same simulator as the adapter run. Runs in its own process
(``python -m bench.baseline ...``) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import threading
import time
from typing import Any

import httpx
from kombu import Connection, Exchange, Queue

DDL = ("CREATE TABLE IF NOT EXISTS bare_inbox (id INTEGER PRIMARY KEY, event_id TEXT, body TEXT NOT NULL, "
       "received_at DOUBLE PRECISION NOT NULL)")


class Db:
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite"):
            self.conn: Any = sqlite3.connect(url.split("///", 1)[1], timeout=30, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):  # as adapter.store.db
                self.conn.execute(f"PRAGMA {pragma}")
            self.sql = "INSERT INTO bare_inbox (event_id, body, received_at) VALUES (?, ?, ?)"
        else:
            import psycopg
            from sqlalchemy.engine import make_url

            self.conn = psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
            self.sql = "INSERT INTO bare_inbox (event_id, body, received_at) VALUES (%s, %s, %s)"
        self.conn.execute(DDL.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY") if not url.startswith("sqlite")
                          else DDL)
        self.conn.commit()

    def insert(self, body: bytes) -> None:
        event_id = json.loads(body).get("event_id")
        self.conn.execute(self.sql, (event_id, body.decode(), time.time()))
        self.conn.commit()


def worker(args: argparse.Namespace, token: str, counts: list[int], errors: list[str], lock: threading.Lock,
           stamps: list[float]) -> None:
    db = Db(args.db)
    http = httpx.Client(base_url=args.sim, timeout=30, headers={"Authorization": f"Bearer {token}"})
    exchange = Exchange(args.exchange, type="direct", durable=True)
    queue = Queue(args.queue, exchange=exchange, routing_key=args.queue, durable=True)
    transport_options = {"lease_seconds": 60} if args.broker.startswith("sqlite-queue") else {}
    with Connection(args.broker, transport_options=transport_options) as conn:
        bound = queue(conn.channel())
        idle_since = None
        while True:
            message = bound.get(no_ack=False)
            if message is None:
                if idle_since is None:
                    idle_since = time.monotonic()
                if time.monotonic() - idle_since > args.idle_s:
                    break
                time.sleep(0.005)
                continue
            idle_since = None
            try:
                db.insert(message.body)
                response = http.post(args.path, content=message.body, headers={"Content-Type": "application/json"})
                response.raise_for_status()
                message.ack()
            except Exception as exc:  # the simplest correct loop: not acked, back to the queue
                message.requeue()
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            with lock:
                counts[0] += 1
                stamps.append(time.monotonic())
                if counts[0] >= args.count:
                    return
            if counts[0] >= args.count:
                return
    http.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--queue", default="his.events")
    parser.add_argument("--exchange", default="his")
    parser.add_argument("--db", required=True)
    parser.add_argument("--sim", required=True)
    parser.add_argument("--path", default="/api/v2/SendEpresc")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args()
    if args.broker.startswith("sqlite-queue"):
        from adapter.broker import sqlite_transport  # the broker itself, not the pipeline

        sqlite_transport.register()
    token = httpx.post(args.sim + "/auth/server/token", data={"grant_type": "client_credentials",
                       "client_id": "adapter-test", "client_secret": "adapter-test-secret"}, timeout=30).json()["access_token"]
    Db(args.db)  # create the table before the threads race for it
    counts, errors, stamps = [0], [], []
    lock = threading.Lock()
    cpu0, t0 = os.times(), time.monotonic()
    threads = [threading.Thread(target=worker, args=(args, token, counts, errors, lock, stamps), daemon=True)
               for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = (stamps[-1] if stamps else time.monotonic()) - t0
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(json.dumps({"processed": counts[0], "elapsed_s": round(elapsed, 3),
                      "events_per_s": round(counts[0] / elapsed, 1) if elapsed > 0 else None,
                      "cpu_s": round(cpu, 2), "cpu_ms_per_event": round(cpu * 1000 / max(1, counts[0]), 3),
                      "errors": len(errors), "first_errors": errors[:5]}))


if __name__ == "__main__":
    main()
