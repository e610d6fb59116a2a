"""Reply contract v1: what the adapter tells the HIS, one message per outcome it acts on.

Every reply names the HIS's own ids (``event_id`` and, where the event had them,
``prescription_id``, ``visit_id``, ``dispense_id``, ``order_id``, ``result_id``) and a stable
``reply_id``, which is also the AMQP message id (or the webhook's ``X-Reply-Id``): a repeat of a
reply (delivery is at least once) has the same ``reply_id`` and can be dropped. ``docs/replies.md``
shows one example of each type; ``adapter schema --replies`` writes the JSON Schema
(``docs/reply-schema.json``) from these models.

The models are the contract, checked when a reply is made (a reply that does not fit them is a bug,
caught in tests, never sent). No patient identifier is in any reply: the HIS has its own records.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal["1"] = "1"

FAMILIES = ("eligibility", "prescription", "dispense", "paraclinic", "sepas", "event")
"""What a reply is about: the HIS record kinds (``event``: an event whose type is not known)."""

DONE_TYPES = ("prescription.registered", "prescription.updated", "prescription.cancelled", "dispense.registered",
              "paraclinic.registered", "paraclinic.confirmed", "sepas.saved", "event.registered")
PAPER_TYPES = ("paper_fallback.issued", "paper_fallback.linked", "paper_fallback.paper_claim")
ELIGIBILITY_TYPE = "eligibility.result"
CONFLICT_TYPE = "event.conflict"
REJECTED_TYPES = tuple(f"{family}.rejected" for family in FAMILIES)
INVALID_TYPES = tuple(f"{family}.invalid" for family in FAMILIES)
DEAD_TYPES = tuple(f"{family}.dead" for family in FAMILIES)
REPLY_TYPES: tuple[str, ...] = (ELIGIBILITY_TYPE, *DONE_TYPES, *REJECTED_TYPES, *INVALID_TYPES, *DEAD_TYPES,
                                CONFLICT_TYPE, *PAPER_TYPES)
"""Every reply type, in the order docs/replies.md lists them."""

LEGACY_PAPER_TYPE = "adapter.paper_fallback"
"""What ``paper_fallback.issued`` was called before contract v1 (``replies.legacy_paper_type``)."""

DoneType = Literal["prescription.registered", "prescription.updated", "prescription.cancelled",
                   "dispense.registered", "paraclinic.registered", "paraclinic.confirmed", "sepas.saved",
                   "event.registered"]
RejectedType = Literal["eligibility.rejected", "prescription.rejected", "dispense.rejected", "paraclinic.rejected",
                       "sepas.rejected", "event.rejected"]
InvalidType = Literal["eligibility.invalid", "prescription.invalid", "dispense.invalid", "paraclinic.invalid",
                      "sepas.invalid", "event.invalid"]
DeadType = Literal["eligibility.dead", "prescription.dead", "dispense.dead", "paraclinic.dead", "sepas.dead",
                   "event.dead"]


class _Reply(BaseModel):
    """What every reply carries."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1"] = SCHEMA_VERSION
    reply_id: str = Field(description="stable id of this reply: a repeat has the same one (drop it)")
    type: str
    at: str = Field(description="when the outcome happened (ISO 8601, UTC)")
    event_id: str = Field(description="the HIS event this reply is about")
    event_type: str | None = Field(None, description="that event's type (null: the event could not be read)")
    facility_siam_id: str | None = None
    destination: str | None = Field(None, description="the insurer or gateway (tamin, tamin_pharmacy, sepas, ...)")
    prescription_id: str | None = None
    visit_id: str | None = None
    dispense_id: str | None = None
    order_id: str | None = None
    result_id: str | None = None


class EligibilityResult(_Reply):
    type: Literal["eligibility.result"]
    covered: bool = Field(description="the insurer says the patient is covered")
    reason: str | None = Field(None, description="the insurer's reason when not covered (its message as sent)")
    hid: str | None = Field(None, description="the visit's HID (shenase shebad) when the answer carried one")
    insurance_type: str | None = None


