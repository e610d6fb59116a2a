"""The registry's built-in plugins: what each names exists and has the shape its users call."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from adapter.config import DestinationConfig
from adapter.destinations import registry
from adapter.destinations.plugin import DestinationPlugin

REPO = Path(__file__).resolve().parents[2]
PLUGINS = registry.BUILT_IN


def resolve(reference: str) -> object:
    module, _, attribute = reference.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_each_plugin_has_a_config_model_a_mapping_folder_and_mappings_for_its_operations_only(
        plugin: DestinationPlugin[DestinationConfig]) -> None:
    assert issubclass(plugin.config_model, DestinationConfig)
    folder = REPO / "mappings" / plugin.mapping_folder
    operations = {line.split(":", 1)[1].strip() for path in folder.glob("*.yaml")
                  for line in path.read_text("utf-8").splitlines() if line.startswith("operation:")}
    assert operations and operations <= set(plugin.operations), (plugin.name, operations)


@pytest.mark.parametrize("plugin", [p for p in PLUGINS if p.simulator], ids=lambda p: p.name)
def test_each_simulator_reference_makes_an_asgi_app(plugin: DestinationPlugin[DestinationConfig]) -> None:
    assert plugin.simulator is not None
    factory = resolve(plugin.simulator.factory)
    assert callable(factory)
    app = factory()
    assert callable(app) and plugin.simulator.url_key in plugin.config_model.model_fields


@pytest.mark.parametrize("plugin", [p for p in PLUGINS if p.reconciler], ids=lambda p: p.name)
def test_each_reconciler_has_the_plan_and_batch_the_dag_calls(plugin: DestinationPlugin[DestinationConfig]) -> None:
    assert plugin.reconciler is not None
    module = resolve(plugin.reconciler)
    for name, parameters in (("plan", ["sessions", "interval", "batch_size"]),
                             ("reconcile_batch", ["sessions", "client", "submission_ids", "interval"])):
        function = getattr(module, name)
        assert list(inspect.signature(function).parameters)[:len(parameters)] == parameters, (plugin.name, name)
        assert getattr(module, "DESTINATION") == plugin.name


def test_names_are_unique_and_every_built_in_is_registered() -> None:
    names = [p.name for p in PLUGINS]
    assert len(set(names)) == len(names) and names == registry.names()[:len(names)]
    with pytest.raises(ValueError):
        registry.unregister("tamin")
