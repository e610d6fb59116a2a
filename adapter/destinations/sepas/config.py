"""The ``destinations.sepas`` config section.

Kept here until it is pasted into ``adapter/config.py`` (``DestinationsConfig.sepas``);
after that this module only re-exports it. Secrets follow the config convention:
``*_env`` names an environment variable, ``*_file`` a mode-600 file; the literal fields are
for the bundled simulator only.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from adapter.config import CircuitConfig, RetryConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class SepasConfig(_Section):
    enabled: bool = False
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
    retry: RetryConfig = RetryConfig()
    circuit: CircuitConfig = CircuitConfig()
    max_rps: float | None = Field(10.0, gt=0)
    max_burst: int | None = Field(None, ge=1)

    def pid(self, service: str) -> str | None:
        return self.pids.get(service) or self.pids.get("default")

    def location_for(self, facility_siam_id: str | None) -> str | None:
        return self.location_ids.get(facility_siam_id or "") or self.default_location_id
