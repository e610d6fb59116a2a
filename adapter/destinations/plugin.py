"""What the registry knows of one destination: the one object each destination package exports.

A destination package (``destinations/tamin/``, ``destinations/sepas/``, ...) ends in a
``plugin.py`` holding a :class:`DestinationPlugin`: its name (the key under
``destinations:`` in the config, its mapping folder and the ``destination`` column of the
store), its config model, the operations its mappings may name, how to build its
``Destination`` from config, its config problems for ``adapter config check``, and, by
module path, the simulator that plays it and its reconciliation job. ``app.build``,
``config check``, the demo (simulator URLs) and ``mapping lint`` (operations) loop over the
registry (``adapter.destinations.registry``) instead of naming destinations.

The simulator and the reconciler are named by ``"module:attribute"`` strings, resolved only
by whoever needs them (the demo, the DAGs), because those modules sit above this layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from adapter.config import AdapterConfig, DestinationConfig
from adapter.destinations.auth import RefreshTokenStore, TokenCache
from adapter.destinations.base import Destination
from adapter.destinations.http import HttpClient, Recorder


SettingsT = TypeVar("SettingsT", bound=DestinationConfig)


@dataclass(frozen=True)
class BuildContext:
    """What building a destination may use besides its own config section."""

    config: AdapterConfig
    http: HttpClient
    refresh_tokens: Callable[[str], RefreshTokenStore]
    """The encrypted refresh-token store of a destination (by name): prescribers' tokens."""
    recorder: Recorder | None = None
    """Gets every request and answer of the destination's exchange (audit, lab capture)."""


@dataclass(frozen=True)
class Refusal:
    """Why an event must not be sent to a destination at all: the submission is stored
    ``invalid`` with ``error_class`` (e.g. ``not_covered``) and ``reason`` (no identifiers)."""

    error_class: str
    reason: str


NOT_COVERED = "not_covered"
"""The refusal class of a patient the destination does not cover (the free/paper path)."""

Screen = Callable[[dict[str, Any]], "Refusal | None"]
"""Run by intake on a validated event before it is mapped for the destination."""


@dataclass
class Built:
    """One destination, built: what the dispatcher, intake and the outage control need of it."""

    destination: Destination
    tokens: TokenCache
    principal_mode: str = "facility"
    """Whose token a submission is sent with: the facility's, or its prescriber's."""


@dataclass(frozen=True)
class SimulatorRef:
    """The bundled simulator that plays a destination in the demo: ``factory`` ("module:function")
    makes its ASGI app; ``url_key`` is the config key the demo points at it. Destinations with
    the same ``name`` share one simulator process (the Tamin one plays all three Tamin families)."""

    name: str
    factory: str
    url_key: str = "base_url"


@dataclass(frozen=True)
class DestinationPlugin(Generic[SettingsT]):
    name: str
    config_model: type[SettingsT]
    operations: tuple[str, ...]
    build: Callable[[SettingsT, BuildContext], Built]
    problems: Callable[[SettingsT, AdapterConfig], list[str]] = field(default=lambda _section, _config: [])
    """Everything ``adapter config check`` should report beyond the config's own validation
    (secrets it cannot read, files it cannot load), one line each naming file, key and fix."""
    screen: Callable[[SettingsT], Screen | None] = field(default=lambda _section: None)
    """From its section alone, what refuses events this destination must never be sent (see
    ``Refusal``): run by intake before mapping, and by ``adapter replay --remap`` before re-mapping."""
    simulator: SimulatorRef | None = None
    reconciler: str | None = None
    """Module holding the destination's reconciliation job, if any: ``plan(sessions, interval,
    batch_size)`` and ``reconcile_batch(sessions, client, submission_ids, interval)`` (checked by
    tests/unit/test_registry.py; ``dags/reconcile_submissions.py`` still names its tasks per destination)."""
    description: str = ""

    @property
    def mapping_folder(self) -> str:
        """Its mappings live in ``<mappings_root>/<name>/``."""
        return self.name
