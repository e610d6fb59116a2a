"""Outage mode (shared/domain.md, "Paper fallback"): detect or accept an outage of a
destination, record it, tell the HIS to print the paper form, keep the electronic submission
queued, and later link every paper record to the accepted prescription or leave it for a
paper claim.

* ``breaker.py``   -- circuit breaker per destination (pure, clock-driven).
* ``ratelimit.py`` -- token bucket (``max_rps``) so the drain after an outage does not flood.
* ``control.py``   -- what the dispatcher asks before/after each send; writes the automatic
  outage row (``detected='circuit'``) and ``circuit_states``; reads declared outages.
* ``records.py``   -- outage rows, fallback numbers ``FB-<facility>-<yyMMdd>-<seq>`` (Solar
  Hijri date, Tehran), linking (``issued`` -> ``linked`` | ``paper_claim``).
* ``replies.py``   -- the outbox that publishes ``adapter.paper_fallback`` replies.

Behaviour worth knowing
-----------------------
* "In outage" = an open ``outages`` row for the destination (automatic or declared). Intake
  issues a fallback record for each ``prescription.created`` stored while one is open, in
  the event's transaction. The submission itself stays ``pending``.
* While a declared outage is open nothing is sent to that destination, not even probes.
  ``adapter outage end`` ends every open outage of the destination (declared and automatic;
  a dispatcher whose circuit is open then closes it) and makes retries that waited out the
  outage due at once; the rate limit spreads them.
* Only transient and ambiguous outcomes are failures for the breaker; rejections and 401s
  are the insurer answering. Probes (half-open) are taken before their retry time.
* The breaker lives in the dispatcher's memory. After a restart during an automatic outage
  the dispatcher finds the open row and starts half-open (probes first). With several
  dispatcher processes each has its own breaker; they share the outage row (one open
  automatic outage per destination, enforced by a partial unique index).
* Replies are published at least once: a crash between publish and mark re-publishes that
  reply once more after the restart. The HIS should dedupe on ``fallback_no``.
"""
