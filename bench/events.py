"""Valid HIS events in any number, from the sample generator (``adapter.samples.generate``).

The generator is called in chunks with a different seed each (different patients), and the
ids of each chunk get a chunk prefix, so a million events never repeat an event id, a
prescription, a visit or a prescription's content (the simulator refuses duplicates).
Only the good events are kept (no deliberately bad ones, no duplicate receipt).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

from adapter.samples.generate import generate

CHUNK_PATIENTS = 4000  # ~9,700 events per chunk


def event_stream(count: int, tag: str = "b", seed: int = 7000) -> Iterator[bytes]:
    now = dt.datetime.now(dt.timezone.utc)
    produced, chunk = 0, 0
    while produced < count:
        sample = generate(now, patients=CHUNK_PATIENTS, seed=seed + chunk)
        seen: set[str] = set()
        for line in sample.lines:
            if not line.startswith(b'{"event_id": "evt-'):
                continue
            event = json.loads(line)
            if event["event_id"] in seen:  # the generator's deliberate duplicate receipt
                continue
            seen.add(event["event_id"])
            prefix = f"{tag}{chunk}"
            event["event_id"] = f"{prefix}-{event['event_id']}"
            if event.get("correlation_id"):
                event["correlation_id"] = f"{prefix}-{event['correlation_id']}"
            payload = event["payload"]
            for key in ("prescription_id", "visit_id"):
                if payload.get(key):
                    payload[key] = f"{prefix}-{payload[key]}"
            yield json.dumps(event, ensure_ascii=False).encode()
            produced += 1
            if produced >= count:
                return
        chunk += 1


def events(count: int, tag: str = "b", seed: int = 7000) -> list[bytes]:
    return list(event_stream(count, tag, seed))
