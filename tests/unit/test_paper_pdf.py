"""Paper prescription PDF (seed 002 s.12): valid PDF, every mandatory item, Persian read right to left,
fallback number scannable.

Tools from outside Python (poppler-utils' ``pdftotext``/``pdftoppm``) and the QR decoder are
skipped when absent locally and fail the test under ``CI``, like the service fixtures.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest


def _need_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"python package for {name!r} missing (pyproject dependencies)")
        pytest.skip(f"{name} not installed")


def _need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing: install Debian poppler-utils")
        pytest.skip(f"{name} not installed (Debian poppler-utils)")
    return path


_need_module("reportlab")
_need_module("arabic_reshaper")
_need_module("bidi")

from adapter.fallback import fonts as paper_fonts  # noqa: E402
from adapter.fallback.paper import (  # noqa: E402
    FOOTER,
    IDENTITY_LABELS,
    TITLE,
    _Ink,
    load_item_names,
    render_paper_prescription,
)
from adapter.events.contract import IdentityKind  # noqa: E402
from adapter.samples.generate import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SERVICES_CSV = ROOT / "mappings" / "tamin" / "codes" / "services.csv"
TEHRAN = ZoneInfo("Asia/Tehran")
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=TEHRAN)  # 1405/08/29
NUMBER = "FB-1234567-00042"
HID = "HID-778899001"


def _events() -> list[dict[str, Any]]:
    out = []
    for line in generate(NOW, patients=3).lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # the sample set holds deliberately broken lines
    return out


@pytest.fixture()
def event() -> dict[str, Any]:
    """The first drug prescription of the sample set, with Persian names as a real HIS sends them."""
    created = next(e for e in _events()
                   if e.get("event_type") == "prescription.created" and e["payload"]["kind"] == "drug")
    payload = created["payload"]
    payload["patient"].update(first_name="علی", last_name="احمدی")
    payload["prescriber"].update(first_name="سارا", last_name="کریمی", specialty="پزشک عمومی")
    payload["items"][0]["note"] = "در صورت تب مصرف شود"
    return created


def _render(event: dict[str, Any], **kw: Any) -> bytes:
    kw.setdefault("issued_at", NOW)
    kw.setdefault("item_names", load_item_names(SERVICES_CSV))
    return render_paper_prescription(event, kw.pop("fallback_no", NUMBER), **kw)


def _pdf_path(tmp_path: Path, pdf: bytes, name: str = "paper.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(pdf)
    return path


def _logical_text(pdf_path: Path) -> str:
    """pdftotext output with presentation forms folded back (NFKC), bidi marks dropped, spaces collapsed."""
    raw = subprocess.run([_need_tool("pdftotext"), "-enc", "UTF-8", str(pdf_path), "-"], check=True,
                         capture_output=True, text=True).stdout
    text = unicodedata.normalize("NFKC", raw)
    text = re.sub("[\u200c\u200d\u200e\u200f\u202a-\u202e\u2066-\u2069]", "", text)
    return " ".join(text.split())


def _letters(text: str) -> str:
    """Letters and digits only, in order: extractors move spaces, colons and brackets at RTL/LTR seams."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


def _reads(expected: str, text: str) -> bool:
    """True when ``expected`` occurs in ``text`` in logical (typed) order, ignoring spacing and punctuation."""
    return _letters(expected) in _letters(text)


def _png(tmp_path: Path, pdf_path: Path, dpi: int = 150, page: int = 1) -> Path:
    prefix = tmp_path / f"page{page}"
    subprocess.run([_need_tool("pdftoppm"), "-r", str(dpi), "-f", str(page), "-l", str(page), "-png", "-singlefile",
                    str(pdf_path), str(prefix)], check=True)
    return prefix.with_suffix(".png")


# --------------------------------------------------------------------------- the PDF and its fields


def test_pdf_is_valid_a5_and_carries_every_code(event: dict[str, Any]) -> None:
    pypdf = _need_module("pypdf")
    pdf = _render(event, hid=HID, facility_name="بیمارستان نمونه")
    assert pdf.startswith(b"%PDF-")
    import io

    reader = pypdf.PdfReader(io.BytesIO(pdf), strict=True)
    assert len(reader.pages) == 1
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (420, 595)  # A5 portrait
    text = reader.pages[0].extract_text()
    payload = event["payload"]
    expected = [NUMBER, HID, event["facility_siam_id"], payload["prescriber"]["medical_council_no"],
                payload["patient"]["identity"]["value"], payload["patient"]["mobile"], payload["prescriber"]["mobile"],
                payload["prescription_id"], payload["visit_id"], payload["patient"]["birth_date"]]
    for item in payload["items"]:
        expected += [item["code"], str(item["quantity"]), item["dose"], item["instruction"]]
    for value in expected:
        assert value in text, value
    names = load_item_names(SERVICES_CSV)
    assert names[payload["items"][0]["code"]].split()[0] in text  # "Omeprazole 20 mg capsule" wraps at most


