"""English glosses of insurers' error codes, for the HIS's screens beside the insurer's own Persian
message (which a reply always carries as sent). Only codes whose meaning is documented are glossed
(``../shared/research/tamin-api.md``; docs/replies.md lists them); an unknown code has no gloss rather
than a guessed one."""

from __future__ import annotations

_TAMIN = {
    "304": "already registered: a prescription with the same patient, doctor, date, type and items exists",
    "9900002": "the prescription could not be retrieved",
}
_BY_DESTINATION = {"tamin": _TAMIN, "tamin_pharmacy": _TAMIN, "tamin_paraclinic": _TAMIN}


def gloss(destination: str | None, code: str | None) -> str | None:
    if not code or not destination:
        return None
    return _BY_DESTINATION.get(destination, {}).get(code)
