"""Adapter configuration: one YAML file plus environment overrides, validated at start-up.

Order: the YAML file given with ``--config`` (default ``config/embedded.yaml``), then
environment variables ``ADAPTER__SECTION__KEY=value`` (double underscore between levels,
case-insensitive; values parsed as YAML scalars, so ``true``/``5`` work). Secrets are
never written in the file: a key ending in ``_env`` names the environment variable that
holds the secret, a key ending in ``_file`` names a file (mode 600) that holds it; an empty
one is refused (``read_secret``). A secret written in the file itself (``client_secret:``,
``password:``) is accepted only for a destination whose URLs are all on this machine (the
bundled simulators, as in ``config/embedded.yaml``).

Every problem is reported as ``<file>: <key>: <what is wrong> -- fix: <how>``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapter.limits import CONFIG_MAX_BYTES, KEY_FILE_MAX_BYTES, InputLimitError, read_bounded_text, safe_load_yaml

DEFAULT_CONFIG = Path("config/embedded.yaml")
ENV_PREFIX = "ADAPTER__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(_Section):
    url: str = Field(
        "sqlite:///var/adapter.db",
        description="a SQLAlchemy URL: sqlite:///var/adapter.db or postgresql+psycopg://user@host/db",
    )

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql")):
            raise ValueError("only SQLite (sqlite:///...) and PostgreSQL (postgresql+psycopg://...) are supported")
        return value


class BrokerConfig(_Section):
    url: str = Field(
        "sqlite-queue:///var/queue.db",
        description="a kombu URL: amqp://user:pass@host:5672/vhost for RabbitMQ, sqlite-queue:///var/queue.db embedded",
    )
    queue: str = Field("his.events", min_length=1, description="the queue the HIS publishes events to")
    exchange: str = Field("his", min_length=1, description="the exchange the queue is bound to")
    prefetch: int = Field(20, ge=1, le=1000, description="unacked deliveries held at once (1-1000)")
    embedded_lease_s: float = Field(
        60, gt=0, description="embedded queue only: seconds before a delivery a dead consumer held is redelivered")
    reply_queue: str = Field(
        "his.replies", min_length=1,
        description="the queue the adapter publishes replies to the HIS on (e.g. adapter.paper_fallback), bound to exchange")
    heartbeat_s: int = Field(
        30, ge=0, le=600,
        description="RabbitMQ only: AMQP heartbeat in seconds; a connection silent for about twice this (a firewall or "
                    "NAT dropped it) is given up and opened again. 0 turns heartbeats off (not advised)")
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="RabbitMQ only: seconds to open a connection")
    embedded_max_mb: float = Field(
        1024, gt=0, description="embedded queue only: MB of messages the queue file may hold; a publish beyond it is "
                                "refused with an error (the disk never fills), free space is given back as it drains")


class AuthConfig(_Section):
    mode: Literal["client_credentials", "doctor_refresh"] = Field(
        "client_credentials",
        description="client_credentials (seed 001 form post) or doctor_refresh (refresh-token grant per prescriber)",
    )
    token_path: str = Field("/auth/server/token", description="client_credentials token path on auth_base_url")
    refresh_token_path: str = Field("/auth/server/v2/token", description="refresh-token grant path on auth_base_url")
    auth_base_url: str | None = Field(None, description="token host; defaults to the destination base_url")
    client_id: str = Field(..., min_length=1, description="the client_id Tamin issued to this software")
    client_secret_env: str | None = Field(None, description="name of the environment variable holding client_secret")
    client_secret_file: str | None = Field(None, description="path of a mode-600 file holding client_secret")
    client_secret: str | None = Field(
        None, description="only for the bundled simulator; use client_secret_env or client_secret_file for real secrets"
    )
    refresh_leeway_s: float = Field(60, ge=0, description="refresh a token this many seconds before it expires")


class RetryConfig(_Section):
    max_attempts: int = Field(12, ge=1, description="attempts before a submission is dead")
    base_delay_s: float = Field(1.0, gt=0, description="first backoff delay in seconds")
    max_delay_s: float = Field(600.0, gt=0, description="backoff cap in seconds")
    ttl_s: float = Field(72 * 3600, gt=0, description="time after the first attempt when a submission is dead")
    jitter: float = Field(0.2, ge=0, le=1, description="relative jitter of each delay (0.2 = +-20%)")


class CircuitConfig(_Section):
    """Circuit breaker of one destination (see adapter/outage/breaker.py)."""

    window: int = Field(20, ge=1, le=10_000, description="the number of recent send outcomes the failure rate is taken over")
    min_calls: int = Field(10, ge=1, description="outcomes needed in the window before the circuit may open")
    failure_rate: float = Field(0.5, gt=0, le=1, description="share of failures (transient/ambiguous) that opens it, 0-1")
    open_s: float = Field(30.0, ge=0, description="seconds the circuit stays open before probe sends")
    half_open_probes: int = Field(2, ge=1, description="probe sends that must succeed to close the circuit again")


class TlsConfig(_Section):
    """``destinations.<name>.tls``: how the adapter's HTTPS connections to one insurer are secured
    (its API host and its token host). Loaded at start-up (``adapter.destinations.tls``)."""

    ca_file: str | None = Field(
        None, description="PEM CA bundle that verifies the insurer's certificate, instead of the system's "
                          "(e.g. the national health network's CA); null = the system's trusted CAs")
    client_cert_file: str | None = Field(
        None, description="PEM client certificate this adapter presents (when the insurer requires one)")
    client_key_file: str | None = Field(
        None, description="mode-600 PEM private key of client_cert_file; null when the key is in client_cert_file")
    allow_plain_http: bool = Field(
        False, description="accept an http:// URL for this destination off this machine (not advised: patient data "
                           "in clear); without it such a URL stops config check and adapter run")

    @model_validator(mode="after")
    def _key_needs_certificate(self) -> "TlsConfig":
        if self.client_key_file and not self.client_cert_file:
            raise ValueError("client_key_file is set without client_cert_file: set the certificate too")
        return self


class DestinationConfig(_Section):
    """What every destination's section under ``destinations:`` has (each subclass sets its own defaults)."""

    enabled: bool = True
    tls: TlsConfig = TlsConfig()
    retry: RetryConfig = RetryConfig()
    circuit: CircuitConfig = CircuitConfig()
    max_rps: float | None = Field(
        10.0, gt=0, description="sends per second at most (token bucket), so a recovering insurer is not flooded; null = no limit")
    max_burst: int | None = Field(
        None, ge=1, description="sends allowed at once above max_rps (bucket size); default: one second's worth")


