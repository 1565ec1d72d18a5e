"""The HL7 intake queue: each message is prepared as it arrives, then group-committed.

Decoding and mapping a message needs no database, so it happens the moment the listener
hands the message in, while its batch is still waiting for the other senders' messages;
the batch, once formed, only has the database work left.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.services.group_commit.loop import LoopBatcher
from bridge.services.hl7.ingest import HL7Ingest, Inbound, Outcome, Prepared


class HL7Intake:
    """What the MLLP listener hands messages to (a ``Batcher`` of inbound messages)."""

    def __init__(self, ingest: HL7Ingest, *, batch_max: int, linger: float,
                 expected: Callable[[], int]) -> None:
        self._ingest = ingest
        self._batcher: LoopBatcher[Prepared, Outcome] = LoopBatcher(
            ingest.handle_prepared, batch_max=batch_max, linger=linger, expected=expected)

    def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self._batcher.stop()

    async def run(self, item: Inbound) -> Outcome:
        return await self._batcher.run(self._ingest.prepare(item))
