"""The C-FIND response writer: PDUs pynetdicom itself decodes, and the pynetdicom internals
the writer (and the cheap context copies) rely on, so an upgrade that changes them fails
here instead of in production."""

from __future__ import annotations

import copy
import inspect
import logging
import queue
import socket
from io import BytesIO

import pynetdicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_FIND_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket, RequestHandler

from bridge.adapters.dicom import find_transport
from bridge.adapters.dicom.find_transport import (
    VERIFIED_PYNETDICOM,
    message_pdus,
    pending_command,
)
from bridge.adapters.dicom.server import _quiet_pynetdicom
from bridge.adapters.dicom.supported_contexts import SharedUidContexts, share_uids

MWL = str(ModalityWorklistInformationFind)


def identifier(size: int = 1) -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Ґалаґан^Олена"
    ds.PatientID = "X" * size
    data = encode(ds, True, True)
    assert data is not None
    return data


def split_pdus(stream: bytes) -> list[bytes]:
    pdus, offset = [], 0
    while offset < len(stream):
        length = int.from_bytes(stream[offset + 2:offset + 6], "big")
        pdus.append(stream[offset:offset + 6 + length])
        offset += 6 + length
    assert offset == len(stream)
    return pdus


def decoded_by_pynetdicom(stream: bytes) -> list[C_FIND]:
    """Every DIMSE message in ``stream``, decoded as pynetdicom's DUL and DIMSE do."""
    messages, current = [], DIMSEMessage()
    for raw in split_pdus(stream):
        pdu = P_DATA_TF()
        pdu.decode(raw)
        if current.decode_msg(pdu.to_primitive()):
            message = current.message_to_primitive()
            assert isinstance(message, C_FIND)
            messages.append(message)
            current = DIMSEMessage()
    return messages


def test_the_pynetdicom_version_was_verified() -> None:
    """Upgrading pynetdicom: re-check PYNETDICOM_INTERNALS, then add the version."""
    assert pynetdicom.__version__ in VERIFIED_PYNETDICOM


def test_the_internals_relied_on_are_there() -> None:
    ae = AE()
    ae.add_requested_context(MWL)
    assoc = Association(ae, "requestor")
    assert isinstance(assoc.dul.to_provider_queue, queue.Queue)
    assert hasattr(assoc.requestor, "maximum_length")
    sock = AssociationSocket(assoc, client_socket=socket.socket())
    try:
        assert isinstance(sock.socket, socket.socket)
    finally:
        sock.close()
    # The DUL sends a queued P-DATA only in its own loop (DT-1 takes it off this queue).
    assert "to_provider_queue.get" in inspect.getsource(pynetdicom.fsm.DT_1)
    # What SharedUidContexts makes cheap.
    assert "deepcopy(self.server.contexts)" in inspect.getsource(
        RequestHandler._create_association)


def test_pending_command_is_pynetdicoms() -> None:
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = MWL
    primitive.Status = 0xFF00
    primitive.Identifier = BytesIO(identifier())
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    [command_pdv] = next(message.encode_msg(1, 0)).presentation_data_value_list
    assert command_pdv[1][1:] == pending_command(7, MWL)


@pytest.mark.parametrize("max_length", [0, 16_384, 200, 64, 8])
@pytest.mark.parametrize("size", [1, 300])
def test_responses_decode_in_order_whatever_the_maximum_pdu(max_length: int, size: int) -> None:
    command = pending_command(3, MWL)
    bodies = [identifier(size + n) for n in range(5)]
    stream = b"".join(message_pdus(1, command, body, max_length) for body in bodies)
    if max_length:
        assert all(len(pdu) - 6 <= max_length for pdu in split_pdus(stream))
    messages = decoded_by_pynetdicom(stream)
    assert len(messages) == 5
    for message, body in zip(messages, bodies, strict=True):
        assert message.Status == 0xFF00
        assert message.MessageIDBeingRespondedTo == 3
        assert message.AffectedSOPClassUID == MWL
        assert message.Identifier is not None
        got = decode(message.Identifier, True, True)
        assert got == decode(BytesIO(body), True, True)


def test_command_and_data_set_share_one_pdu_when_they_fit() -> None:
    stream = message_pdus(1, pending_command(1, MWL), identifier(), 0)
    assert len(split_pdus(stream)) == 1


def test_a_peer_that_stops_reading_times_out() -> None:
    ours, theirs = socket.socketpair()
    try:
        with pytest.raises(TimeoutError):
            find_transport._send_all(ours, memoryview(b"x" * 50_000_000), 0.2)
    finally:
        ours.close()
        theirs.close()


def test_context_copies_share_uids_but_not_lists() -> None:
    ae = AE()
    ae.add_supported_context(MWL)
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", scu_role=True, scp_role=True)
    contexts = SharedUidContexts(ae.supported_contexts)
    copies = copy.deepcopy(contexts)
    for original, clone in zip(contexts, copies, strict=True):
        assert clone is not original
        assert vars(clone) == vars(original)
        assert clone.transfer_syntax is not original.transfer_syntax
        assert clone.abstract_syntax is original.abstract_syntax  # immutable: shared
    copies[0].transfer_syntax = ["1.2.840.10008.1.2"]
    assert len(contexts[0].transfer_syntax) > 1


def test_a_server_copies_its_contexts_cheaply() -> None:
    ae = AE()
    ae.add_supported_context(MWL)
    server = ae.make_server(("127.0.0.1", 0))
    try:
        share_uids(server)
        assert isinstance(server.contexts, SharedUidContexts)
        copies = copy.deepcopy(server.contexts)
        assert [vars(c) for c in copies] == [vars(c) for c in server.contexts]
    finally:
        server.server_close()


@pytest.mark.parametrize(("level", "formatted"), [(logging.WARNING, False),
                                                  (logging.DEBUG, True)])
def test_pynetdicom_formats_only_what_its_log_keeps(level: int, formatted: bool) -> None:
    pynetdicom_log = logging.getLogger("pynetdicom")
    saved = (pynetdicom_log.level, pynetdicom_config.LOG_REQUEST_IDENTIFIERS,
             pynetdicom_config.LOG_HANDLER_LEVEL)
    pynetdicom_log.setLevel(level)
    try:
        _quiet_pynetdicom()
        assert pynetdicom_config.LOG_REQUEST_IDENTIFIERS is formatted
        assert ("standard" if formatted else "none") == pynetdicom_config.LOG_HANDLER_LEVEL
    finally:
        pynetdicom_log.setLevel(saved[0])
        pynetdicom_config.LOG_REQUEST_IDENTIFIERS = saved[1]
        pynetdicom_config.LOG_HANDLER_LEVEL = saved[2]