class TaminRoutes(_Section):
    """Path templates per operation (pilot spelling by default; production ones in production.example.yaml)."""

    create: str = "/api/v2/SendEpresc"
    update: str = "/api/v2/ep/update/{head_id}/{doc_national_code}/{doc_id}"
    cancel: str = "/api/v2/ep/{head_id}/{doc_national_code}/{doc_id}"
    detail: str = "/api/v2/ep/{head_id}/{doc_national_code}/{doc_id}/detail"
    eligibility: str = "/api/v2/patients/deserve-info/{request_by}/{siam_id}/{doc_id}/{patient}"
    lookup: str | None = Field("/api/v2/ep/lookup", description="lookup route for ambiguous outcomes; null if unavailable")


class TaminConfig(DestinationConfig):
    base_url: str = Field(..., description="the Tamin API base URL, e.g. https://ep-test.tamin.ir")
    auth: AuthConfig
    routes: TaminRoutes = TaminRoutes()
    connect_timeout_s: float = Field(5.0, gt=0, description="seconds to open a connection")
    read_timeout_s: float = Field(30.0, gt=0, description="seconds to wait for an answer")
    idempotency_header: bool = Field(True, description="send X-Idempotency-Key (harmless where ignored)")
    max_rps: float | None = Field(
        20.0, gt=0, description="sends per second at most (token bucket), so a recovering insurer is not flooded; null = no limit")
    accepts_unidentified_patients: bool = Field(
        False, description=("send an unidentified patient's events as Tamin's anonymous patient UNKNOWN; false (seed 002 s.7: "
                            "the unique id implies no insurance) refuses them at intake as not_covered: the free/paper path"))


# -- Tamin provider side: dispensing (pharmacy) and paraclinic ------------------------------
# Two API families with their own hosts, token and operator (seed 001; shared/domain.md); one
# config shape serves both. Route templates fill {placeholders} from the call (URL-quoted).

class ProviderOperator(_Section):
    """The Tamin operator account (pharmacy or paraclinic centre user) of one facility."""

    username: str = Field(..., min_length=1, description="the operator's Tamin user name (test: drugtest)")
    password_env: str | None = Field(None, description="environment variable holding the operator's password")
    password_file: str | None = Field(None, description="mode-600 file holding the operator's password")
    password: str | None = Field(None, description="only for the bundled simulator; use password_env or password_file")


