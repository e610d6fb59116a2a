"""Persian and Arabic-Indic digits to ASCII.

HIS front ends often let Persian digits through; insurers expect ASCII digits.
"""

_PERSIAN = "۰۱۲۳۴۵۶۷۸۹"
_ARABIC = "٠١٢٣٤٥٦٧٨٩"
_TABLE = str.maketrans({**{p: str(i) for i, p in enumerate(_PERSIAN)},
                        **{a: str(i) for i, a in enumerate(_ARABIC)}})


def to_ascii_digits(text: str) -> str:
    """Return ``text`` with every Persian or Arabic-Indic digit replaced by its ASCII digit."""
    return text.translate(_TABLE)
