"""Destination names -> plugins: the one list of destinations the adapter knows.

Adding an insurer is one package under ``adapter/destinations/`` ending in a ``plugin.py``,
one line in ``BUILT_IN`` below and one mapping folder (README, "Adding an insurer").
``register`` adds a plugin at run time (tests, a hospital's own destination).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from adapter.config import AdapterConfig, ConfigError, DestinationConfig
from adapter.destinations.plugin import DestinationPlugin, Screen
from adapter.destinations.sepas.plugin import PLUGIN as SEPAS
from adapter.destinations.tamin.plugin import PLUGIN as TAMIN
from adapter.destinations.tamin_provider.plugin import PARACLINIC_PLUGIN, PHARMACY_PLUGIN

AnyPlugin = DestinationPlugin[Any]

BUILT_IN: tuple[AnyPlugin, ...] = (TAMIN, SEPAS, PHARMACY_PLUGIN, PARACLINIC_PLUGIN)

_PLUGINS: dict[str, AnyPlugin] = {plugin.name: plugin for plugin in BUILT_IN}


def register(plugin: AnyPlugin) -> AnyPlugin:
    """Make ``plugin`` known under its name (replacing one of the same name)."""
    _PLUGINS[plugin.name] = plugin
    return plugin


def unregister(name: str) -> None:
    if name in {p.name for p in BUILT_IN}:
        raise ValueError(f"{name} is built in")
    _PLUGINS.pop(name, None)


def plugins() -> list[AnyPlugin]:
    return list(_PLUGINS.values())


def names() -> list[str]:
    return list(_PLUGINS)


def get(name: str) -> AnyPlugin:
    try:
        return _PLUGINS[name]
    except KeyError:
        raise KeyError(f"no destination {name!r} is registered (known: {', '.join(_PLUGINS)})") from None


def operations() -> dict[str, tuple[str, ...]]:
    """Destination -> the operations its mappings may name."""
    return {name: plugin.operations for name, plugin in _PLUGINS.items()}


@dataclass(frozen=True)
class Configured:
    """A destination the config enables: its plugin and its validated section."""

    plugin: AnyPlugin
    section: DestinationConfig

    @property
    def name(self) -> str:
        return self.plugin.name


def sections(config: AdapterConfig) -> Iterator[tuple[str, Any]]:
    """Every ``destinations.<name>`` section given (typed or, for plugins' own, as a dict)."""
    given = config.destinations
    for name in type(given).model_fields:
        value = getattr(given, name)
        if value is not None:
            yield name, value
    yield from (given.model_extra or {}).items()


def configured(config: AdapterConfig) -> list[Configured]:
    """The enabled destinations, in registry order; a section no plugin knows, or one its
    plugin's model refuses, is a ``ConfigError`` naming file, key and fix."""
    found: dict[str, Configured] = {}
    problems: list[str] = []
    for name, raw in sections(config):
        if name not in _PLUGINS:
            problems.append(f"{config.source_file}: destinations.{name}: no such destination -- fix: one of "
                            f"{', '.join(_PLUGINS)}, or remove the section")
            continue
        plugin = _PLUGINS[name]
        try:
            section = raw if isinstance(raw, plugin.config_model) else plugin.config_model.model_validate(raw)
        except ValidationError as exc:
            problems += [f"{config.source_file}: destinations.{name}.{'.'.join(str(p) for p in err['loc'])}: "
                         f"{err['msg']} -- fix: see {plugin.config_model.__name__} ({plugin.config_model.__module__})"
                         for err in exc.errors()]
            continue
        if section.enabled:
            found[name] = Configured(plugin, section)
    if problems:
        raise ConfigError(problems)
    return [found[name] for name in _PLUGINS if name in found]


def enabled_names(config: AdapterConfig) -> list[str]:
    return [c.name for c in configured(config)]


def screens(config: AdapterConfig) -> dict[str, Screen]:
    """Each enabled destination's screen (``DestinationPlugin.screen``), by name; those without none."""
    found = ((c.name, c.plugin.screen(c.section)) for c in configured(config))
    return {name: screen for name, screen in found if screen is not None}
