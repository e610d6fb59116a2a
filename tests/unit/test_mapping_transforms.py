"""Each transform of the registry: what it returns, and that its errors never show the value."""

from __future__ import annotations

import datetime as dt

import pytest

from adapter.mapping import TRANSFORMS, TransformError, transform


def run(name: str, value: object) -> object:
    return TRANSFORMS[name](value)


def test_registry_names() -> None:
    assert {"jalali_date8", "ascii_digits", "str", "int", "upper", "mobile_ir", "national_code",
            "patient_id_for_tamin"} <= set(TRANSFORMS)


@pytest.mark.parametrize("value, expected", [
    ("2026-11-20", "14050829"),
    ("2025-03-21", "14040101"),  # Nowruz
    ("1403/05/12", "14030512"),  # already Jalali
    ("14030512", "14030512"),
    ("۲۰۲۶-۱۱-۲۰", "14050829"),  # Persian digits
    ("2026-11-20T09:10:00+03:30", "14050829"),
    ("2026-11-20T20:40:00Z", "14050830"),  # 00:10 on the next day in Tehran
    ("2026-11-20T20:29:00+00:00", "14050829"),  # 23:59 in Tehran
    (dt.date(2026, 11, 20), "14050829"),
])
def test_jalali_date8(value: object, expected: str) -> None:
    assert run("jalali_date8", value) == expected


@pytest.mark.parametrize("value", ["2026-02-30", "20-11-2026", "2026-11-20T09:10:00", "nonsense", 5, None])
def test_jalali_date8_refuses(value: object) -> None:
    with pytest.raises(TransformError):
        run("jalali_date8", value)


def test_ascii_digits_str_int_upper() -> None:
    assert run("ascii_digits", "۱۲۳٤٥") == "12345"
    assert run("str", 20) == "20"
    assert run("str", True) == "true"
    assert run("int", "۰۰۱۲") == 12
    assert run("int", 7) == 7
    assert run("upper", "tid") == "TID"
    for bad in ["1.5", "abc", True, None]:
        with pytest.raises(TransformError):
            run("int", bad)
    with pytest.raises(TransformError):
        run("str", {"a": 1})


@pytest.mark.parametrize("value", ["09121234567", "+989121234567", "00989121234567", "9121234567",
                                   "989121234567", "0912 123 4567", "۰۹۱۲۱۲۳۴۵۶۷"])
def test_mobile_ir(value: str) -> None:
    assert run("mobile_ir", value) == "09121234567"


@pytest.mark.parametrize("value", ["0212345678", "0912123456", "+4915112345678", ""])
def test_mobile_ir_refuses_without_showing_the_value(value: str) -> None:
    with pytest.raises(TransformError) as caught:
        run("mobile_ir", value)
    assert value == "" or value not in str(caught.value)


def test_national_code() -> None:
    assert run("national_code", "۰۰۸۷۶۵۴۳۲۶") == "0087654326"
    with pytest.raises(TransformError) as caught:
        run("national_code", "0087654327")
    assert "check digit" in str(caught.value) and "0087654327" not in str(caught.value)


@pytest.mark.parametrize("identity, expected", [
    ({"kind": "national_code", "value": "0087654326"}, "0087654326"),
    ({"kind": "mother_national_code", "value": "1234567891"}, "1234567891"),
    ({"kind": "fida", "value": "123456789012"}, "FDA123456789012"),
    ({"kind": "fida", "value": "۱۲۳۴۵۶۷۸۹۰۱۲"}, "FDA123456789012"),
    ({"kind": "unidentified", "value": "ER-UNK-0042"}, "UNKNOWN"),
])
def test_patient_id_for_tamin(identity: dict, expected: str) -> None:
    assert run("patient_id_for_tamin", identity) == expected


def test_patient_id_for_tamin_bare_fida_sends_the_fida_id_as_it_is() -> None:
    assert run("patient_id_for_tamin_bare_fida", {"kind": "fida", "value": "123456789012"}) == "123456789012"
    assert run("patient_id_for_tamin_bare_fida", {"kind": "national_code", "value": "0087654326"}) == "0087654326"


@pytest.mark.parametrize("identity", [{"kind": "national_code", "value": "0087654327"}, {"kind": "passport", "value": "X1"},
                                      "0087654326", {"kind": "fida"}, {"kind": "fida", "value": "12-34"}])
def test_patient_id_for_tamin_refuses(identity: object) -> None:
    with pytest.raises(TransformError) as caught:
        run("patient_id_for_tamin", identity)
    assert "0087654327" not in str(caught.value)


def test_registry_is_extensible() -> None:
    @transform("test_reverse")
    def reverse(value: object) -> str:
        return str(value)[::-1]

    try:
        assert run("test_reverse", "abc") == "cba"
        with pytest.raises(ValueError):
            transform("test_reverse")(reverse)
    finally:
        del TRANSFORMS["test_reverse"]