class ProviderAuthConfig(_Section):
    """``acl/authenticate``: JSON {username, password, SoftwareClientID, SoftwareClientSecret}."""

    auth_base_url: str | None = Field(None, description="token host, e.g. https://authentication.tamin.ir; defaults to base_url")
    token_path: str = Field("/api/acl/authenticate", description="token path on auth_base_url")
    software_client_id: str = Field(..., min_length=1, description="the SoftwareClientID Tamin issued (same in test and production)")
    software_client_secret_env: str | None = Field(None, description="environment variable holding SoftwareClientSecret")
    software_client_secret_file: str | None = Field(None, description="mode-600 file holding SoftwareClientSecret")
    software_client_secret: str | None = Field(
        None, description="only for the bundled simulator; use software_client_secret_env or _file for real secrets")
    operators: dict[str, ProviderOperator] = Field(
        ..., min_length=1, description="facility_siam_id -> {username, password_env | password_file}: one operator per facility")
    header_scheme: str = Field(
        "Bearer", description="Authorization scheme before the token; empty string sends the raw token (as PARS does)")
    refresh_leeway_s: float = Field(60, ge=0, description="refresh a token this many seconds before it expires")


class ProviderRoutes(_Section):
    """Path templates of the three steps. Placeholders: {patient} {tracking_code} {provider_id}."""

    fetch: str = Field(..., description="GET the prescription by patient national code + tracking code (query in the template)")
    submit: str = Field(..., description="POST that registers the delivered items / requested services")
    confirm: str = Field(..., description="POST the confirmation of a registered request")


class TaminProviderConfig(DestinationConfig):
    base_url: str = Field(..., description="the API base URL, e.g. https://health-services.tamin.ir")
    auth: ProviderAuthConfig
    provider_ids: dict[str, str] = Field(
        ..., min_length=1, description="facility_siam_id -> the Tamin provider id (pharmacy phaId / paraclinic centre parID)")
    routes: ProviderRoutes
    connect_timeout_s: float = Field(5.0, gt=0, description="seconds to open a connection")
    read_timeout_s: float = Field(30.0, gt=0, description="seconds to wait for an answer")
    idempotency_header: bool = Field(True, description="send X-Idempotency-Key (harmless where ignored)")

    @model_validator(mode="after")
    def _every_operator_has_a_provider_id(self) -> "TaminProviderConfig":
        missing = sorted(set(self.auth.operators) - set(self.provider_ids))
        if missing:
            raise ValueError(f"facilities {', '.join(missing)} have an operator under auth.operators but no provider id "
                             "under provider_ids: add the Tamin pharmacy / paraclinic centre id of each")
        return self


PHARMACY_ROUTES = ProviderRoutes(
    fetch="/api/Pharmacy/DrugEpresc/GetActivePresc?patientNationalCode={patient}&trackingCode={tracking_code}"
          "&PhaId={provider_id}",
    submit="/api/Pharmacy/DrugStore/PostPresc",
    confirm="/api/Pharmacy/DrugStore/ConfirmPresc")
PARACLINIC_ROUTES = ProviderRoutes(
    fetch="/api/ParaClinic/ParaEPresc/RequestList?patientNationalCode={patient}&trackingCode={tracking_code}"
          "&parID={provider_id}",
    submit="/api/ParaClinic/ParaEPresc/RequestParPresc",
    confirm="/api/ParaClinic/ParaEPresc/ConfirmParPresc")


class TaminPharmacyConfig(TaminProviderConfig):
    """``destinations.tamin_pharmacy``: drug dispensing (نسخه‌پیچی)."""

    routes: ProviderRoutes = PHARMACY_ROUTES


class TaminParaclinicConfig(TaminProviderConfig):
    """``destinations.tamin_paraclinic``: lab and imaging services (پاراکلینیک)."""

    routes: ProviderRoutes = PARACLINIC_ROUTES


# -- DITAS / SEPAS (the Ministry of Health gateway and national health record) ----------------

class SepasAuthConfig(_Section):
    token_path: str = Field("/oauth/token", description="OAuth2 token path on base_url (password grant)")
    client_id: str = Field(..., min_length=1, description="the DITAS client id (HTTP Basic user of the token call)")
    client_secret_env: str | None = Field(None, description="environment variable holding the client secret")
    client_secret_file: str | None = Field(None, description="mode-600 file holding the client secret")
    client_secret: str | None = Field(None, description="simulator only")
    username: str = Field(..., min_length=1, description="the DITAS user of this software installation")
    password_env: str | None = Field(None, description="environment variable holding the DITAS password")
    password_file: str | None = Field(None, description="mode-600 file holding the DITAS password")
    password: str | None = Field(None, description="simulator only")
    refresh_leeway_s: float = Field(10, ge=0, description="refresh a token this many seconds before it expires")


