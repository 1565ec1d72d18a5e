"""``kill -9`` of ``bridge serve`` in the middle of an HL7 burst, several times, then a
restart, on both databases: every message whose ACK came back is in the log and applied
exactly once; the senders resend what had no ACK; a message resent after its ACK is answered
with the same ACK and not applied again.

8 MLLP connections send ORM^O01 new orders, each with its own control ID, placer number and
accession. The kills come at random moments (the seed is in the failure message; set
``BRIDGE_CRASH_SEED`` to replay one). CI sends 2,000 messages with 3 kills; ``make crash``
sends 10,000 with 5 (``BRIDGE_CRASH_MESSAGES``, ``BRIDGE_CRASH_KILLS``).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bridge.clients.mllp import MLLPClient
from bridge.store.db import make_engine, make_session_factory
from bridge.store.models import HL7Message, Order
from tests.conftest import hl7_fixture
from tests.process_harness import bridge_process, kill_at_random_moments

pytestmark = pytest.mark.integration
SENDERS = 8
MESSAGES = int(os.environ.get("BRIDGE_CRASH_MESSAGES", "2000"))
KILLS = int(os.environ.get("BRIDGE_CRASH_KILLS", "3"))
DEADLINE = 300.0


def order_message(number: int) -> bytes:
    """The fixture's new order with its own control ID, placer, accession, step and UID."""
    raw = hl7_fixture("orm_o01_nw.hl7")
    for old, new in ((b"ORM0001", f"CR{number:07d}"), (b"PLC1001", f"PLC{number:07d}"),
                     (b"ACC1001", f"AC{number:07d}"), (b"SPS1001", f"SP{number:07d}"),
                     (b"RP1001", f"RP{number:07d}"), (b"P10001^", f"CP{number:07d}^"),
                     (b"1137.1.1001", f"1137.1.{900000 + number}")):
        raw = raw.replace(old, new.encode())
    return raw


def msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2): the acknowledgment code and the control ID it answers."""
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA|"):
            fields = segment.decode().split("|")
            return fields[1], fields[2]
    raise AssertionError(f"no MSA in {ack!r}")


@dataclass
class Sender:
    numbers: list[int]
    port: int
    acks: dict[int, tuple[str, str]] = field(default_factory=dict)
    reconnects: int = 0
    failure: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + DEADLINE
        client: MLLPClient | None = None
        try:
            for number in self.numbers:
                message = order_message(number)
                while number not in self.acks:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"message {number} never acknowledged")
                    try:
                        if client is None:
                            client = MLLPClient("127.0.0.1", self.port, timeout=15)
                        self.acks[number] = msa(client.send(message))
                    except OSError:  # the bridge is down: connect again, send again
                        if client is not None:
                            client.close()
                            client = None
                        self.reconnects += 1
                        time.sleep(0.05)
        except BaseException as exc:  # reported by the test
            self.failure = exc
        finally:
            if client is not None:
                client.close()


def test_kill_9_during_an_hl7_burst_loses_and_repeats_nothing(
        tmp_path: Path, database_url: str) -> None:
    seed = int(os.environ.get("BRIDGE_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    with bridge_process(tmp_path / "var", database_url) as bridge:
        numbers = list(range(1, MESSAGES + 1))
        senders = [Sender(numbers[i::SENDERS], bridge.ports["mllp"]) for i in range(SENDERS)]
        threads = [threading.Thread(target=s.run) for s in senders]
        for thread in threads:
            thread.start()
        kill_at_random_moments(bridge, lambda: sum(len(x.acks) for x in senders),
                               sum(len(x.numbers) for x in senders), rng, KILLS)
        for thread in threads:
            thread.join(DEADLINE)
        failures = [s.failure for s in senders if s.failure is not None]
        assert failures == [], f"seed {seed}: {failures}"
        acks = {n: a for s in senders for n, a in s.acks.items()}
        assert len(acks) == MESSAGES
        assert {code for code, _ in acks.values()} == {"AA"}, f"seed {seed}"
        assert all(control == f"CR{n:07d}" for n, (_, control) in acks.items())
        # What was acknowledged before a kill, sent again: the same answer, nothing applied.
        again = rng.sample(numbers, min(50, MESSAGES))
        with MLLPClient("127.0.0.1", bridge.ports["mllp"], timeout=15) as client:
            assert [msa(client.send(order_message(n))) for n in again] == \
                [acks[n] for n in again]
        assert bridge.stop() == 0
    assert bridge.starts == KILLS + 1
    assert sum(s.reconnects for s in senders) >= KILLS  # the kills hit messages on the way
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            logged = dict(session.execute(
                select(HL7Message.control_id, func.count()).where(
                    HL7Message.control_id.like("CR%")).group_by(HL7Message.control_id)).all())
            orders = dict(session.execute(
                select(Order.placer_number, func.count()).where(
                    Order.placer_number.like("PLC%")).group_by(Order.placer_number)).all())
            statuses = set(session.scalars(select(HL7Message.status).where(
                HL7Message.control_id.like("CR%")).distinct()))
    finally:
        engine.dispose()
    assert logged == {f"CR{n:07d}": 1 for n in numbers}, f"seed {seed}"
    assert orders == {f"PLC{n:07d}": 1 for n in numbers}, f"seed {seed}"
    assert statuses == {"processed"}