def test_prescribing_time_is_solar_hijri_tehran_to_the_second(event: dict[str, Any], tmp_path: Path) -> None:
    event["payload"]["prescribed_at"] = "2026-11-20T06:43:07+00:00"  # 10:13:07 in Tehran, 1405/08/29
    text = _logical_text(_pdf_path(tmp_path, _render(event)))
    # Read right to left: the date, then the time (extractors may put either first on the line).
    assert re.search(r"1405/08/29 10:13:07|10:13:07 1405/08/29", text), text
    assert re.search(r"1405/08/29 12:00:00|12:00:00 1405/08/29", text), text  # issued_at


def test_persian_reads_in_logical_order(event: dict[str, Any], tmp_path: Path) -> None:
    text = _logical_text(_pdf_path(tmp_path, _render(event)))
    assert TITLE in text  # the title line comes out exactly, spaces and dash included
    for phrase in ("علی احمدی", "سارا کریمی", "شماره نظام پزشکی", "شناسه سیام مرکز", "در صورت تب مصرف شود",
                   "مهر و امضای پزشک", FOOTER):  # the footer is wrapped over lines: each line in order
        assert _reads(phrase, text), phrase
    assert not _reads("احمدی علی", text)  # not in visual (reversed) word order
    assert not _reads("شماره نسخه کاغذی"[::-1], text)  # nor letter order


def test_missing_hid_is_a_dash(event: dict[str, Any], tmp_path: Path) -> None:
    text = _logical_text(_pdf_path(tmp_path, _render(event, hid=None)))
    assert HID not in text
    assert re.search(r"شناسه شباد[\s():]*—", text), text


@pytest.mark.parametrize("kind, value, label", [
    ("mother_national_code", "1234567891", "کد ملی مادر"),
    ("fida", "123456789012", "شناسه فیدا"),
    ("unidentified", "UNK-2026-0042", "شناسه یکتای بیمار ناشناس"),
    ("national_code", "0012345679", "کد ملی"),
])
def test_identity_kind_is_spelled_out(event: dict[str, Any], tmp_path: Path, kind: str, value: str,
                                      label: str) -> None:
    patient = event["payload"]["patient"]
    patient["identity"] = {"kind": kind, "value": value}
    patient.pop("birth_date")
    patient["age_years"] = 0 if kind == "mother_national_code" else 41
    text = _logical_text(_pdf_path(tmp_path, _render(event)))
    assert label in IDENTITY_LABELS[IdentityKind(kind)]
    assert _reads(f"{IDENTITY_LABELS[IdentityKind(kind)]}: {value}", text)
    assert _reads(f"سن: {patient['age_years']} سال", text)
    if kind == "mother_national_code":
        assert _reads("کد ملی مادر (نوزاد فاقد کد ملی)", text)


def test_visit_prescription_without_items(event: dict[str, Any], tmp_path: Path) -> None:
    event["payload"].update(kind="visit", items=[])
    text = _logical_text(_pdf_path(tmp_path, _render(event)))
    assert _reads("نسخه ویزیت — بدون قلم تجویزی", text)


def test_many_items_continue_on_numbered_pages(event: dict[str, Any], tmp_path: Path) -> None:
    pypdf = _need_module("pypdf")
    codes = [line.split(",")[0] for line in SERVICES_CSV.read_text(encoding="utf-8").splitlines()[1:8]]
    event["payload"]["items"] = [
        {"code": codes[i % len(codes)], "quantity": 100 + i, "dose": "TID", "instruction": "AFTER_MEAL",
         "note": "یادداشت طولانی برای آزمودن شکستن سطر در جدول اقلام نسخه " * (1 + i % 2)}
        for i in range(40)]
    path = _pdf_path(tmp_path, _render(event))
    import io

    reader = pypdf.PdfReader(io.BytesIO(path.read_bytes()))
    pages = len(reader.pages)
    assert pages >= 3
    texts = [p.extract_text() for p in reader.pages]
    assert all(NUMBER in t for t in texts)  # a loose page still names its paper
    joined = "\n".join(texts)
    assert all(str(100 + i) in joined for i in range(40))
    logical = _logical_text(path)
    persian = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
    total = str(pages).translate(persian)
    for page in range(1, pages + 1):
        assert _reads(f"صفحه {str(page).translate(persian)} از {total}", logical)
    assert _reads("ادامه نسخه کاغذی", logical)
    assert _letters("مهر و امضای پزشک") in _letters(texts[-1])  # signatures close the last page