class SepasRoutes(_Section):
    save: str = Field("/api/client/apim/v1/sepas/gwSepasHospital/{op}Secure",
                      description="save path template; {op} is SavePatientBill, SaveMedicationPrescription, ...")
    validate_: str = Field("/api/client/apim/v1/sepas/gwSepasHospital/SepasValidatorSecure", alias="validate",
                           description="the validation service (REST path not public: confirm with DITAS)")
    lookup: str | None = Field("/api/client/apim/v1/sepas/gwSepasHospital/lookup",
                               description="reconciliation lookup (simulator contract); null if unavailable")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SepasConfig(DestinationConfig):
    enabled: bool = Field(False, description="off unless the facility is registered with DITAS")
    base_url: str = Field(..., description="the DITAS gateway, e.g. https://apigateway.behdasht.gov.ir")
    auth: SepasAuthConfig
    routes: SepasRoutes = SepasRoutes()
    pids: dict[str, str] = Field(
        default_factory=dict,
        description="package id (pid header) per service: validate, PatientBill, MedicationPrescription, ...; "
                    "'default' for the rest")
    system_id: str = Field(..., description="the software system GUID (MsgID.SystemID, envelope SystemID)")
    location_ids: dict[str, str] = Field(
        default_factory=dict, description="facility_siam_id -> facility GUID (HealthCareFacilityID / LocationID)")
    default_location_id: str | None = Field(None, description="facility GUID for facilities not in location_ids")
    public_key_file: str = Field(..., description="the Ministry's RSA public key (PEM or <RSAKeyValue> XML)")
    terminology_dir: str = Field("mappings/sepas/terminology", description="folder with terminology.yaml")
    enforcement: dict[str, str | None] = Field(
        default_factory=dict, description="rule id -> enforcement date (1401/12/20 or 2023-03-11; null = always)")
    validation_type: str | None = Field(None, description="ValidationType sent to the validator (null = all rules)")
    client_ip: str = Field("127.0.0.1", description="IPClient / IPServer of the envelope")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)

    def pid(self, service: str) -> str | None:
        return self.pids.get(service) or self.pids.get("default")

    def location_for(self, facility_siam_id: str | None) -> str | None:
        return self.location_ids.get(facility_siam_id or "") or self.default_location_id


class DestinationsConfig(_Section):
    """The built-in destinations' sections, typed here; a section under any other name is kept as
    given and validated by the plugin registered under that name (``adapter.destinations.registry``),
    which also refuses a name no plugin has."""

    model_config = ConfigDict(extra="allow")

    tamin: TaminConfig
    sepas: SepasConfig | None = None
    tamin_pharmacy: TaminPharmacyConfig | None = None
    tamin_paraclinic: TaminParaclinicConfig | None = None


class DispatchConfig(_Section):
    workers: int = Field(8, ge=1, le=64, description="the number of concurrent sends, 1-64")
    batch_size: int = Field(50, ge=1, le=1000, description="due submissions claimed per round")
    lease_s: float = Field(120, gt=0, description="a claimed submission is reclaimed after this many seconds")
    poll_interval_s: float = Field(0.2, gt=0, description="seconds between polls when nothing is due")
    wait_delay_s: float = Field(1.0, gt=0, description="re-check delay for a submission waiting on an earlier one")
    ambiguous_grace_s: float = Field(
        60.0, ge=0,
        description="seconds to wait after a request that got no answer (or a send abandoned mid-flight) before "
                    "looking it up at the destination: at least the insurer's longest processing time, so a request "
                    "it is still applying is found instead of sent again")


class FallbackConfig(_Section):
    """Paper fallback during outages (shared/domain.md, "Paper fallback")."""

    enabled: bool = Field(True, description="issue paper-fallback records and replies while a destination is in outage")
    number_prefix: str = Field("FB", pattern=r"^[A-Z]{1,6}$", description="first part of a fallback number, 1-6 capital letters")
    timezone: str = Field("Asia/Tehran", description="time zone of the date in fallback numbers (Solar Hijri yyMMdd)")
    answer_within_s: float = Field(
        30.0, ge=0,
        description="a prescription with no registration this many seconds after its occurred_at gets paper, outage "
                    "declared or not (its electronic submission goes on and is linked later); 0 turns this off")
    late_grace_s: float = Field(
        5.0, ge=0, description="a prescription stored less than this long ago is given this time to register first, "
                               "even past its deadline (the HIS delivered it late)")
    answer_horizon_s: float = Field(
        900.0, gt=0, description="prescriptions written longer ago than this get no paper from the deadline: nobody "
                                 "waits at the desk for them any more (a backlog registers; an outage at the time "
                                 "they were written still gives them paper)")


