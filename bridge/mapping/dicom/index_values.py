"""What the archive index keeps of a received object, read from its header. Pure: no I/O.

Values come back as Unicode text (the caller has applied the right codec, see
:mod:`bridge.mapping.dicom.charset`) trimmed of DICOM padding. A missing unique key is a
:class:`~bridge.errors.Rejected` naming the attribute, answered with a DIMSE failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.charset import convert_encodings, decode_bytes, default_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PN_DELIMS, TEXT_VR_DELIMS

from bridge.errors import Rejected


@dataclass(frozen=True, slots=True)
class IndexValues:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    accession: str
    study_date: str
    study_time: str
    study_id: str
    study_description: str
    referring_physician: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str


def read_index_values(header: Dataset, *, transfer_syntax_uid: str,
                      codec: str | None = None) -> IndexValues:
    """The index values of a header. The data set's SOP Instance and Class UIDs must agree
    with the file meta (filled from the C-STORE request). ``codec`` decodes undeclared 8-bit
    text (:func:`bridge.mapping.dicom.charset.undeclared_codec`)."""
    read = _RawReader(header, codec)
    meta = getattr(header, "file_meta", None)
    sop_instance = read.text(_SOP_INSTANCE)
    sop_class = read.text(_SOP_CLASS)
    for keyword, value, meta_keyword in (
            ("SOPInstanceUID", sop_instance, "MediaStorageSOPInstanceUID"),
            ("SOPClassUID", sop_class, "MediaStorageSOPClassUID")):
        announced = _meta_text(meta, meta_keyword)
        if value and announced and value != announced:
            raise Rejected(f"{keyword} differs from the one the request announced",
                           location=keyword)
    values = {
        "SOPInstanceUID": sop_instance,
        "SOPClassUID": sop_class,
        "StudyInstanceUID": read.text(0x0020000D),
        "SeriesInstanceUID": read.text(0x0020000E),
        # From the file meta, which a STOW-RS client writes itself.
        "TransferSyntaxUID": transfer_syntax_uid,
    }
    for keyword, value in values.items():
        if not value:
            raise Rejected(f"{keyword} is missing", location=keyword)
        if len(value) > 64:
            raise Rejected(f"{keyword} is longer than 64 characters", location=keyword)
    return IndexValues(
        sop_instance_uid=sop_instance,
        sop_class_uid=sop_class,
        study_instance_uid=values["StudyInstanceUID"],
        series_instance_uid=values["SeriesInstanceUID"],
        transfer_syntax_uid=transfer_syntax_uid,
        instance_number=_int(read.text(0x00200013)),
        patient_id=read.text(0x00100020)[:64],
        issuer=read.text(0x00100021)[:64],
        patient_name=read.text(0x00100010)[:320],
        birth_date=read.text(0x00100030)[:8],
        sex=read.text(0x00100040)[:1],
        accession=read.text(0x00080050)[:16],
        study_date=read.text(0x00080020)[:8],
        study_time=read.text(0x00080030)[:14],
        study_id=read.text(0x00200010)[:16],
        study_description=read.text(0x00081030)[:256],
        referring_physician=read.text(0x00080090)[:320],
        modality=read.text(0x00080060)[:16],
        series_number=_int(read.text(0x00200011)),
        series_description=read.text(0x0008103E)[:256],
        body_part=read.text(0x00180015)[:16],
    )


_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_SPECIFIC_CHARACTER_SET = 0x00080005


class _RawReader:
    """Values straight from pydicom's raw elements: converting every element through
    pydicom's value classes costs more than the rest of indexing an object."""

    def __init__(self, header: Dataset, codec: str | None) -> None:
        self.header = header
        declared = [term.strip() for term in self.text(_SPECIFIC_CHARACTER_SET).split("\\")]
        if any(declared):
            self.encodings = convert_encodings(declared if len(declared) > 1 else declared[0])
        else:
            self.encodings = [codec or default_encoding]

    def text(self, tag: int) -> str:
        element = self.header.get_item(tag, keep_deferred=True)
        if element is None:
            return ""
        value = element.value
        if value is None:
            return ""
        if isinstance(value, bytes):
            if tag == _SPECIFIC_CHARACTER_SET:
                value = value.decode("ascii", "replace")
            elif element.VR == "PN" or tag in _PN_TAGS:
                value = "=".join(decode_bytes(group, self.encodings, PN_DELIMS)
                                 for group in value.split(b"="))
            else:
                value = decode_bytes(value, self.encodings, TEXT_VR_DELIMS)
        elif isinstance(value, MultiValue):
            value = "\\".join(str(v) for v in value)
        return str(value).strip(" \x00")


#: Person names read above (implicit VR files carry no VR to tell).
_PN_TAGS = frozenset({0x00100010, 0x00080090})


def _meta_text(meta: Dataset | None, keyword: str) -> str:
    if meta is None:
        return ""
    return str(meta.get(keyword) or "").strip(" \x00")


def _int(text: str) -> int | None:
    try:
        return int(text.split("\\")[0])
    except ValueError:
        return None
