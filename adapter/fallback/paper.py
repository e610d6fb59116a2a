"""The paper prescription (seed 002 s.12) as a PDF, in Persian, right to left.

When the insurer cannot be reached the patient leaves with paper; the insurer must accept it
as evidence in audit, so it carries every mandatory item of seed 002 s.7 that the HIS event
holds: patient identity (kind and value), name, birth date or age, sex, contact; prescriber
name, medical-council number, specialty, contact; facility SIAM id; date and time of
prescribing to the second (Solar Hijri, Tehran time); HID when known; the coded items and
their quantities. The fallback number is printed large, as a QR code and as a Code128
barcode, so a pharmacy can scan or type it back.

Codes and values taken from the event (national code, council number, SIAM id, dates,
quantities, the fallback number) are printed with ASCII digits so they can be typed back
exactly; Persian digits appear only in the fixed Persian wording.

ReportLab has no OpenType shaper, so Persian is shaped to presentation forms with
``arabic_reshaper`` and put in visual order with ``python-bidi`` before drawing; wrapping is
done on the logical text, line by line, so wrapped lines keep their reading order.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jdatetime
from arabic_reshaper import ArabicReshaper

try:  # python-bidi's own Python implementation applies rule L4 (mirroring "(" in RTL runs);
    from bidi.algorithm import get_display  # the Rust one behind ``bidi.get_display`` (0.5+) does not
except ImportError:  # pragma: no cover - a future python-bidi without it: text still reads, brackets flip
    from bidi import get_display
from pydantic import BaseModel, TypeAdapter
from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.code128 import Code128
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib.colors import Color, black, white
from reportlab.lib.pagesizes import A5
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from adapter.events.contract import (
    Event,
    IdentityKind,
    PrescriptionCreatedEvent,
    PrescriptionKind,
    PrescriptionUpdatedEvent,
    Sex,
)
from adapter.events.dates import to_jalali_slash
from adapter.events.digits import to_ascii_digits
from adapter.fallback.fonts import FontSet, find_fonts
from adapter.limits import TABLE_MAX_BYTES, check_rows, read_bounded_text

__all__ = ["TITLE", "FOOTER", "render_paper_prescription", "load_item_names", "to_persian_digits"]

TITLE = "نسخه کاغذی — قطع ارتباط با سامانه نسخه الکترونیک"
SUBTITLE = "بند ۱۲ ضوابط اجرایی طرح نسخه الکترونیک — فرایندهای جایگزین و غیرالکترونیک"
FOOTER = (
    "این نسخه کاغذی به استناد بند ۱۲ ضوابط اجرایی طرح نسخه الکترونیک در شرایط اضطراری "
    "(قطع ارتباط با سامانه بیمه‌گر) صادر شده و سند مثبته رسیدگی سازمان بیمه‌گر است؛ "
    "پس از برقراری ارتباط، این نسخه به صورت الکترونیک در سامانه ثبت خواهد شد."
)
NO_VALUE = "—"

IDENTITY_LABELS = {
    IdentityKind.national_code: "کد ملی",
    IdentityKind.fida: "شناسه فیدا (اتباع خارجی)",
    IdentityKind.mother_national_code: "کد ملی مادر (نوزاد فاقد کد ملی)",
    IdentityKind.unidentified: "شناسه یکتای بیمار ناشناس (بدون دلالت بر بیمه)",
}
SEX_LABELS = {Sex.male: "مرد", Sex.female: "زن", Sex.other: "سایر"}
KIND_LABELS = {
    PrescriptionKind.drug: "دارویی",
    PrescriptionKind.paraclinic: "پاراکلینیک",
    PrescriptionKind.visit: "ویزیت",
    PrescriptionKind.service: "خدمات",
}

_PAGE_W, _PAGE_H = A5
_MARGIN = 20.0
_LEFT, _RIGHT = _MARGIN, _PAGE_W - _MARGIN
_WIDTH = _RIGHT - _LEFT
_GREY = Color(0.88, 0.88, 0.88)
_DARK = Color(0.25, 0.25, 0.25)
_NUMBER_RE = re.compile(r"[\x21-\x7e]{1,40}")
_EVENT = TypeAdapter(Event)
_PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
_INVISIBLE = str.maketrans("", "", "\u200c\u200d\u200e\u200f")
_RESHAPER = ArabicReshaper()
_RESHAPER_NO_LIGATURES = ArabicReshaper(configuration={"support_ligatures": False})


def to_persian_digits(text: str) -> str:
    return text.translate(_PERSIAN_DIGITS)


def _tehran() -> dt.tzinfo:
    try:
        return ZoneInfo("Asia/Tehran")
    except ZoneInfoNotFoundError:  # no tz database: Iran has kept +03:30 all year since 2022
        return dt.timezone(dt.timedelta(hours=3, minutes=30))


def _jalali_time(moment: dt.datetime) -> str:
    local = moment.astimezone(_tehran())
    return jdatetime.datetime.fromgregorian(datetime=local).strftime("%Y/%m/%d %H:%M:%S")


def load_item_names(csv_path: str | Path) -> dict[str, str]:
    """HIS code -> description from a code table such as ``mappings/tamin/codes/services.csv``."""
    text = read_bounded_text(Path(csv_path), TABLE_MAX_BYTES, "code table", encoding="utf-8-sig")
    names: dict[str, str] = {}
    for count, row in enumerate(csv.DictReader(io.StringIO(text)), 1):
        check_rows(count, str(csv_path))
        if row.get("his_code"):
            names[row["his_code"]] = row.get("description") or ""
    return names


# --------------------------------------------------------------------------- text


class _Ink:
    """Draws logical (typed-order) text: shaped, bidi-reordered, split into Persian/Latin font runs."""

    def __init__(self, canvas: Canvas | None, fonts: FontSet):
        self.c = canvas
        self.fonts = fonts
        self._cmaps = {name: cast(TTFont, pdfmetrics.getFont(name)).face.charToGlyph  # fonts.py registers TrueType
                       for name in (fonts.regular, fonts.bold, fonts.latin_regular, fonts.latin_bold)}

    def visual(self, logical: str, persian: str, base_dir: str | None = None) -> str:
        """Shape and reorder one line; ``base_dir`` "R" forces a right-to-left line (else the first strong letter decides)."""
        text = " ".join(logical.split())
        cmap = self._cmaps[persian]
        shaped = _RESHAPER.reshape(text)
        if any(ord(ch) not in cmap for ch in shaped if not ch.isascii() and ord(ch) >= 0xFB50):
            shaped = _RESHAPER_NO_LIGATURES.reshape(text)
        return str(get_display(shaped.translate(_INVISIBLE), base_dir=base_dir))

    def runs(self, logical: str, bold: bool = False, base_dir: str | None = None) -> list[tuple[str, str]]:
        persian = self.fonts.bold if bold else self.fonts.regular
        latin = self.fonts.latin_bold if bold else self.fonts.latin_regular
        out: list[tuple[str, str]] = []
        for ch in self.visual(logical, persian, base_dir):
            if ch == " " and out:
                font = out[-1][1]
            elif ch.isascii() and ord(ch) in self._cmaps[latin]:
                font = latin
            elif ord(ch) in self._cmaps[persian] or ord(ch) not in self._cmaps[latin]:
                font = persian
            else:
                font = latin
            if out and out[-1][1] == font:
                out[-1] = (out[-1][0] + ch, font)
            else:
                out.append((ch, font))
        return out

    def width(self, logical: str, size: float, bold: bool = False) -> float:
        return sum(pdfmetrics.stringWidth(text, font, size) for text, font in self.runs(logical, bold))

    def draw(self, x: float, y: float, logical: str, size: float, *, bold: bool = False, align: str = "right",
             color: Color = black, base_dir: str | None = None) -> float:
        """Draw at baseline ``y``; ``x`` is the right edge, left edge or centre per ``align``. Returns the width."""
        assert self.c is not None
        runs = self.runs(logical, bold, base_dir)
        total = sum(pdfmetrics.stringWidth(text, font, size) for text, font in runs)
        start = {"right": x - total, "left": x, "center": x - total / 2}[align]
        self.c.setFillColor(color)
        for text, font in runs:
            self.c.setFont(font, size)
            self.c.drawString(start, y, text)
            start += pdfmetrics.stringWidth(text, font, size)
        self.c.setFillColor(black)
        return total

    def wrap(self, logical: str, width: float, size: float, bold: bool = False) -> list[str]:
        """Split logical text into logical lines that each fit ``width``; "\\n" starts a new line, long words are cut."""
        return [line for paragraph in logical.split("\n") for line in self._wrap(paragraph, width, size, bold)]

    def _wrap(self, logical: str, width: float, size: float, bold: bool) -> list[str]:
        lines: list[str] = []
        current = ""
        for word in logical.split():
            candidate = f"{current} {word}" if current else word
            if self.width(candidate, size, bold) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            while self.width(word, size, bold) > width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and self.width(word[:cut], size, bold) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        if current or not lines:
            lines.append(current)
        return lines


# --------------------------------------------------------------------------- content


@dataclass
class _Field:
    label: str
    value: str
    span: int = 1  # 1 = half the width, 2 = the whole width
    base_dir: str | None = None  # "R": read right to left even without a Persian letter (date then time)


@dataclass
class _Section:
    title: str
    rows: list[list[_Field]] = field(default_factory=list)


@dataclass
class _Sheet:
    number: str
    event_id: str
    issued: str
    sections: list[_Section]
    items: list[list[str]]
    kind: PrescriptionKind
    comments: str | None


def _parse(event: Mapping[str, Any] | BaseModel) -> PrescriptionCreatedEvent | PrescriptionUpdatedEvent:
    if isinstance(event, BaseModel):
        event = event.model_dump(mode="json")
    parsed = _EVENT.validate_python(dict(event))
    if not isinstance(parsed, (PrescriptionCreatedEvent, PrescriptionUpdatedEvent)):
        raise ValueError(f"a paper prescription is printed for prescription.created/updated, not {parsed.event_type}")
    return parsed


def _check_number(fallback_no: str) -> str:
    number = to_ascii_digits(str(fallback_no)).strip()
    if not _NUMBER_RE.fullmatch(number):
        raise ValueError("fallback_no must be 1 to 40 printable ASCII characters without spaces")
    return number


def _mobile(value: str | None) -> str:
    return value or NO_VALUE


def _sheet(event: PrescriptionCreatedEvent | PrescriptionUpdatedEvent, number: str, hid: str | None,
           facility_name: str | None, item_names: Mapping[str, str], issued_at: dt.datetime) -> _Sheet:
    rx = event.payload
    patient, doctor = rx.patient, rx.prescriber
    if patient.birth_date is not None:
        born = _Field("تاریخ تولد", to_jalali_slash(patient.birth_date))
        if patient.age_years is not None:
            born.value += f" ({patient.age_years} سال)"
    else:
        born = _Field("سن", f"{patient.age_years} سال")
    patient_section = _Section("مشخصات بیمار", [
        [_Field(IDENTITY_LABELS[patient.identity.kind], patient.identity.value, span=2)],
        [_Field("نام و نام خانوادگی", f"{patient.first_name} {patient.last_name}"),
         _Field("جنسیت", SEX_LABELS[patient.sex])],
        [born, _Field("تلفن همراه", _mobile(patient.mobile))],
    ])
    doctor_section = _Section("مشخصات پزشک تجویزکننده", [
        [_Field("نام و نام خانوادگی", f"{doctor.first_name} {doctor.last_name}"),
         _Field("شماره نظام پزشکی", doctor.medical_council_no)],
        [_Field("تخصص", doctor.specialty or NO_VALUE), _Field("تلفن همراه", _mobile(doctor.mobile))],
    ])
    rows = []
    if facility_name:
        rows.append([_Field("مرکز درمانی", facility_name, span=2)])
    rows += [
        [_Field("شناسه سیام مرکز", event.facility_siam_id), _Field("شناسه شباد (HID)", (hid or "").strip() or NO_VALUE)],
        [_Field("نوع نسخه", KIND_LABELS[rx.kind]), _Field("تاریخ و ساعت تجویز", _jalali_time(rx.prescribed_at), base_dir="R")],
        [_Field("شناسه نسخه در HIS", rx.prescription_id), _Field("شناسه پذیرش", rx.visit_id or NO_VALUE)],
    ]
    if rx.expires_on is not None:
        rows.append([_Field("تاریخ اعتبار نسخه", to_jalali_slash(rx.expires_on), span=2)])
    prescription_section = _Section("مرکز درمانی و نسخه", rows)
    items = []
    for index, item in enumerate(rx.items, start=1):
        notes = [item.note] if item.note else []
        if item.start_on is not None:
            notes.append(f"شروع: {to_jalali_slash(item.start_on)}")
        if item.diagnosis_icd10:
            notes.append(f"ICD10: {item.diagnosis_icd10}")
        items.append([to_persian_digits(str(index)), item.code, item_names.get(item.code) or NO_VALUE,
                      str(item.quantity), item.dose or NO_VALUE, item.instruction or NO_VALUE,
                      "\n".join(notes) or NO_VALUE])
    return _Sheet(number=number, event_id=event.event_id, issued=_jalali_time(issued_at),
                  sections=[patient_section, doctor_section, prescription_section], items=items, kind=rx.kind,
                  comments=rx.comments or None)


# --------------------------------------------------------------------------- layout

# Items table, right to left: (heading, width)
_COLUMNS = (("ردیف", 22.0), ("کد HIS", 60.0), ("نام قلم", 92.0), ("تعداد", 28.0), ("دوز", 30.0),
            ("دستور مصرف", 58.0), ("توضیحات", _WIDTH - 290.0))
_TABLE_SIZE = 7.5
_TABLE_LEAD = 9.5
_FIELD_SIZE = 8.5
_FIELD_LEAD = 11.0
_FOOTER_SIZE = 6.8
_FOOTER_LEAD = 8.6


class _Layout:
    def __init__(self, sheet: _Sheet, fonts: FontSet, total_pages: int | None, meta: dict[str, str]):
        self.buffer = io.BytesIO()
        self.c = Canvas(self.buffer, pagesize=A5, invariant=1, pageCompression=1)
        self.c.setTitle(meta["title"])
        self.c.setSubject(meta["subject"])
        self.c.setAuthor("his-insurer-adapter")
        self.c.setCreator("his-insurer-adapter paper fallback")
        self.ink = _Ink(self.c, fonts)
        self.sheet = sheet
        self.total = total_pages
        self.page = 1
        self.footer_lines = self.ink.wrap(FOOTER, _WIDTH, _FOOTER_SIZE)
        self.bottom = _MARGIN + 14 + len(self.footer_lines) * _FOOTER_LEAD + 8
        self.y = _PAGE_H - _MARGIN

    # pages ----------------------------------------------------------------
    def footer(self) -> None:
        ink, c = self.ink, self.c
        y = _MARGIN + 14 + (len(self.footer_lines) - 1) * _FOOTER_LEAD
        c.setStrokeColor(_DARK)
        c.setLineWidth(0.5)
        c.line(_LEFT, y + _FOOTER_LEAD + 1, _RIGHT, y + _FOOTER_LEAD + 1)
        for line in self.footer_lines:
            ink.draw(_RIGHT, y, line, _FOOTER_SIZE)
            y -= _FOOTER_LEAD
        total = to_persian_digits(str(self.total)) if self.total else "…"
        ink.draw(_RIGHT, _MARGIN + 2, f"شماره نسخه کاغذی: {self.sheet.number} — صفحه "
                 f"{to_persian_digits(str(self.page))} از {total}", _FOOTER_SIZE, bold=True)
        ink.draw(_LEFT, _MARGIN + 2, f"event {self.sheet.event_id}", _FOOTER_SIZE - 0.8, align="left", color=_DARK)

    def new_page(self) -> None:
        self.footer()
        self.c.showPage()
        self.page += 1
        self.y = _PAGE_H - _MARGIN
        self.ink.draw(_RIGHT, self.y - 10, f"ادامه {TITLE.split(' — ')[0]}", 10, bold=True)
        self.ink.draw(_LEFT, self.y - 10, self.sheet.number, 11, bold=True, align="left")
        self.y -= 20

    def ensure(self, height: float) -> bool:
        """Start a new page unless ``height`` fits; True when a page was started."""
        if self.y - height >= self.bottom:
            return False
        self.new_page()
        return True

    # blocks ---------------------------------------------------------------
    def header(self) -> None:
        ink, c, sheet = self.ink, self.c, self.sheet
        top = self.y
        ink.draw(_PAGE_W / 2, top - 13, TITLE, 12.5, bold=True, align="center")
        ink.draw(_PAGE_W / 2, top - 26, SUBTITLE, 7.5, align="center", color=_DARK)
        box_top, box_h = top - 33, 82.0
        c.setStrokeColor(black)
        c.setLineWidth(1.2)
        c.rect(_LEFT, box_top - box_h, _WIDTH, box_h)
        right = _RIGHT - 8
        ink.draw(right, box_top - 13, "شماره نسخه کاغذی", 9, bold=True)
        c.setFont(self.ink.fonts.latin_bold, 19)
        number_w = pdfmetrics.stringWidth(sheet.number, self.ink.fonts.latin_bold, 19)
        c.drawString(right - number_w, box_top - 33, sheet.number)
        barcode = _code128(sheet.number, max_width=_WIDTH - 110)
        barcode.drawOn(c, right - barcode.width, box_top - 63)
        ink.draw(right, box_top - 75, f"زمان صدور نسخه کاغذی (به وقت تهران): {sheet.issued}", 7.5)
        qr_size = box_h - 10
        renderPDF.draw(_qr_drawing(sheet.number, qr_size), c, _LEFT + 5, box_top - box_h + 5)
        self.y = box_top - box_h - 8

    def section(self, section: _Section) -> None:
        ink, c = self.ink, self.c
        half = _WIDTH / 2
        laid: list[tuple[float, list[tuple[_Field, float, list[str]]]]] = []
        for row in section.rows:
            cells = []
            right = _RIGHT - 5
            for fld in row:
                cell_w = (half if fld.span == 1 else _WIDTH) - 10
                label_w = ink.width(f"{fld.label}:", _FIELD_SIZE, bold=True) + 4
                lines = ink.wrap(fld.value, max(cell_w - label_w, 40), _FIELD_SIZE)
                cells.append((fld, right, lines))
                right -= half * fld.span
            laid.append((max(len(lines) for _, _, lines in cells) * _FIELD_LEAD + 4, cells))
        head_h = 14.0
        height = head_h + sum(h for h, _ in laid) + 3
        self.ensure(height)
        top = self.y
        c.setFillColor(_GREY)
        c.setStrokeColor(_DARK)
        c.setLineWidth(0.6)
        c.rect(_LEFT, top - head_h, _WIDTH, head_h, fill=1, stroke=1)
        ink.draw(_RIGHT - 5, top - head_h + 4, section.title, 9, bold=True)
        c.rect(_LEFT, top - height, _WIDTH, height - head_h, fill=0, stroke=1)
        y = top - head_h - _FIELD_LEAD
        for row_h, cells in laid:
            for fld, right, lines in cells:
                label_w = ink.draw(right, y, f"{fld.label}:", _FIELD_SIZE, bold=True) + 4
                for n, line in enumerate(lines):
                    ink.draw(right - label_w, y - n * _FIELD_LEAD, line, _FIELD_SIZE, base_dir=fld.base_dir)
            y -= row_h
        self.y = top - height - 6

    def table_head(self) -> None:
        ink, c = self.ink, self.c
        h = 14.0
        c.setFillColor(_GREY)
        c.setStrokeColor(_DARK)
        c.setLineWidth(0.6)
        c.rect(_LEFT, self.y - h, _WIDTH, h, fill=1, stroke=1)
        right = _RIGHT
        for title, width in _COLUMNS:
            ink.draw(right - width / 2, self.y - h + 4, title, _TABLE_SIZE, bold=True, align="center")
            right -= width
            c.line(right, self.y - h, right, self.y)
        self.y -= h

    def items(self) -> None:
        ink, c = self.ink, self.c
        title_h = 16.0
        if not self.sheet.items:
            self.ensure(title_h + 4)
            what = "نسخه ویزیت — بدون قلم تجویزی" if self.sheet.kind is PrescriptionKind.visit else "بدون قلم"
            ink.draw(_RIGHT - 5, self.y - 11, f"اقلام نسخه: {what}", 9, bold=True)
            self.y -= title_h + 4
            return
        rows = []
        for cells in self.sheet.items:
            lines = [ink.wrap(text, width - 5, _TABLE_SIZE) for text, (_, width) in zip(cells, _COLUMNS)]
            rows.append((max(len(x) for x in lines) * _TABLE_LEAD + 5, lines))
        self.ensure(title_h + 14 + rows[0][0])
        ink.draw(_RIGHT - 5, self.y - 11, f"اقلام تجویزشده ({to_persian_digits(str(len(rows)))} قلم)", 9, bold=True)
        self.y -= title_h
        self.table_head()
        for row_h, lines in rows:
            if self.ensure(row_h):
                self.table_head()
            c.setStrokeColor(_DARK)
            c.setLineWidth(0.4)
            c.rect(_LEFT, self.y - row_h, _WIDTH, row_h)
            right = _RIGHT
            for cell, (_, width) in zip(lines, _COLUMNS):
                for n, line in enumerate(cell):
                    ink.draw(right - width / 2, self.y - 10 - n * _TABLE_LEAD, line, _TABLE_SIZE, align="center")
                right -= width
                c.line(right, self.y - row_h, right, self.y)
            self.y -= row_h
        self.y -= 6

    def comments(self) -> None:
        if not self.sheet.comments:
            return
        label = "توضیحات پزشک:"
        lines = self.ink.wrap(f"{label} {self.sheet.comments}", _WIDTH - 10, _FIELD_SIZE)
        for line in lines:
            self.ensure(_FIELD_LEAD)
            self.ink.draw(_RIGHT - 5, self.y - 9, line, _FIELD_SIZE)
            self.y -= _FIELD_LEAD
        self.y -= 4

    def signatures(self) -> None:
        ink, c = self.ink, self.c
        h = 62.0
        self.ensure(h)
        gap = 8.0
        w = (_WIDTH - gap) / 2
        c.setStrokeColor(black)
        c.setLineWidth(0.8)
        c.setDash(3, 2)
        for left, title in ((_LEFT + w + gap, "مهر و امضای پزشک"), (_LEFT, "مهر مرکز درمانی")):
            c.rect(left, self.y - h, w, h)
            ink.draw(left + w - 6, self.y - 11, title, 8.5, bold=True)
        c.setDash()
        self.y -= h + 4

    def render(self) -> tuple[bytes, int]:
        self.header()
        for section in self.sheet.sections:
            self.section(section)
        self.items()
        self.comments()
        self.signatures()
        self.footer()
        self.c.showPage()
        self.c.save()
        return self.buffer.getvalue(), self.page


def _qr_drawing(value: str, size: float) -> Drawing:
    widget = QrCodeWidget(value, barLevel="M", barBorder=2)
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
    drawing.add(widget)
    return drawing


def _code128(value: str, max_width: float) -> Code128:
    bar_width = 1.0
    while True:
        barcode = Code128(value, barWidth=bar_width, barHeight=22, humanReadable=False, quiet=True)
        if barcode.width <= max_width or bar_width <= 0.5:
            return barcode
        bar_width -= 0.1


# --------------------------------------------------------------------------- entry point


def render_paper_prescription(
    event: Mapping[str, Any],
    fallback_no: str,
    *,
    hid: str | None = None,
    facility_name: str | None = None,
    item_names: Mapping[str, str] | None = None,
    issued_at: dt.datetime | None = None,
) -> bytes:
    """Render the paper prescription for a ``prescription.created`` (or ``.updated``) event as an A5 PDF.

    ``event`` is the whole HIS event (envelope and payload), validated against contract v1
    (``ValueError`` if it does not pass). ``fallback_no`` is the paper's number, printed large
    and as QR code and Code128 (Persian digits are turned to ASCII; 1-40 printable ASCII
    characters). ``hid`` is the insurer's visit id when one was obtained before the outage,
    printed as "—" otherwise. ``item_names`` maps HIS item codes to printable names (see
    ``load_item_names``). ``issued_at`` (aware; default now) is printed in Tehran time.
    Raises ``adapter.fallback.fonts.FontNotFound`` when no Persian font is installed.
    """
    parsed = _parse(event)
    number = _check_number(fallback_no)
    if issued_at is None:
        issued_at = dt.datetime.now(dt.timezone.utc)
    elif issued_at.tzinfo is None:
        raise ValueError("issued_at needs a time zone (e.g. +03:30)")
    fonts = find_fonts()
    sheet = _sheet(parsed, number, hid, facility_name, item_names or {}, issued_at)
    meta = {"title": f"{TITLE} {number}", "subject": f"paper prescription {number} for event {parsed.event_id}"}
    _, pages = _Layout(sheet, fonts, None, meta).render()
    pdf, _ = _Layout(sheet, fonts, pages, meta).render()
    return pdf