class ReplyWebhookConfig(_Section):
    """``replies.sink: webhook``: replies POSTed to the HIS over HTTPS, HMAC-signed (docs/replies.md)."""

    url: str | None = Field(None, description="the HIS's HTTPS endpoint that takes one reply per POST")
    secret_env: str | None = Field(None, description="environment variable holding the HMAC-SHA256 signing secret")
    secret_file: str | None = Field(None, description="mode-600 file holding the HMAC-SHA256 signing secret")
    timeout_s: float = Field(10.0, gt=0, le=120, description="seconds to wait for the HIS's answer to one POST")
    max_attempts: int = Field(10, ge=1, le=1000, description="failed POSTs of one reply before it is dead (alerted)")
    base_delay_s: float = Field(2.0, gt=0, description="first retry delay; doubled each time")
    max_delay_s: float = Field(300.0, gt=0, description="the longest retry delay")
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="how the POSTs to the HIS are secured: ca_file for an HIS certificate from the hospital's own CA, "
                    "client_cert_file when the HIS asks for this adapter's certificate")


class RepliesConfig(_Section):
    """Replies to the HIS (reply contract v1, docs/replies.md)."""

    enabled: bool = Field(True, description="write and publish replies to the HIS")
    types: list[str] = Field(
        ["*"], min_length=1,
        description="the reply types sent, as shell patterns (e.g. prescription.*, paper_fallback.*); others are not written")
    sink: Literal["amqp", "webhook"] = Field(
        "amqp", description="amqp: broker.reply_queue on the HIS's broker; webhook: replies.webhook.url")
    routing_key: str = Field(
        "{queue}", min_length=1,
        description="AMQP routing key (and queue) of a reply: {queue} is broker.reply_queue, {facility} the "
                    "facility's SIAM id, e.g. {queue}.{facility} for one reply queue per facility")
    legacy_paper_type: bool = Field(
        False, description="send paper_fallback.issued with its pre-v1 type adapter.paper_fallback (an HIS not updated yet)")
    batch: int = Field(200, ge=1, le=5000, description="replies read from the outbox per round")
    round_interval_ms: int = Field(
        200, ge=0, le=5000,
        description="a busy adapter starts a publishing round at most this often (a lone reply goes at once): "
                    "each round reads, commits and marks once for all that is pending; 0: a round per settle")
    webhook: ReplyWebhookConfig = ReplyWebhookConfig()


class SecretsConfig(_Section):
    token_key_env: str = Field("ADAPTER_TOKEN_KEY", description="environment variable with the Fernet key for stored refresh tokens")
    token_key_file: str | None = Field("var/token.key", description="file with the Fernet key (created, mode 600, when absent)")
    patient_ref_key_env: str = Field(
        "ADAPTER_PATIENT_KEY", description="environment variable with the HMAC key that pseudonymises patient ids"
    )
    patient_ref_key_file: str | None = Field(
        None, description="file with the patient HMAC key (created, mode 600, when absent); null: patient.key in the "
                          "folder of token_key_file (var/patient.key). Never the token key itself: one key, one purpose")
    payload_key_env: str = Field(
        "ADAPTER_PAYLOAD_KEY",
        description="environment variable with a Fernet key; when set, event bodies and payloads (store and embedded "
                    "queue) are encrypted at rest")
    payload_key_required: bool = Field(
        False, description="refuse to start without the payload key (production: patient data is never stored in clear)")


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class StatusConfig(_Section):
    """The status HTTP service of ``adapter run``: /healthz, /readyz, /status, /metrics and a page at /."""

    enabled: bool = Field(True, description="serve /healthz, /readyz, /status, /metrics and / while adapter run runs")
    host: str = Field(
        "127.0.0.1", min_length=1,
        description="address to bind; anything but loopback needs status.token_env/token_file or basic_user + password")
    port: int = Field(8090, ge=0, le=65535, description="TCP port (0 = any free port)")
    token_env: str | None = Field(None, description="environment variable holding the bearer token the service requires")
    token_file: str | None = Field(None, description="mode-600 file holding the bearer token the service requires")
    basic_user: str | None = Field(None, description="HTTP basic user the service requires (with basic_password_env/_file)")
    basic_password_env: str | None = Field(None, description="environment variable holding the basic-auth password")
    basic_password_file: str | None = Field(None, description="mode-600 file holding the basic-auth password")
    ready_max_age_s: float = Field(
        30.0, gt=0, description="/readyz turns red when the consumer loop has not run for this many seconds")
    cache_s: float = Field(2.0, ge=0, description="seconds /status and /metrics reuse one reading of the store")
    tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain) the service presents over HTTPS; needed when bound beyond loopback")
    tls_key_file: str | None = Field(None, description="mode-600 PEM private key of status.tls_cert_file")
    allow_plain_http: bool = Field(
        False, description="serve plain HTTP beyond loopback (only behind a TLS-terminating proxy or on a private "
                           "network): without it, status.tls_cert_file and status.tls_key_file are required there")
    max_connections: int = Field(
        32, ge=1, le=1024,
        description="open connections at most (1-1024), handshakes included; more are closed at once, so the "
                    "service never takes more file descriptors than this from delivery")
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="seconds a connection has for its TLS handshake and a request's line and "
                                       "headers; a slower one is closed")
    idle_timeout_s: float = Field(
        5.0, gt=0, le=300, description="seconds a kept-alive connection may sit without a new request")


