"""Alerts on state changes, not per failure (issue 7).

* ``rules`` -- pure: a snapshot of facts -> the active conditions; and, per alert channel, what
  to send given what was already told (start, renotify, resolve), with a fake-able clock;
* ``notify`` -- the channels: webhook (HTTP POST JSON) and email (SMTP);
* ``service`` -- reads the facts from the store, keeps the per-channel ledger in the store
  (table ``alert_states``) and runs one evaluation; ``adapter run`` calls it every
  ``alerts.evaluate_every_s`` seconds in a thread of its own.
"""
