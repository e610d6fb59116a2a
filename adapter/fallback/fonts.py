"""Find a Persian-capable TrueType font (plus a Latin one for codes) and register it with ReportLab.

ReportLab draws glyphs one by one without an OpenType shaper, so Persian is shaped
beforehand into Arabic *presentation forms* (``arabic_reshaper``). A usable font must
therefore map every presentation form of the Persian alphabet and the Persian digits;
each candidate is checked for that, not trusted by name.

Search order (first complete one wins):

1. ``$ADAPTER_PAPER_FONT``: path of a regular-weight TTF; a bold face is looked for beside
   it (``…-Bold.ttf``), else the regular one is used for bold too.
2. Vazirmatn (Debian ``fonts-vazirmatn`` from trixie on, or copied to a fonts folder).
3. Noto Sans Arabic, then Noto Naskh Arabic (Debian ``fonts-noto-core``) — the supported choice.
4. Nazli (Debian ``fonts-farsiweb``).
5. DejaVu Sans (Debian ``fonts-dejavu-core``): complete but plain; last resort.

Codes, dates and other ASCII runs are drawn with a Latin face (Noto Sans, else DejaVu
Sans, else the Persian font itself), so they stay crisp and are extracted as typed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import arabic_reshaper
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont

FONT_ENV = "ADAPTER_PAPER_FONT"
INSTALL_HINT = (
    "no Persian-capable TrueType font found for the paper prescription: "
    "install the Debian package 'fonts-noto-core' (apt-get install fonts-noto-core), "
    f"or set {FONT_ENV} to the path of a TTF such as Vazirmatn-Regular.ttf"
)

_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts/opentype", "/usr/local/share/fonts",
         str(Path.home() / ".local/share/fonts"), str(Path.home() / ".fonts"))

# (family, debian package, sub-folders tried under each of _DIRS, regular file, bold file)
_PERSIAN = (
    ("Vazirmatn", "fonts-vazirmatn", ("vazirmatn", "vazir", ""), "Vazirmatn-Regular.ttf", "Vazirmatn-Bold.ttf"),
    ("Noto Sans Arabic", "fonts-noto-core", ("noto",), "NotoSansArabic-Regular.ttf", "NotoSansArabic-Bold.ttf"),
    ("Noto Naskh Arabic", "fonts-noto-core", ("noto",), "NotoNaskhArabic-Regular.ttf", "NotoNaskhArabic-Bold.ttf"),
    ("Nazli", "fonts-farsiweb", ("farsiweb",), "nazli.ttf", "nazlib.ttf"),
    ("DejaVu Sans", "fonts-dejavu-core", ("dejavu",), "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
)
_LATIN = (
    (("noto",), "NotoSans-Regular.ttf", "NotoSans-Bold.ttf"),
    (("dejavu",), "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
)

_PERSIAN_LETTERS = "ابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهیآئ"
_PERSIAN_DIGITS = "۰۱۲۳۴۵۶۷۸۹"


class FontNotFound(RuntimeError):
    """No usable Persian font; the message names the package to install."""


@dataclass(frozen=True)
class FontSet:
    """ReportLab font names (registered) and the files behind them."""

    family: str
    regular: str  # registered name of the Persian regular face
    bold: str
    latin_regular: str
    latin_bold: str
    files: tuple[str, ...]


@functools.cache
def _required_chars() -> frozenset[str]:
    """Every presentation form a Persian text can need (isolated, initial, medial, final)."""
    words = " ".join(a + b + a for a in _PERSIAN_LETTERS for b in _PERSIAN_LETTERS)
    shaped = arabic_reshaper.reshape(words + " لا " + _PERSIAN_DIGITS)
    return frozenset(shaped.replace(" ", ""))


def _covers_persian(path: Path) -> bool:
    try:
        cmap = TTFont("_probe", str(path)).face.charToGlyph
    except (TTFError, OSError, ValueError):
        return False
    return all(ord(ch) in cmap for ch in _required_chars())


def _find(subdirs: tuple[str, ...], name: str) -> Path | None:
    for base in _DIRS:
        for sub in subdirs:
            path = Path(base, sub, name) if sub else Path(base, name)
            if path.is_file():
                return path
    return None


def _persian_files() -> tuple[str, Path, Path]:
    override = os.environ.get(FONT_ENV)
    if override:
        regular = Path(override)
        if not regular.is_file():
            raise FontNotFound(f"{FONT_ENV}={override}: no such file")
        if not _covers_persian(regular):
            raise FontNotFound(f"{FONT_ENV}={override}: the font lacks Persian presentation forms")
        bold = regular.with_name(regular.name.replace("Regular", "Bold"))
        return regular.stem, regular, bold if bold.is_file() and bold != regular else regular
    for family, _package, subdirs, regular_name, bold_name in _PERSIAN:
        regular_path = _find(subdirs, regular_name)
        if regular_path is None or not _covers_persian(regular_path):
            continue
        bold_path = _find(subdirs, bold_name)
        if bold_path is None or not _covers_persian(bold_path):
            bold_path = regular_path
        return family, regular_path, bold_path
    raise FontNotFound(INSTALL_HINT)


def _register(name: str, path: Path) -> str:
    if name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(name, str(path)))
    return name


@functools.lru_cache(maxsize=1)
def find_fonts() -> FontSet:
    """Find, check and register the fonts once per process; raise ``FontNotFound`` if none fits."""
    family, regular, bold = _persian_files()
    latin_regular, latin_bold = regular, bold
    for subdirs, regular_name, bold_name in _LATIN:
        found = _find(subdirs, regular_name)
        if found is not None:
            latin_regular = found
            latin_bold = _find(subdirs, bold_name) or found
            break
    tag = family.replace(" ", "")
    return FontSet(
        family=family,
        regular=_register(f"PaperFa-{tag}", regular),
        bold=_register(f"PaperFa-{tag}-Bold", bold),
        latin_regular=_register(f"PaperLatin-{latin_regular.stem}", latin_regular),
        latin_bold=_register(f"PaperLatin-{latin_bold.stem}", latin_bold),
        files=tuple(str(p) for p in (regular, bold, latin_regular, latin_bold)),
    )