class RetentionConfig(_Section):
    """What ``adapter prune`` removes. Unfinished work (open, rejected, invalid, dead,
    discrepancy) and its events are never touched."""

    payload_days: float = Field(
        90, gt=0, description="days after a submission finished before its payload, attempt bodies and event body go")
    audit_days: float = Field(
        365, gt=0, description="days after a submission finished before its attempt rows and state changes go")
    prune_every_s: float | None = Field(
        None, gt=0, description="adapter run prunes this often (seconds); null = only by the adapter prune command")
    batch_size: int = Field(1000, ge=1, le=100_000, description="rows changed per transaction while pruning")


class CountRule(_Section):
    """New submissions (or events) that ended in one state: an alert while at least ``threshold``
    of them arrived within the last ``window_s`` seconds."""

    threshold: int | None = Field(
        1, ge=1, description="alert when at least this many new ones came within window_s (null = rule off)")
    window_s: float = Field(900, gt=0, description="seconds looked back for new ones (the evaluation window)")


class AlertRulesConfig(_Section):
    circuit_open: bool = Field(True, description="alert while a destination's circuit is not closed (open or probing)")
    outage_declared: bool = Field(True, description="alert while an operator-declared outage is open")
    oldest_pending_minutes: float | None = Field(
        60, gt=0, description="alert while a destination's oldest open submission is older than this (null = off)")
    new_dead: CountRule = CountRule(threshold=1)
    new_rejected: CountRule = CountRule(threshold=5)
    new_invalid: CountRule = CountRule(threshold=5)
    event_conflict: bool = Field(True, description="alert while a different body under a known event id (a "
                                                   "conflict) waits for an operator")
    replies_dead: bool = Field(True, description="alert while replies to the HIS are dead (its webhook kept refusing them)")
    store_unavailable_s: float | None = Field(
        60, gt=0, description="alert when the running loops have found the database unavailable for longer than this "
                              "many seconds (null = off); sent without the database, see docs/operations.md")


class WebhookConfig(_Section):
    url: str = Field(..., pattern=r"^https?://", description="an http(s) URL the alert is POSTed to as JSON")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="header name -> environment variable holding its value (e.g. Authorization)")
    timeout_s: float = Field(10.0, gt=0, description="seconds to wait for the webhook to answer")


class EmailConfig(_Section):
    host: str = Field(..., min_length=1, description="the SMTP server")
    port: int = Field(25, ge=1, le=65535, description="SMTP port (25, or 587 with starttls)")
    from_: str = Field(..., alias="from", min_length=3, description="the From address")
    to: list[str] = Field(..., min_length=1, description="one or more recipient addresses")
    starttls: bool = Field(False, description="upgrade the connection with STARTTLS before sending")
    username: str | None = Field(None, description="SMTP login user (with password_env or password_file)")
    password_env: str | None = Field(None, description="environment variable holding the SMTP password")
    password_file: str | None = Field(None, description="mode-600 file holding the SMTP password")
    timeout_s: float = Field(10.0, gt=0, description="seconds to wait for the SMTP server")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AlertsConfig(_Section):
    """Alerts on state changes (not per failure): one message when a condition starts, one when
    it ends, and a reminder every ``renotify_s`` while it lasts; by webhook and/or email."""

    enabled: bool = Field(True, description="evaluate the alert rules while adapter run runs (needs a channel)")
    evaluate_every_s: float = Field(30.0, gt=0, description="seconds between evaluations of the rules")
    renotify_s: float | None = Field(
        3600.0, gt=0, description="seconds between reminders while a condition lasts (null = no reminders)")
    rules: AlertRulesConfig = AlertRulesConfig()
    webhooks: list[WebhookConfig] = Field(default_factory=list, description="webhooks: [{url, headers_env}]")
    email: EmailConfig | None = None


