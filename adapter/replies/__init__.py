"""Replies to the HIS (issue 15): the contract (``contract``), which outcome makes which reply
(``make``), their rows in the outbox table (``rows``), and publishing them (``outbox``, ``sinks``)."""
