"""A destination defined here, in the test, and nowhere else: one plugin, one registry call and
one mapping folder are all it takes for an event to go through intake, dispatch and its own
simulator (issue 14: "adding an insurer is one package, one registry line, one mapping folder").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapter.app import build
from adapter.config import DestinationConfig, load_config
from adapter.destinations import registry
from adapter.destinations.auth import IssuedToken, TokenCache
from adapter.destinations.base import Job
from adapter.destinations.http import Endpoint, Exchange, Request
from adapter.destinations.outcome import Outcome, OutcomeClass
from adapter.destinations.plugin import BuildContext, Built, DestinationPlugin
from adapter.pipeline.intake import Received
from adapter.sim.server import SimServer
from adapter.store.lookups import DestinationStore
from adapter.store.models import Submission
from tests.support.pipeline import EMBEDDED, REPO, drain

EVENT = REPO / "tests" / "golden" / "tamin" / "eligibility.event.json"


# ----- the destination: config, client, destination, plugin --------------------------------
class EchoConfig(DestinationConfig):
    base_url: str = Field(..., description="the echo insurer")
    max_rps: float | None = None


class StaticTokens:
    def fetch(self, principal: str) -> IssuedToken:
        return IssuedToken("echo-token", float("inf"))


class EchoDestination:
    name = "echo"

    def __init__(self, exchange: Exchange):
        self._exchange = exchange

    def prepare(self, store: DestinationStore, job: Job) -> Job | Outcome:
        return job

    def send(self, job: Job) -> Outcome:
        got = self._exchange.send(Request("POST", "/register", "/register", json=job.payload, principal=job.principal,
                                          idempotency_key=job.idempotency_key, deadline=job.deadline))
        if got.outcome.klass is not OutcomeClass.accepted:
            return got.outcome
        return Outcome(OutcomeClass.accepted, result={"receipt": got.parsed["receipt"]},
                       request=got.outcome.request, response=got.outcome.response)

    def lookup(self, job: Job) -> Outcome:
        return Outcome(OutcomeClass.not_found, "the echo insurer keeps nothing to look up")

    def on_result(self, store: DestinationStore, job: Job, outcome: Outcome) -> None:
        return None


def build_echo(section: EchoConfig, context: BuildContext) -> Built:
    tokens = TokenCache(StaticTokens())
    exchange = Exchange(context.http, Endpoint(section.base_url, idempotency_header="X-Idempotency-Key"), tokens,
                        context.recorder)
    return Built(EchoDestination(exchange), tokens)


ECHO: DestinationPlugin[EchoConfig] = DestinationPlugin(
    name="echo", config_model=EchoConfig, operations=("register",), build=build_echo)


# ----- its simulator and its mapping folder ---------------------------------------------------
def echo_simulator(received: list[dict[str, Any]]) -> Starlette:
    async def register(request: StarletteRequest) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer echo-token":
            return JSONResponse({"error": "no token"}, status_code=401)
        body = await request.json()
        received.append({"body": body, "key": request.headers.get("x-idempotency-key")})
        return JSONResponse({"receipt": f"R-{len(received)}"})

    return Starlette(routes=[Route("/register", register, methods=["POST"])])


MAPPING = """\
mapping: echo-visit
version: 1
destination: echo
operation: register
event_types: [visit.admitted]
params: {}
body:
  visit: {$path: payload.visit_id}
  facility: {$path: facility_siam_id}
"""


@pytest.fixture
def echo_registered() -> Iterator[None]:
    registry.register(ECHO)
    yield
    registry.unregister("echo")


def test_an_event_reaches_a_destination_defined_only_in_this_test(db_url: str, tmp_path: Path,
                                                                  echo_registered: None) -> None:
    received: list[dict[str, Any]] = []
    (tmp_path / "mappings" / "echo").mkdir(parents=True)
    (tmp_path / "mappings" / "echo" / "visit.yaml").write_text(MAPPING, encoding="utf-8")
    with SimServer(echo_simulator(received)) as sim:
        config = load_config(EMBEDDED, environ={
            "ADAPTER__DATABASE__URL": db_url, "ADAPTER__MAPPINGS_ROOT": str(tmp_path / "mappings"),
            "ADAPTER__SECRETS__TOKEN_KEY_FILE": str(tmp_path / "token.key"),
            "ADAPTER__DESTINATIONS__TAMIN__ENABLED": "false", "ADAPTER__DESTINATIONS__TAMIN_PHARMACY__ENABLED": "false",
            "ADAPTER__DESTINATIONS__TAMIN_PARACLINIC__ENABLED": "false",
            "ADAPTER__DESTINATIONS__SEPAS__ENABLED": "false",
            "ADAPTER__DESTINATIONS__ECHO__BASE_URL": sim.base_url})
        app = build(config)
        try:
            assert app.intake.receive(EVENT.read_bytes()).outcome is Received.stored
            drain(app)
            with app.sessions() as session:
                rows = list(session.scalars(select(Submission)))
        finally:
            app.close()
    assert [(r.destination, r.operation, r.state, r.result) for r in rows] == [
        ("echo", "register", "accepted", {"receipt": "R-1"})]
    assert received == [{"body": {"visit": "V-1001", "facility": "1234567"}, "key": rows[0].idempotency_key}]


def test_a_section_no_plugin_knows_is_a_clear_config_error(tmp_path: Path) -> None:
    from adapter.config import ConfigError

    config = load_config(EMBEDDED, environ={"ADAPTER__DESTINATIONS__ECHOO__BASE_URL": "http://x",
                                            "ADAPTER__SECRETS__TOKEN_KEY_FILE": str(tmp_path / "token.key")})
    with pytest.raises(ConfigError) as refused:
        registry.configured(config)
    [line] = refused.value.lines
    assert "destinations.echoo: no such destination -- fix: one of tamin, sepas" in line, line


def test_a_mapping_naming_an_operation_its_destination_lacks_is_refused(tmp_path: Path) -> None:
    from adapter.mapping.lint import lint

    (tmp_path / "tamin").mkdir()
    (tmp_path / "tamin" / "x.yaml").write_text(MAPPING.replace("destination: echo", "destination: tamin"),
                                               encoding="utf-8")
    problems = [str(p) for p in lint(tmp_path, registry.operations())]
    assert any("'register' is not an operation of tamin (known: eligibility, create, update, cancel)" in p
               for p in problems), problems
