"""HL7 v2 acknowledgements: original mode (AA/AE/AR) and enhanced mode (CA/CE/CR). Pure."""

from __future__ import annotations

from typing import NamedTuple

from bridge.errors import BridgeError
from bridge.mapping.hl7.message import HL7Message, compile_path, compile_reader, parse_path

ACCEPT_CODES = {"AA": "CA", "AE": "CE", "AR": "CR"}
SEVERITY_ERROR = "E"
#: MSH-0 (the segment name) to MSH-18 (character set), the last field an ACK copies.
_MSH_FIELDS = 19
#: The MSH values an ACK reads unescaped (read together: every message is answered).
_MSH_VALUES = compile_reader({name: (compile_path(path),) for name, path in (
    ("trigger", "MSH-9.2"), ("version", "MSH-12.1"), ("accept_ack_type", "MSH-15"),
    ("application_ack_type", "MSH-16"))})
HL7_0357_TEXT = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


class AckContext(NamedTuple):
    """What an ACK copies from the message it answers (raw, still escaped).

    A named tuple, not a frozen dataclass: one is made for every message received, and
    a tuple is built at a third of the cost."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    charset_field: str = ""
    accept_ack_type: str = ""
    application_ack_type: str = ""

    @classmethod
    def of(cls, msg: HL7Message) -> AckContext:
        # Every message is answered: MSH's fields are read from its list directly, padded
        # to MSH-18 so that a short MSH reads as empty fields (as raw_field would).
        found = msg.all("MSH")
        msh = found[0] if found else []
        if len(msh) < _MSH_FIELDS:
            msh = msh + [""] * (_MSH_FIELDS - len(msh))
        said = msg.read(_MSH_VALUES)
        # In the order of the fields above: a class called with keywords builds a dict first.
        return cls(
            msh[3],  # sending_application
            msh[4],  # sending_facility
            msh[5],  # receiving_application
            msh[6],  # receiving_facility
            said["trigger"] or "",
            msh[10],  # control_id
            msh[11] or "P",  # processing_id
            said["version"] or "2.5",
            msh[18],  # charset_field
            (said["accept_ack_type"] or "").upper(),
            (said["application_ack_type"] or "").upper(),
        )

    @property
    def enhanced(self) -> bool:
        return bool(self.accept_ack_type or self.application_ack_type)


def wants_ack(ack_type: str, code: str) -> bool:
    """HL7 table 0155: AL always, NE never, ER only on error, SU only on success."""
    if ack_type in ("", "AL"):
        return True
    if ack_type == "NE":
        return False
    success = code in ("AA", "CA")
    return success if ack_type == "SU" else not success


def build_ack(ctx: AckContext, code: str, *, control_id: str, timestamp: str,
              error: BridgeError | None = None) -> str:
    """The ACK message text (segments joined by CR). ``code`` is AA/AE/AR or CA/CE/CR."""
    msh = "|".join([
        "MSH", "^~\\&", ctx.receiving_application, ctx.receiving_facility,
        ctx.sending_application, ctx.sending_facility, timestamp, "",
        f"ACK^{ctx.trigger}^ACK" if ctx.trigger else "ACK", control_id, ctx.processing_id,
        ctx.version, "", "", "", "", "", ctx.charset_field,
    ]).rstrip("|")
    text = escape(error.message) if error else ""
    segments = [msh, f"MSA|{code}|{ctx.control_id}" + (f"|{text[:80]}" if text else "")]
    if error is not None:
        segments.append(err_segment(error, ctx.version))
    return "\r".join(segments) + "\r"


def err_segment(error: BridgeError, version: str) -> str:
    """ERR naming the failing field: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 text.

    Senders on v2.3/2.4 read ERR-1 (ELD) instead, so it is filled for them too.
    """
    code = error.hl7_code
    code_cwe = f"{code}^{HL7_0357_TEXT.get(code, '')}^HL70357"
    location = erl(error.location)
    fields = ["ERR", "", location, code_cwe, SEVERITY_ERROR, "", "", "", escape(error.message)]
    if version.startswith(("2.3", "2.4")):
        segment = location.split("^")
        eld = "^".join([*segment[:3], f"{code}&{HL7_0357_TEXT.get(code, '')}&HL70357"])
        fields[1] = eld
    return "|".join(fields)


def erl(location: str | None) -> str:
    """``PID-3.1`` → ERL ``PID^1^3^1^1``; ``OBR`` → ``OBR^1``."""
    if not location:
        return ""
    if "-" not in location:
        return f"{location}^1"
    segment, numbers = parse_path(location)
    parts = [segment, "1", str(numbers[0])]
    if len(numbers) > 1:
        parts += ["1", *(str(n) for n in numbers[1:])]
    return "^".join(parts)


def escape(text: str) -> str:
    out = text.replace("\\", "\\E\\")
    for char, seq in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(char, seq)
    return out.replace("\r", " ").replace("\n", " ")