class AdapterConfig(_Section):
    instance: str = Field("adapter", description="a name for this installation, shown in status")
    database: DatabaseConfig = DatabaseConfig()
    broker: BrokerConfig = BrokerConfig()
    mappings_root: str = Field("mappings", description="folder of mapping files, one sub-folder per destination")
    destinations: DestinationsConfig
    dispatch: DispatchConfig = DispatchConfig()
    fallback: FallbackConfig = FallbackConfig()
    replies: RepliesConfig = RepliesConfig()
    secrets: SecretsConfig = SecretsConfig()
    logging: LoggingConfig = LoggingConfig()
    status: StatusConfig = StatusConfig()
    retention: RetentionConfig = RetentionConfig()
    alerts: AlertsConfig = AlertsConfig()
    source_file: str = Field("<none>", exclude=True)


class ConfigError(Exception):
    """The configuration cannot be used; each line names file, key, problem and fix."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__") if part]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(name, raw)
    return tree


def _env_value(name: str, raw: str) -> Any:
    """An override's value read as a YAML scalar (or flow value), within the YAML limits."""
    if raw == "":
        return ""
    try:
        return safe_load_yaml(raw, f"environment {name}")
    except InputLimitError as exc:
        raise ConfigError([str(exc)]) from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _fix_for(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The field's description is the fix hint: walk the models along the error location."""
    current: Any = model
    description = ""
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            break
        info = fields[part]
        description = info.description or description
        current = info.annotation
        args = getattr(current, "__args__", ())
        current = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), current)
    return description or "see config/embedded.yaml for a valid example"


def _env_name(loc: tuple[Any, ...]) -> str:
    return "environment " + ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _from_env(loc: tuple[Any, ...], env_keys: set[tuple[str, ...]]) -> bool:
    return tuple(str(p) for p in loc) in env_keys


