"""HL7 v2 fuzzed through the live MLLP listener (parser, mapping, the database and the ACK),
on both databases: the fixtures mutated by hypothesis (bytes changed, removed and inserted,
the HL7 delimiters among them; segments repeated and dropped; messages cut short), each
framed message answered with an ACK on the same connection, nothing crashing. A fixed seed
and 1,500 messages in the suite; ``make fuzz`` sends 100,000 (``BRIDGE_FUZZ_MESSAGES``)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.mllp import MLLPClient
from bridge.config.settings import Settings
from tests.conftest import FIXTURES
from tests.hl7_harness import running_mllp

pytestmark = pytest.mark.integration
MESSAGES = int(os.environ.get("BRIDGE_FUZZ_MESSAGES", "1500"))
#: What HL7 gives meaning to, and bytes text rarely holds; never MLLP's own frame bytes
#: (a message holding 0x1C 0x0D is two frames by the protocol's definition).
SPECIAL = [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\x00", b"\xff", b"\xd0", b"MSH|",
           b"\r\r", b"\\X0D\\", b"\\E\\", b"\\"]
FIXTURE_MESSAGES = [p.read_bytes() for p in sorted((FIXTURES / "hl7").glob("*.hl7"))]


def _clean(data: bytes) -> bytes:
    return data.replace(b"\x0b", b"").replace(b"\x1c", b"")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(FIXTURE_MESSAGES)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["replace", "delete", "insert", "segment", "cut"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "replace" and raw:
            raw[at:at + 1] = draw(st.sampled_from(SPECIAL) | st.binary(min_size=1, max_size=3))
        elif kind == "delete":
            raw[at:at + draw(st.integers(1, 40))] = b""
        elif kind == "insert":
            raw[at:at] = draw(st.sampled_from(SPECIAL) | st.binary(max_size=12)
                              | st.text(max_size=8).map(str.encode))
        elif kind == "segment":
            segments = bytes(raw).split(b"\r")
            which = draw(st.integers(0, len(segments) - 1))
            if draw(st.booleans()):
                segments.insert(which, segments[which])  # repeated
            elif which > 0:
                del segments[which]  # dropped (never MSH: the header stays first)
            raw = bytearray(b"\r".join(segments))
        elif kind == "cut":
            raw = raw[:at]
    return _clean(bytes(raw))


def test_every_mutated_message_is_answered(settings: Settings,
                                           session_factory: sessionmaker[Session]) -> None:
    answered: list[bytes] = []
    with running_mllp(settings, session_factory) as mllp, \
            MLLPClient("127.0.0.1", mllp.port, timeout=30) as client:

        @given(message=mutated())
        @hypothesis_settings(max_examples=MESSAGES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def send(message: bytes) -> None:
            ack = client.send(message)  # a closed connection or a timeout fails here
            assert ack.startswith(b"MSH"), ack[:80]
            assert b"\rMSA|A" in ack or b"\rMSA|C" in ack, ack[:200]
            answered.append(ack)

        send()
        # The listener is alive and the pipeline sound after all of it: a clean message.
        good = client.send(FIXTURE_MESSAGES[0].replace(b"|P|", b"|P|", 1))
        assert b"MSA|A" in good
    assert len(answered) >= MESSAGES // 2  # hypothesis ran the examples asked for
