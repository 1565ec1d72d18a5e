"""The MLLP listener over real sockets: framing, many messages and connections, bad bytes."""

from __future__ import annotations

import socket
import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bridge.clients.mllp import MLLPClient, ack_code
from bridge.config.settings import Settings
from bridge.store.models import HL7Message, Order, Patient
from tests.conftest import hl7_fixture
from tests.hl7_harness import running_mllp


def msa(ack: bytes) -> list[str]:
    for seg in ack.decode("utf-8", errors="replace").split("\r"):
        if seg.startswith("MSA"):
            return seg.split("|")
    raise AssertionError(f"no MSA in {ack!r}")


def numbered(index: int, *, patient: str | None = None) -> bytes:
    raw = hl7_fixture("orm_o01_nw.hl7")
    raw = raw.replace(b"ORM0001", f"N{index:07d}".encode())
    raw = raw.replace(b"PLC1001", f"PLC{index:07d}".encode())
    raw = raw.replace(b"ACC1001", f"A{index:07d}".encode())
    if patient:
        raw = raw.replace(b"P10001^", patient.encode() + b"^")
    return raw


def test_many_messages_on_one_connection_in_order(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with running_mllp(settings, session_factory) as mllp, \
            MLLPClient("127.0.0.1", mllp.port) as client:
        for i in range(30):
            ack = client.send(numbered(i))
            assert msa(ack)[1:3] == ["AA", f"N{i:07d}"]
            # The message is committed before its ACK left.
            with session_factory() as s:
                assert s.execute(select(HL7Message.status).where(
                    HL7Message.control_id == f"N{i:07d}")).scalar_one() == "processed"
    with session_factory() as s:
        assert s.execute(select(func.count()).select_from(Order)).scalar_one() == 30


def test_many_connections_at_once(settings: Settings,
                                  session_factory: sessionmaker[Session]) -> None:
    errors: list[BaseException] = []

    def worker(conn: int, port: int) -> None:
        try:
            with MLLPClient("127.0.0.1", port) as client:
                for j in range(20):
                    index = conn * 100 + j
                    assert msa(client.send(numbered(index)))[1:3] == ["AA", f"N{index:07d}"]
        except BaseException as exc:
            errors.append(exc)

    with running_mllp(settings, session_factory) as mllp:
        threads = [threading.Thread(target=worker, args=(c, mllp.port)) for c in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    with session_factory() as s:
        assert s.execute(select(func.count()).select_from(Order)).scalar_one() == 160
        # Every message names the same patient: still one patient.
        assert s.execute(select(func.count()).select_from(Patient)).scalar_one() == 1


def test_message_of_several_megabytes(settings: Settings,
                                      session_factory: sessionmaker[Session]) -> None:
    note = "NTE|2||" + "Дуже довгий опис. " * 200_000  # ~6 MB in UTF-8
    raw = hl7_fixture("orm_o01_nw.hl7") + note.encode("utf-8") + b"\r"
    assert len(raw) > 5_000_000
    with running_mllp(settings, session_factory) as mllp, \
            MLLPClient("127.0.0.1", mllp.port) as client:
        assert msa(client.send(raw))[1] == "AA"
        assert msa(client.send(numbered(2)))[1] == "AA"
    with session_factory() as s:
        stored = s.execute(select(HL7Message.raw).where(
            HL7Message.control_id == "ORM0001")).scalar_one()
        assert stored == raw


def test_garbage_and_broken_frames_get_answers_and_the_connection_stays_usable(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with running_mllp(settings, session_factory) as mllp, \
            MLLPClient("127.0.0.1", mllp.port) as client:
        # A block without the start character: answered AR, nothing processed.
        client.send_raw(b"no start block here\x1c\r")
        assert msa(client.read())[1] == "AR"
        # Noise before a proper frame: the frame is still processed.
        client.send_raw(b"\r\n\x00noise\x0b" + numbered(1) + b"\x1c\r")
        assert msa(client.read())[1:3] == ["AA", "N0000001"]
        # Not HL7 at all inside a frame: AR, logged with its raw bytes.
        assert msa(client.send(b"\xff\xfe binary junk"))[1] == "AR"
        # Still usable.
        assert msa(client.send(numbered(2)))[1] == "AA"
    with session_factory() as s:
        raws = set(s.execute(select(HL7Message.raw)).scalars())
        assert b"\xff\xfe binary junk" in raws


def test_oversized_message_is_refused_once_and_the_next_one_works(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with running_mllp(settings, session_factory, max_message_bytes=64 * 1024) as mllp, \
            MLLPClient("127.0.0.1", mllp.port) as client:
        big = hl7_fixture("orm_o01_nw.hl7") + b"NTE|2||" + b"x" * 300_000 + b"\r"
        ack = client.send(big)
        assert msa(ack)[1] == "AR"
        assert b"larger than" in ack
        assert msa(client.send(numbered(3)))[1:3] == ["AA", "N0000003"]


def test_dropped_connection_mid_frame_does_not_hurt_the_listener(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with running_mllp(settings, session_factory) as mllp:
        with socket.create_connection(("127.0.0.1", mllp.port)) as sock:
            sock.sendall(b"\x0bMSH|^~\\&|MIS|H|BRIDGE|R|2026||ORM^O01|HALF|P|2.5\rPID|1||X")
        with MLLPClient("127.0.0.1", mllp.port) as client:
            assert msa(client.send(numbered(4)))[1] == "AA"
    with session_factory() as s:
        assert s.execute(select(func.count()).select_from(HL7Message).where(
            HL7Message.control_id == "HALF")).scalar_one() == 0


def test_enhanced_mode_accept_then_application_ack(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with running_mllp(settings, session_factory) as mllp, \
            MLLPClient("127.0.0.1", mllp.port) as client:
        replies = client.exchange(hl7_fixture("enhanced_orm_nw.hl7"))
        assert [ack_code(r) for r in replies] == ["CA", "AA"]
        assert all(msa(r)[2] == "ENH0001" for r in replies)
        # A duplicate gets both stored ACKs again.
        again = client.exchange(hl7_fixture("enhanced_orm_nw.hl7"))
        assert again == replies
        # Enhanced, but unacceptable: CR and no application ACK.
        bad = hl7_fixture("bad_unknown_type.hl7").replace(b"|P|2.5", b"|P|2.5|||AL|AL", 1)
        assert [ack_code(r) for r in client.exchange(bad)] == ["CR"]


def test_duplicate_over_the_wire_gets_the_original_ack(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with running_mllp(settings, session_factory) as mllp, \
            MLLPClient("127.0.0.1", mllp.port) as client:
        first = client.send(hl7_fixture("orm_o01_nw.hl7"))
        second = client.send(hl7_fixture("orm_o01_nw.hl7"))
        assert first == second


def test_cyrillic_8859_5_ack_is_in_the_message_charset(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    with running_mllp(settings, session_factory) as mllp, \
            MLLPClient("127.0.0.1", mllp.port) as client:
        ack = client.send(hl7_fixture("adt_a04_8859_5.hl7"))
        assert msa(ack)[1] == "AA"
        assert b"8859/5" in ack
    with session_factory() as s:
        assert s.execute(select(Patient.name)).scalar_one().startswith("Шевченко^Тарас")


def test_error_ack_names_the_field(settings: Settings,
                                   session_factory: sessionmaker[Session]) -> None:
    with running_mllp(settings, session_factory) as mllp, \
            MLLPClient("127.0.0.1", mllp.port) as client:
        ack = client.send(hl7_fixture("bad_unmapped_orc.hl7")).decode()
        assert "MSA|AE|BAD0002" in ack
        assert "ERR||ORC^1^1|103^" in ack


# ----------------------------------------------------------------------------- faults


def _quick_settings(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update=changes)


def test_idle_and_stalled_senders_are_closed_and_hold_up_nobody(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    """One sender connects and says nothing, one stalls inside a message; a third is served
    meanwhile; both silent ones are closed after ``mllp_idle_seconds``, nothing logged."""
    quick = _quick_settings(settings, mllp_idle_seconds=1.0)
    with running_mllp(quick, session_factory) as mllp:
        idle = socket.create_connection(("127.0.0.1", mllp.port))
        stalled = socket.create_connection(("127.0.0.1", mllp.port))
        stalled.sendall(b"\x0bMSH|^~\\&|STALL|X|BRIDGE|Y|20261208||ADT^A08|STALL1|P|2.5\rPID|")
        with MLLPClient("127.0.0.1", mllp.port) as client:
            assert ack_code(client.send(hl7_fixture("adt_a01_utf8.hl7"))) == "AA"
        for silent in (idle, stalled):
            silent.settimeout(10)
            assert silent.recv(1) == b""  # closed by the bridge, without an answer
            silent.close()
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(HL7Message).where(
            HL7Message.control_id == "STALL1")) == 0


def test_a_hundred_megabytes_without_a_frame_end_are_refused_once(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    """100 MB after a start block and no end: one AR (too large), memory bounded by the
    limit, and the same connection carries the next message."""
    with running_mllp(settings, session_factory, max_message_bytes=1 << 20) as mllp, \
            MLLPClient("127.0.0.1", mllp.port, timeout=60) as client:
        client.send_raw(b"\x0b")
        chunk = b"A" * (1 << 20)
        for _ in range(100):
            client.send_raw(chunk)
        client.send_raw(b"\x1c\r")
        (refusal,) = client.read_optional(5.0)
        assert ack_code(refusal) == "AR" and b"larger than" in refusal
        assert ack_code(client.send(hl7_fixture("adt_a01_utf8.hl7"))) == "AA"


def test_connections_beyond_the_limit_are_closed_and_the_rest_served(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    quick = _quick_settings(settings, mllp_max_connections=4)
    with running_mllp(quick, session_factory) as mllp:
        held = [MLLPClient("127.0.0.1", mllp.port) for _ in range(4)]
        try:
            assert ack_code(held[0].send(hl7_fixture("adt_a01_utf8.hl7"))) == "AA"
            extra = socket.create_connection(("127.0.0.1", mllp.port))
            extra.settimeout(10)
            assert extra.recv(1) == b""  # closed at once
            extra.close()
            assert all(ack_code(c.send(hl7_fixture("adt_a08_update.hl7"))) == "AA"
                       for c in held[1:])
        finally:
            for client in held:
                client.close()
