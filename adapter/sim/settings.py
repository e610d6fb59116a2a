"""Settings of the Tamin simulator: identity, business data and scripted faults.

Every field can be changed at run time through ``POST /_sim/faults`` (a partial JSON
object with these field names), so a sandbox or an integration test can script a
scenario against a running simulator. Facts the research could not pin down (which
patients are insured, which codes exist, which prescription types take which service
types) are settings rather than hard-coded guesses.
"""

from __future__ import annotations

import re
from typing import Literal

import jdatetime
import pydantic

_JALALI_COMPACT = re.compile(r"^\d{8}$")


def _default_presc_types() -> dict[int, set[str]]:
    """prescTypeId -> allowed item ``srvType`` values (research section 3.2/3.3).

    An empty set means the type takes no items at all (visit).
    """
    return {
        1: {"01"},
        2: {"02", "03", "04", "05", "06", "07"},
        3: set(),
        4: {"17"},
        5: {"17"},
    }


class SimDoctor(pydantic.BaseModel):
    """A doctor registered with Tamin (only checked when ``TaminSimSettings.doctors`` is set)."""

    national_code: str
    mobile: str
    active: bool = True


class SimOperator(pydantic.BaseModel):
    """A pharmacy or paraclinic centre user of ``acl/authenticate`` (dispensing / paraclinic APIs)."""

    password: str
    family: Literal["pharmacy", "paraclinic"]


def _default_operators() -> dict[str, SimOperator]:
    """Seed 001's pilot user for every pharmacy (drugtest / 123) and a paraclinic twin."""
    return {"drugtest": SimOperator(password="123", family="pharmacy"),
            "paratest": SimOperator(password="123", family="paraclinic")}


class TaminSimSettings(pydantic.BaseModel):
    """Configuration of one simulated Tamin service.

    Fault counters (``fail_next``, ``drop_response_after_apply``, ``hang_next``) are
    consumed one per matching request.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    # --- identity / tokens -------------------------------------------------------
    client_id: str = "adapter-test"
    client_secret: str = "adapter-test-secret"
    token_ttl_s: float = 3600.0
    rotate_refresh_tokens: bool = True
    software_client_id: str = "adapter-software"
    """``SoftwareClientID`` the dispensing/paraclinic ``acl/authenticate`` call must carry."""
    software_client_secret: str = "adapter-software-secret"
    provider_operators: dict[str, SimOperator] = pydantic.Field(default_factory=_default_operators)
    """username -> operator of ``acl/authenticate`` (its family decides which API it may call)."""

    # --- business data -----------------------------------------------------------
    unknown_patients: set[str] = set()
    """National codes the insurer does not know: business rejection / hasDeserve false."""
    expired_patients: set[str] = set()
    """National codes whose coverage has expired: business rejection / hasDeserve false."""
    known_service_codes: set[str] | None = None
    """``None`` accepts any srvCode; otherwise an unknown one is a business rejection."""
    doctors: dict[str, SimDoctor] | None = None
    """docId -> registered doctor. ``None`` accepts any doctor."""
    presc_types: dict[int, set[str]] = pydantic.Field(default_factory=_default_presc_types)
    fida_patient_prefix: str = "FDA"
    """A foreign national's FIDA id arrives as this prefix + 8-16 digits (sim-defined, after the
    documented ``FDA`` form of foreign doctors); ``""``: a bare 8-16 digit id that is not a
    national code is taken as a FIDA id. A FIDA id sent as a national code is refused."""
    duplicate_check_anonymous: bool = True
    """Whether two ``UNKNOWN``-patient prescriptions can be duplicates of each other."""
    timezone: str = "Asia/Tehran"
    """Calendar day used for "prescDate not after today" and the same-day delete rule."""
    today_override: str | None = None
    """8-digit Solar Hijri date used as "today" (tests); the ``X-Sim-Today`` header wins."""

    # --- faults ------------------------------------------------------------------
    latency_ms: float = 0.0
    """Added to every API call (not the token calls, not admin calls)."""
    fail_next: int = 0
    """The next N matching calls fail with ``fail_status`` before anything is applied."""
    fail_status: int = 503
    """HTTP status for ``fail_next``; 0 closes the connection without any answer."""
    fail_endpoints: set[str] | None = None
    """Endpoint names ``fail_next`` applies to; ``None`` = every API endpoint (not token)."""
    fail_body: Literal["json", "html"] = "json"
    """``html`` answers faults with a gateway HTML page, as seen on real outages."""
    retry_after_s: float | None = 1.0
    """``Retry-After`` header sent with 429 and 503 fault answers (None: no header)."""
    drop_response_after_apply: int = 0
    """The next N calls to ``drop_endpoints`` are applied, then the connection is closed."""
    drop_endpoints: set[str] = {"create"}
    hang_next: int = 0
    """The next N API calls wait ``hang_s`` seconds before being processed (then applied)."""
    hang_s: float = 30.0

    @pydantic.field_validator("today_override")
    @classmethod
    def _check_today(cls, value: str | None) -> str | None:
        if value is not None and parse_jalali_compact(value) is None:
            raise ValueError("today_override must be an 8-digit Solar Hijri date YYYYMMDD")
        return value


def parse_jalali_compact(text: object) -> jdatetime.date | None:
    """An 8-digit ``YYYYMMDD`` Solar Hijri date, or ``None`` when it is not a real date."""
    if not isinstance(text, str) or not _JALALI_COMPACT.match(text):
        return None
    year, month, day = int(text[:4]), int(text[4:6]), int(text[6:])
    if not 1200 <= year <= 1599:
        return None
    try:
        return jdatetime.date(year, month, day)
    except ValueError:
        return None