# --------------------------------------------------------------------------- what a person sees


def test_page_image_is_not_blank_and_rtl(event: dict[str, Any], tmp_path: Path) -> None:
    image_mod = _need_module("PIL.Image")
    png = _png(tmp_path, _pdf_path(tmp_path, _render(event)))
    image = image_mod.open(png).convert("L")
    width, height = image.size
    dark = image.histogram()[:128]
    dark = sum(dark)
    assert dark > width * height * 0.02  # text, boxes, QR: far from blank
    # Right to left: the section headings start at the right edge, so the right half of the
    # band below the header box carries more ink than the left half.
    band = image.crop((0, int(height * 0.24), width, int(height * 0.29)))
    left = sum(band.crop((0, 0, width // 2, band.height)).histogram()[:128])
    right = sum(band.crop((width // 2, 0, width, band.height)).histogram()[:128])
    assert right > left


def test_qr_code_and_barcode_decode_to_the_fallback_number(event: dict[str, Any], tmp_path: Path) -> None:
    pdf_path = _pdf_path(tmp_path, _render(event))
    png = _png(tmp_path, pdf_path, dpi=200)
    decoded: list[tuple[str, str]] = []
    try:
        import zxingcpp
        from PIL import Image

        decoded = [(str(b.format), b.text) for b in zxingcpp.read_barcodes(Image.open(png))]
    except ImportError:
        zbarimg = shutil.which("zbarimg")
        if zbarimg:
            out = subprocess.run([zbarimg, "-q", str(png)], capture_output=True, text=True).stdout
            decoded = [tuple(line.split(":", 1)) for line in out.splitlines() if ":" in line]  # type: ignore[misc]
        elif os.environ.get("CI"):
            pytest.fail("no barcode decoder: install zxing-cpp (pip) or zbar-tools (Debian)")
        else:
            pytest.skip("no barcode decoder (zxing-cpp or zbarimg)")
    kinds = {kind.replace("-", "").replace(" ", "").lower() for kind, text in decoded if text == NUMBER}
    assert any("qr" in k for k in kinds), decoded
    assert any("128" in k for k in kinds), decoded


def test_shaping_joins_letters_and_mirrors_brackets() -> None:
    ink = _Ink(None, paper_fonts.find_fonts())
    visual = ink.visual("شناسه شباد (HID)", ink.fonts.regular)
    assert visual.startswith("(HID) ")  # RTL: the parenthesised Latin ends the line on the left, mirrored
    assert all(not ("\u0600" <= ch <= "\u06ff") for ch in visual)  # every letter became a joined form
    words = unicodedata.normalize("NFKC", visual).split()
    assert words[-1][::-1] == "شناسه"  # visual order: the first word is drawn rightmost
    # Persian digits and dates keep their left-to-right order inside Persian text.
    assert "1403/05/12" in ink.visual("تاریخ تولد: 1403/05/12", ink.fonts.regular)
    assert "۱۲" in ink.visual("بند ۱۲ ضوابط", ink.fonts.regular)


def test_same_input_same_bytes(event: dict[str, Any]) -> None:
    assert _render(event) == _render(event)  # the printed evidence can be re-made and compared


# --------------------------------------------------------------------------- refusals


def test_refuses_what_it_cannot_print(event: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="fallback_no"):
        _render(event, fallback_no="FB 12")
    with pytest.raises(ValueError, match="time zone"):
        _render(event, issued_at=dt.datetime(2026, 11, 20, 12, 0))
    cancelled = next(e for e in _events() if e.get("event_type") == "visit.admitted")
    with pytest.raises(ValueError):
        _render(cancelled)
    broken = json.loads(json.dumps(event))
    broken["payload"]["prescriber"].pop("medical_council_no")
    with pytest.raises(ValueError):
        _render(broken)


def test_persian_digits_in_fallback_number_become_ascii(event: dict[str, Any]) -> None:
    pypdf = _need_module("pypdf")
    import io

    pdf = _render(event, fallback_no="FB-۱۲۳۴")
    assert "FB-1234" in pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_missing_font_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(paper_fonts.FONT_ENV, raising=False)
    monkeypatch.setattr(paper_fonts, "_DIRS", (str(tmp_path),))
    with pytest.raises(paper_fonts.FontNotFound, match="fonts-noto-core"):
        paper_fonts._persian_files()
    monkeypatch.setenv(paper_fonts.FONT_ENV, str(tmp_path / "missing.ttf"))
    with pytest.raises(paper_fonts.FontNotFound, match="no such file"):
        paper_fonts._persian_files()
