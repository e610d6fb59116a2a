"""Simulators of the insurer services, served over real HTTP (see docs/tamin-wire.md).

* :mod:`adapter.sim.tamin_app` - the Tamin e-prescription API (``create_tamin_app``);
* :mod:`adapter.sim.registry` - its thread-safe in-memory state and counters;
* :mod:`adapter.sim.settings` - identity, business data and fault knobs;
* :mod:`adapter.sim.server` - ``SimServer`` (background thread) and ``serve_forever``.
"""