class Done(_Reply):
    """The insurer or gateway registered what the event asked (``event.registered``: an event kind
    with no reply of its own, e.g. one a destination plugin added)."""

    type: DoneType
    tracking_code: str | None = Field(None, description="the code the patient takes to the pharmacy or lab")
    head_id: str | None = Field(None, description="the insurer's id of the prescription (edits and deletes use it)")
    insurer_ids: dict[str, str] = Field(default_factory=dict, description="other ids the insurer gave")
    messages: list[str] = Field(default_factory=list, description="the insurer's warnings or notes, as sent")


class Rejected(_Reply):
    """The insurer refused it: a person fixes the record in the HIS and sends it again."""

    type: RejectedType
    insurer_code: str | None = Field(None, description="the insurer's error code")
    insurer_message: str | None = Field(None, description="the insurer's message as sent (Persian)")
    gloss: str | None = Field(None, description="an English gloss of the code, where it is known")
    detail: str = Field(description="the adapter's one-line account")


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the field, as a JSON path into the event (or the mapping key)")
    rule: str = Field(description="what was wrong, values masked")


class Invalid(_Reply):
    """Not sent: the event failed the contract, a mapping, or a rule, before any insurer saw it."""

    type: InvalidType
    stage: Literal["contract", "mapping", "coverage", "destination"] = Field(
        description="contract: the event itself; mapping: turning it into the insurer's payload; coverage: the "
                    "patient cannot be registered (e.g. unidentified); destination: the adapter refused to send it")
    problems: list[Problem]


class Dead(_Reply):
    """Given up after its retries: needs a person (the operator's replay sends it again)."""

    type: DeadType
    attempts: int
    last_error_class: str | None = None
    detail: str


class ConflictHeld(_Reply):
    """A different body came under an event id already stored: it is held, not applied, until an
    operator decides (``adapter replay --conflict``). The ids are the held body's. A correction
    the HIS means to send is a new event (its own ``event_id``, e.g. ``prescription.updated``)."""

    type: Literal["event.conflict"]
    version_id: int = Field(description="the held body's version number (adapter show, adapter replay --conflict)")
    detail: str


class PaperIssued(_Reply):
    """Print the paper prescription: the insurer is not answering (outage, or no answer in time).

    Carries every key the pre-v1 ``adapter.paper_fallback`` reply had, with the same meaning."""

    type: Literal["paper_fallback.issued", "adapter.paper_fallback"]
    fallback_no: str
    reason: str | None = None
    issued_at: str


class PaperLinked(_Reply):
    """The paper prescription was registered electronically later: its tracking code."""

    type: Literal["paper_fallback.linked"]
    fallback_no: str
    tracking_code: str | None = None
    head_id: str | None = None


class PaperClaim(_Reply):
    """The late electronic registration failed: the paper is the claim's evidence."""

    type: Literal["paper_fallback.paper_claim"]
    fallback_no: str
    reason: str | None = None


Reply = Annotated[Union[EligibilityResult, Done, Rejected, Invalid, Dead, ConflictHeld, PaperIssued, PaperLinked,
                        PaperClaim],
                  Field(discriminator="type")]


class ReplyEnvelope(BaseModel):
    reply: Reply


def validate_reply(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` checked against the contract, as JSON (raises pydantic's ValidationError)."""
    return ReplyEnvelope.model_validate({"reply": body}).reply.model_dump(mode="json")


def reply_json_schema() -> dict[str, Any]:
    """The JSON Schema of one reply (``adapter schema --replies``)."""
    schema = ReplyEnvelope.model_json_schema()
    reply = schema["properties"]["reply"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "HIS reply (adapter reply contract v1)",
            "description": "One message the adapter sends the HIS per outcome; see docs/replies.md.",
            "$defs": schema.get("$defs", {}), **reply}