def _flatten(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    keys: set[tuple[str, ...]] = set()
    for key, value in tree.items():
        keys |= _flatten(value, prefix + (key,)) if isinstance(value, dict) else {prefix + (key,)}
    return keys


def _lines(error: ValidationError, source: str, env_keys: set[tuple[str, ...]]) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        key = ".".join(str(p) for p in item["loc"])
        problem = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            fix = "remove it or check its spelling"
        else:
            fix = f"{key} should be {_fix_for(AdapterConfig, item['loc'])}"
        origin = _env_name(item["loc"]) if _from_env(item["loc"], env_keys) else source
        lines.append(f"{origin}: {key}: {problem} -- fix: {fix}")
    return lines


def _read_yaml(source: Path) -> Any:
    """The config file's YAML, read within ``adapter.limits`` (size, aliases, nesting)."""
    try:
        text = read_bounded_text(source, CONFIG_MAX_BYTES, "config file")
        return safe_load_yaml(text, str(source)) or {}
    except InputLimitError as exc:
        raise ConfigError([f"{source}: {exc.where}: {exc.reason}"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror} -- fix: pass --config with an existing file"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: not UTF-8 text -- fix: save the config file as UTF-8"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "?"
        raise ConfigError([f"{source}: {where}: not valid YAML ({getattr(exc, 'problem', exc)}) -- fix: correct the YAML syntax"]) from None


def load_config(path: Path | str | None = None, environ: dict[str, str] | None = None) -> AdapterConfig:
    """Read, overlay and validate the configuration, or raise ``ConfigError``."""
    source = Path(path) if path else DEFAULT_CONFIG
    environ = dict(os.environ) if environ is None else environ
    data = _read_yaml(source)
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: top level must be a mapping of sections -- fix: see config/embedded.yaml"])
    overrides = _env_overrides(environ)
    data = _merge(data, overrides)
    try:
        config = AdapterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_lines(exc, str(source), _flatten(overrides))) from None
    literal_problems = _literal_secret_lines(config, str(source), _flatten(overrides))
    if literal_problems:
        raise ConfigError(literal_problems)
    return config.model_copy(update={"source_file": str(source)})


def is_this_machine(url: str) -> bool:
    """Whether ``url``'s host is this machine: ``localhost``, 127.0.0.0/8 or ::1."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _literal_fields(model: BaseModel, loc: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """(location, value) of every secret written in the config that would be used: a field ``X``
    with ``X_env`` and ``X_file`` beside it (``client_secret``, ``password``, ...), in ``model``
    and below it, when neither of those is set (a set one wins, as an override of the file)."""
    found: list[tuple[tuple[str, ...], Any]] = []
    fields = type(model).model_fields
    for name in fields:
        value = getattr(model, name)
        if f"{name}_env" in fields and f"{name}_file" in fields:
            if value is not None and getattr(model, f"{name}_env") is None and getattr(model, f"{name}_file") is None:
                found.append((loc + (name,), value))
        elif isinstance(value, BaseModel):
            found += _literal_fields(value, loc + (name,))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    found += _literal_fields(item, loc + (name, str(key)))
    return found


def _urls(model: BaseModel) -> list[str]:
    """Every ``*base_url`` a destination's section has (its API host, its token host)."""
    urls: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name.endswith("base_url") and isinstance(value, str):
            urls.append(value)
        elif isinstance(value, BaseModel):
            urls += _urls(value)
    return urls


def _shown(url: str) -> str:
    """A URL as it may be printed: scheme and host only (no user, password, path or query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") if parts.scheme else "?"
    except ValueError:
        return "?"


def _literal_secret_lines(config: AdapterConfig, source: str, env_keys: set[tuple[str, ...]]) -> list[str]:
    """A secret written in the config (``client_secret:``, ``password:``, ...) is for the bundled
    simulator: refused, for an enabled destination, unless every URL of it is on this machine."""
    lines = []
    for name in type(config.destinations).model_fields:
        section = getattr(config.destinations, name)
        if not isinstance(section, BaseModel) or not getattr(section, "enabled", True):
            continue
        remote = [url for url in _urls(section) if not is_this_machine(url)]
        if not remote:
            continue
        for loc, _ in _literal_fields(section, ("destinations", name)):
            key = ".".join(loc)
            origin = _env_name(loc) if _from_env(loc, env_keys) else source
            lines.append(f"{origin}: {key}: a secret written in the config is accepted only for a destination on "
                         f"this machine (the bundled simulator), not for {_shown(remote[0])} -- fix: remove it and put "
                         f"the secret in an environment variable named by {key}_env or a mode-600 file named by "
                         f"{key}_file")
    return lines


def read_secret(env_name: str | None, file_name: str | None, literal: str | None, *, what: str, source: str,
                environ: dict[str, str] | None = None) -> str:
    """Resolve a secret from the environment, a mode-600 file, or (simulator only) a literal.
    The value is registered with the log redaction, so it is masked in any text logged later."""
    from adapter.redact import register_secret

    value = _read_secret(env_name, file_name, literal, what=what, source=source, environ=environ)
    register_secret(value)
    return value


def _read_secret(env_name: str | None, file_name: str | None, literal: str | None, *, what: str, source: str,
                 environ: dict[str, str] | None = None) -> str:
    """The secret, never empty: a variable that is set but empty (or only whitespace), an empty
    file and an empty literal are refused like a missing one, so no caller ever holds ``""``."""
    environ = dict(os.environ) if environ is None else environ
    if env_name:
        value = environ.get(env_name)
        if value is not None and value.strip():
            return value
        if value is not None:
            raise ConfigError([f"{source}: {what}_env: environment variable {env_name} is set but empty -- fix: "
                               f"export {env_name}=<secret> (not empty), or unset it"
                               + (f" to use {what}_file" if file_name else "")])
        if not file_name and literal is None:
            raise ConfigError([f"{source}: {what}_env: environment variable {env_name} is not set -- fix: export {env_name}=<secret>"])
    if file_name:
        secret_path = Path(file_name)
        if not secret_path.exists():
            raise ConfigError([f"{source}: {what}_file: {file_name} does not exist -- fix: create it with the secret, mode 600"])
        mode = secret_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError([f"{source}: {what}_file: {file_name} is readable by others (mode {mode:o}) -- fix: chmod 600 {file_name}"])
        try:
            text = read_bounded_text(secret_path, KEY_FILE_MAX_BYTES, "secret file", file_name).strip()
        except InputLimitError as exc:
            raise ConfigError([f"{source}: {what}_file: {exc}"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError([f"{source}: {what}_file: {file_name} cannot be read ({reason}) -- fix: make it a "
                               "mode-600 text file holding the secret"]) from None
        if not text:
            raise ConfigError([f"{source}: {what}_file: {file_name} is empty -- fix: write the secret into "
                               f"{file_name} (mode 600)"])
        return text
    if literal is not None:
        if literal.strip():
            return literal
        raise ConfigError([f"{source}: {what}: is empty -- fix: remove it and set {what}_env or {what}_file"])
    raise ConfigError([f"{source}: {what}: no secret given -- fix: set {what}_env or {what}_file"])
