"""thrita VM messages: the mapped JSON tree -> the XML that goes into the secure envelope.

A mapping (``mappings/sepas/*.yaml``) produces the message as a JSON tree shaped like the
VO: ``{"Person": {...}, "MsgID": {...}, "Composition": {...}}``. This module writes it the
way the .NET ``XmlSerializer`` of the public clients does (research/sepas-ditas.md s.2-5,
BSDK ``XmlSamplePackets``), so the mapping author writes data, not XML:

* a dict with ``Coded_string`` is a DO_CODED_TEXT: attributes ``Value``, ``Terminology_id``,
  ``Coded_string`` (``<Gender Value="مرد" Terminology_id="thritaEHR.gender" Coded_string="1"/>``);
* a dict with ``ID`` is a DO_IDENTIFIER: attributes ``Issuer``, ``Assigner``, ``ID``, ``Type``;
  one whose ID the mapping left out (only Issuer/Assigner/Type remain) is left out;
* a dict with ``Magnitude`` is a DO_QUANTITY: ``Unit`` attribute, ``Magnitude`` child; a
  quantity whose Magnitude the mapping left out (only ``Unit`` remains) is left out;
* ``FirstName``, ``LastName``, ``NationalCode`` are attributes of their element (Person,
  providers), as in the samples;
* a string under a date field (``*Date``, ``DateDispense``...) is an ISO date or an ISO
  date-time with offset and becomes a Solar Hijri DO_DATE ``Year/Month/Day`` (the Tehran
  local date); under a time field (``*Time``) it becomes ``Hour/Minute/Second``; under
  ``IssueDateTime``/``DateTimeResult`` both;
* a list is a wrapper element holding one ``<ItemVO>`` per element (``BillServices`` ->
  ``ServiceDetailsVO``); the item names are in ``LIST_ITEMS``. An empty list is left out
  (XmlSerializer writes nothing for a null array);
* the key ``xsi:type`` names the concrete type of an abstract item, as XmlSerializer does
  (``<LabTestResultVO xsi:type="GeneralLaboratoryResultVO">``, the LabResult rows).

Keys keep the mapping's order; nothing is reordered, so the XML is deterministic and
golden-testable. ``parse_xml`` reads such XML back into a tree (the simulator uses it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import jdatetime

VM_NAMESPACE = "http://thrita.behdasht.gov.ir/VM/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSD = "http://www.w3.org/2001/XMLSchema"
TEHRAN = zoneinfo.ZoneInfo("Asia/Tehran")


@dataclass(frozen=True)
class MessageSpec:
    name: str  # our name, also the mapping's params.message
    vo: str  # root element and ContentType suffix
    save_op: str  # DITAS <Op> in .../gwSepasHospital/<Op>Secure
    insurance_list: bool = False  # Composition.Insurance is InsuranceVO[] (else one InsuranceVO)

    @property
    def content_type(self) -> str:
        return f"Thrita.DM.Message.{self.vo}"


MESSAGES: dict[str, MessageSpec] = {spec.name: spec for spec in (
    MessageSpec("PatientBill", "PatientBillMessageVO", "SavePatientBill", insurance_list=True),
    MessageSpec("MedicationPrescription", "MedicationPrescriptionsMessageVO", "SaveMedicationPrescription"),
    MessageSpec("DispensedPrescription", "DispensedPrescriptionsMessageVO", "SaveDispensedPrescription"),
    MessageSpec("LabResult", "LaboratoryResultMessageVO", "SaveLaboratoryResult", insurance_list=True),
    MessageSpec("LabPrescription", "LaboratoryPrescriptionsMessageVO", "SaveLaboratoryPrescription"),
    MessageSpec("ImagingPrescription", "ImagingPrescriptionsMessageVO", "SaveMedicalImagePrescription"),
)}

# wrapper element -> item element; (message, wrapper) wins over the wrapper alone
LIST_ITEMS: dict[str | tuple[str, str], str] = {
    "OtherCosts": "QuantitiesVO",
    "TotalOtherCosts": "QuantitiesVO",
    "InsuranceOtherCosts": "QuantitiesVO",
    "BillServices": "ServiceDetailsVO",
    "ServiceGroupRow": "ServiceGroupRowVO",
    "Insurance": "InsuranceVO",
    "Diagnosis": "DiagnosisVO",
    "RelativeCost": "RelativeCostVO",
    "OtherIdentifier": "DO_IDENTIFIER",
    "Costs": "CostDetailsVO",
    "MedicationDispensed": "MedicationDispensedVO",
    "Ingredient": "IngredientVO",
    "LabResult": "LabTestResultVO",
    "LaboratoryResultRow": "LaboratoryResultRowVO",
    "ReferenceRange": "ReferenceRangeVO",
    "AnatomicalLocation": "AnatomicalLocationVO",  # BSDK DataModel: AnatomicalLocationVO[]
    "ServiceDetail": "DO_CODEABLE_CONCEPT",  # BSDK DataModel: DO_CODEABLE_CONCEPT[]
    ("MedicationPrescription", "Orders"): "MedicationPrescriptionRowVO",
    ("LabPrescription", "Orders"): "ServicePrescriptionRowVO",
    ("ImagingPrescription", "Orders"): "ImagingPrescriptionRowVO",
    "Orders": "OrderVO",
}
_ITEM_NAMES = {v for v in LIST_ITEMS.values()}

XSI_TYPE = "xsi:type"
ATTRIBUTE_SCALARS = ("FirstName", "LastName", "NationalCode", XSI_TYPE)
CODED_ATTRS = ("Value", "Terminology_id", "Coded_string")
IDENTIFIER_ATTRS = ("Issuer", "Assigner", "ID", "Type")
DATETIME_FIELDS = frozenset({"IssueDateTime", "DateTimeResult"})
DATE_FIELDS_EXTRA = frozenset({"DateDispense", "DateofCollection"})
TIME_FIELDS_EXTRA = frozenset({"TimeDispense", "TimeofCollection"})

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class MessageProblem(ValueError):
    """The tree cannot be written as the VO (a date that is not a date, an unknown message)."""


def spec_for(message: str) -> MessageSpec:
    try:
        return MESSAGES[message]
    except KeyError:
        raise MessageProblem(f"unknown SEPAS message {message!r}: one of {', '.join(MESSAGES)}") from None


def is_date_field(name: str) -> bool:
    return name not in DATETIME_FIELDS and (name.endswith("Date") or name in DATE_FIELDS_EXTRA)


def is_time_field(name: str) -> bool:
    return name not in DATETIME_FIELDS and (name.endswith("Time") or name in TIME_FIELDS_EXTRA)


def _local(value: str, where: str) -> tuple[jdatetime.date, dt.time | None]:
    """ISO date -> (Jalali date, None); ISO date-time with offset -> Tehran local (Jalali date, time)."""
    if _ISO_DATE.match(value):
        try:
            return jdatetime.date.fromgregorian(date=dt.date.fromisoformat(value)), None
        except ValueError:
            raise MessageProblem(f"{where}: {value!r} is not a date") from None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise MessageProblem(f"{where}: expected an ISO date or date-time, got something else") from None
    if moment.tzinfo is None:
        raise MessageProblem(f"{where}: a date-time needs its UTC offset")
    local = moment.astimezone(TEHRAN)
    return jdatetime.date.fromgregorian(date=local.date()), local.time().replace(microsecond=0)


def _date_children(day: jdatetime.date) -> str:
    return f"<Year>{day.year}</Year><Month>{day.month}</Month><Day>{day.day}</Day>"


def _time_children(moment: dt.time) -> str:
    return f"<Hour>{moment.hour}</Hour><Minute>{moment.minute}</Minute><Second>{moment.second}</Second>"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _attrs(pairs: list[tuple[str, Any]]) -> str:
    return "".join(f" {name}={quoteattr(_scalar(value))}" for name, value in pairs if value is not None)


def _item_name(message: str, wrapper: str) -> str:
    return LIST_ITEMS.get((message, wrapper)) or LIST_ITEMS.get(wrapper) or f"{wrapper}VO"


def _is_identifier(value: dict[str, Any]) -> bool:
    """Only Issuer/Assigner/ID/Type keys, all plain text (a ward's coded ``Type`` is not one)."""
    return bool(value) and set(value) <= set(IDENTIFIER_ATTRS) and not any(
        isinstance(v, (dict, list)) for v in value.values())


class _Writer:
    def __init__(self, message: str):
        self.message = message

    def element(self, name: str, value: Any, where: str) -> str:
        if value is None:
            return ""
        if isinstance(value, list):
            if not value:
                return ""
            item = _item_name(self.message, name)
            inner = "".join(self.element(item, v, f"{where}[{i}]") for i, v in enumerate(value))
            return f"<{name}>{inner}</{name}>"
        if isinstance(value, dict):
            return self._dict(name, value, where)
        if isinstance(value, str) and name in DATETIME_FIELDS:
            day, moment = _local(value, where)
            return f"<{name}>{_date_children(day)}{_time_children(moment) if moment else ''}</{name}>"
        if isinstance(value, str) and is_date_field(name):
            return f"<{name}>{_date_children(_local(value, where)[0])}</{name}>"
        if isinstance(value, str) and is_time_field(name):
            moment = _local(value, where)[1]
            if moment is None:
                raise MessageProblem(f"{where}: a time field needs a date-time with offset")
            return f"<{name}>{_time_children(moment)}</{name}>"
        return f"<{name}>{escape(_scalar(value))}</{name}>"

    def _dict(self, name: str, value: dict[str, Any], where: str, extra: str = "") -> str:
        if "Coded_string" in value:
            return f"<{name}{extra}{_attrs([(k, value.get(k)) for k in CODED_ATTRS])} />"
        if _is_identifier(value):
            if "ID" not in value:
                return ""
            return f"<{name}{extra}{_attrs([(k, value.get(k)) for k in IDENTIFIER_ATTRS])} />"
        if set(value) == {"Unit"}:
            return ""
        if "Magnitude" in value:
            children = "".join(self.element(k, v, f"{where}.{k}") for k, v in value.items() if k != "Unit")
            return f"<{name}{extra}{_attrs([('Unit', value.get('Unit'))])}>{children}</{name}>"
        attrs = [(k, v) for k, v in value.items() if k in ATTRIBUTE_SCALARS and not isinstance(v, (dict, list))]
        children = "".join(self.element(k, v, f"{where}.{k}") for k, v in value.items()
                           if not (k in ATTRIBUTE_SCALARS and not isinstance(v, (dict, list))))
        return f"<{name}{extra}{_attrs(attrs)}>{children}</{name}>" if children else f"<{name}{extra}{_attrs(attrs)} />"

    def document(self, tree: dict[str, Any]) -> str:
        vo = spec_for(self.message).vo
        parts = []
        for part in ("Person", "MsgID", "Composition"):
            if part not in tree or not isinstance(tree[part], dict):
                raise MessageProblem(f"{part}: the message needs its {part} part")
            parts.append(self._dict(part, tree[part], part, extra=f' xmlns="{VM_NAMESPACE}"'))
        return (f'<?xml version="1.0" encoding="utf-8"?><{vo} xmlns:xsi="{XSI}" xmlns:xsd="{XSD}">'
                + "".join(parts) + f"</{vo}>")


def build_xml(message: str, tree: dict[str, Any]) -> bytes:
    """The VO as UTF-8 XML bytes; raises ``MessageProblem`` naming the field."""
    return _Writer(message).document(tree).encode("utf-8")


def document_hash(xml: bytes) -> str:
    """SHA-256 of the plaintext XML: the simulator's duplicate and lookup key."""
    return hashlib.sha256(xml).hexdigest()


# ----- reading (the simulator) ----------------------------------------------------------
def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attribute_name(qualified: str) -> str:
    return XSI_TYPE if qualified == f"{{{XSI}}}type" else _local_name(qualified)


def _read(element: ElementTree.Element) -> Any:
    children = list(element)
    if not children and not element.attrib:
        return (element.text or "").strip()
    names = [_local_name(c.tag) for c in children]
    if children and all(n in _ITEM_NAMES for n in names) and len(set(names)) == 1:
        return [_read(c) for c in children]
    node: dict[str, Any] = {_attribute_name(k): v for k, v in element.attrib.items()}
    for child, name in zip(children, names):
        node[name] = _read(child)
    return node


def parse_xml(xml: bytes) -> tuple[str, dict[str, Any]]:
    """(root VO name, tree). Lists come back as lists; dates as ``{Year, Month, Day}``."""
    root = ElementTree.fromstring(xml)
    tree = _read(root)
    return _local_name(root.tag), tree if isinstance(tree, dict) else {}


def iter_coded(tree: Any, path: str = "") -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every DO_CODED_TEXT in the tree: (path, field name, the coded dict)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            here = f"{path}.{key}" if path else key
            if isinstance(value, dict) and "Coded_string" in value:
                yield here, key, value
            else:
                yield from iter_coded(value, here)
    elif isinstance(tree, list):
        field = path.rsplit(".", 1)[-1]
        for index, value in enumerate(tree):
            here = f"{path}[{index}]"
            if isinstance(value, dict) and "Coded_string" in value:
                yield here, field, value
            else:
                yield from iter_coded(value, here)


def get_path(tree: Any, dotted: str) -> Any:
    """``Composition.Admission.AdmissionDate`` -> the value, or None."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
