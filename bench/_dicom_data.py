"""Shared helpers for the image-intake benchmarks: synthetic DICOM objects, DCMTK storescu
as the sender, a bare pynetdicom SCP as the reference receiver, HL7 orders to reconcile
against, and process memory figures.

Run as a script it is the bare SCP (started in its own process by :func:`bare_scp`)::

    python bench/_dicom_data.py bare-scp PORT OUT_DIR [--chunked]
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, free_port, no_delay, stop_process, wait_for_port
from tests.dicom_factories import ct_header, part10_meta

#: Multi-frame Grayscale Word Secondary Capture: a standard multi-frame 16-bit IOD without
#: the functional groups of the enhanced CT/MR objects.
MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
UID_PREFIX = "1.2.826.0.1.3680043.10.1137.99."
STUDY_DATE = "20261122"
HL7_TEMPLATE = (ROOT / "fixtures" / "hl7" / "orm_o01_nw.hl7").read_bytes()
#: What the modality sends: deliberately not the MIS patient (P10001, Ґалаґан^Олена), so the
#: bridge has to reconcile, by accession, every study it receives.
MODALITY_PATIENT_ID = "CT-LOCAL-0042"
MODALITY_PATIENT_NAME = "GALAGAN^OLENA"


def new_uid() -> str:
    return str(generate_uid(prefix=UID_PREFIX))


# --- synthetic objects --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StudyFiles:
    """One study written to disk: a CT series, files in instance order."""

    folder: Path
    files: tuple[Path, ...]
    sop_uids: frozenset[str]
    study_uid: str
    accession: str
    total_bytes: int

    @property
    def count(self) -> int:
        return len(self.files)


def pixel_block(rows: int, columns: int, seed: int) -> bytes:
    """One 16-bit frame of 12-bit noise (values a CT could hold, not compressible)."""
    data = bytearray(random.Random(seed).randbytes(rows * columns * 2))
    data[1::2] = bytes(data[1::2]).translate(bytes(b & 0x0F for b in range(256)))
    return bytes(data)


def scanner_header(*, study_uid: str, series_uid: str, frame_uid: str, accession: str,
                   rows: int = 512, columns: int = 512) -> Dataset:
    """The CT Image attributes a scanner sends, without the per-instance ones: the tests'
    minimal CT header with what a real scanner adds (equipment, geometry, windowing)."""
    return ct_header(
        study_uid=study_uid, series_uid=series_uid, rows=rows, columns=columns,
        SpecificCharacterSet="ISO_IR 192", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        StudyDate=STUDY_DATE, SeriesDate=STUDY_DATE, AcquisitionDate=STUDY_DATE,
        ContentDate=STUDY_DATE, StudyTime="101500", SeriesTime="101500",
        AccessionNumber=accession, Manufacturer="BENCH", InstitutionName="Kyiv City Hospital 1",
        ReferringPhysicianName="Bondarenko^Oleh", StationName="CT_SCANNER_1",
        StudyDescription="CT head and neck", SeriesDescription="Axial 1.0",
        PatientName=MODALITY_PATIENT_NAME, PatientID=MODALITY_PATIENT_ID,
        PatientBirthDate="19850315", PatientSex="F", BodyPartExamined="HEAD",
        SliceThickness="1.0", KVP="120", PatientPosition="HFS", SeriesNumber=2,
        FrameOfReferenceUID=frame_uid, ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        PixelSpacing=["0.488281", "0.488281"], WindowCenter="40", WindowWidth="400",
        RescaleIntercept="-1024", RescaleSlope="1",
    )


def write_ct_study(folder: Path, count: int, *, accession: str, seed: int = 0,
                   rows: int = 512, columns: int = 512) -> StudyFiles:
    """``count`` CT slices of one series, as Part 10 files (explicit VR little endian)."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = new_uid(), new_uid(), new_uid()
    ds = scanner_header(study_uid=study_uid, series_uid=series_uid, frame_uid=frame_uid,
                        accession=accession, rows=rows, columns=columns)
    pixels = pixel_block(rows, columns, seed)
    files: list[Path] = []
    uids: list[str] = []
    total = 0
    for number in range(1, count + 1):
        sop_uid = new_uid()
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = number
        ds.ImagePositionPatient = ["-125.0", "-125.0", f"{-number * 1.0:.1f}"]
        ds.SliceLocation = f"{-number * 1.0:.1f}"
        # Every slice differs (its number in the first pixels), as real slices do.
        ds.PixelData = struct.pack("<I", number) + pixels[4:]
        ds.file_meta = part10_meta(CTImageStorage, sop_uid)
        path = folder / f"ct{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        uids.append(sop_uid)
        total += path.stat().st_size
    return StudyFiles(folder, tuple(files), frozenset(uids), study_uid, accession, total)


@dataclass(frozen=True, slots=True)
class LargeObject:
    path: Path
    sop_uid: str
    study_uid: str
    accession: str
    frames: int
    size: int


def write_large_multiframe(path: Path, target_bytes: int, *, accession: str,
                           rows: int = 512, columns: int = 512) -> LargeObject:
    """One multi-frame 16-bit object of about ``target_bytes``, written without holding its
    pixel data in memory: pydicom writes the header, then the Pixel Data element header (an
    explicit 32-bit length) and the frames are appended in chunks."""
    frame = pixel_block(rows, columns, 1)
    frames = max(1, target_bytes // len(frame))
    length = frames * len(frame)
    if length >= 0xFFFFFFFF:
        raise ValueError("an uncompressed Pixel Data element is limited to 4 GiB")
    study_uid, sop_uid = new_uid(), new_uid()
    ds = scanner_header(study_uid=study_uid, series_uid=new_uid(), frame_uid=new_uid(),
                        accession=accession, rows=rows, columns=columns)
    ds.SOPClassUID = MULTIFRAME_WORD_SC
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = 1
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = "33.3"
    ds.file_meta = part10_meta(MULTIFRAME_WORD_SC, sop_uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        dcmwrite(out, ds, enforce_file_format=True)
        # (7FE0,0010) OW, two reserved bytes, 32-bit length: explicit VR little endian.
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        for _ in range(frames):
            out.write(frame)
    return LargeObject(path, sop_uid, study_uid, accession, frames, path.stat().st_size)


def data_set_offset(path: Path) -> int:
    """Where the data set starts in a Part 10 file: after the preamble, "DICM" and the file
    meta group, whose length (0002,0000) is the first element (explicit VR, UL)."""
    with path.open("rb") as fh:
        head = fh.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError(f"{path}: not a Part 10 file with a group length")
    return 144 + int(struct.unpack("<I", head[140:144])[0])


def same_data_set(received: Path, original: Path, tail: int = 1 << 20) -> bool:
    """The receiver kept the data set as sent: same length after the file meta (which each
    receiver writes itself) and the same last ``tail`` bytes (the end of the pixel data)."""
    a_start, b_start = data_set_offset(received), data_set_offset(original)
    a_size, b_size = received.stat().st_size, original.stat().st_size
    if a_size - a_start != b_size - b_start:
        return False
    length = min(tail, b_size - b_start)
    with received.open("rb") as a, original.open("rb") as b:
        a.seek(a_size - length)
        b.seek(b_size - length)
        return a.read(length) == b.read(length)


# --- the sender: DCMTK storescu -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SendResult:
    seconds: float
    #: Exit codes and the last lines of stderr of storescu runs that reported a problem.
    problems: tuple[str, ...]


def storescu_send(port: int, called_ae: str, files: Sequence[Path], associations: int = 1,
                  calling_ae: str = "BENCH") -> SendResult:
    """Send ``files`` with ``associations`` storescu processes at once (one association
    each, each a contiguous share). ``-nh``: a refused object does not stop the rest, so
    the count check afterwards shows what was lost. ``-R``: only the contexts needed, as a
    modality proposes. ``-v``: storescu reports a failure status only at that level (its
    exit code stays 0), so every response is read from its log."""
    shares = [list(files[i::associations]) for i in range(associations)]
    shares = [sorted(s) for s in shares if s]
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-v", "-aet", calling_ae, "-aec", called_ae, "-R",
                               "-nh", "127.0.0.1", str(port), *map(str, share)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for share in shares]
    outputs = [proc.communicate() for proc in procs]
    elapsed = time.perf_counter() - start
    problems = []
    for proc, share, (_, err) in zip(procs, shares, outputs, strict=True):
        lines = err.decode(errors="replace").splitlines()
        responses = [line for line in lines if "Received Store Response" in line]
        refused = [line for line in responses if "(Success)" not in line
                   and "Warning" not in line]
        errors = [line for line in lines if line.startswith(("E:", "F:"))]
        if proc.returncode != 0 or refused or errors or len(responses) != len(share):
            detail = " | ".join((refused + errors)[:2])
            problems.append(f"storescu exit {proc.returncode}, {len(responses)} responses to "
                            f"{len(share)} objects, {len(refused)} refused: {detail}")
    return SendResult(elapsed, tuple(problems))


@dataclass(frozen=True, slots=True)
class TimedSend:
    #: Milliseconds from each C-STORE request to its response, in sending order.
    latencies_ms: tuple[float, ...]
    #: Objects not answered with Success (status or a missing response), with the reason.
    failures: tuple[str, ...]


def pynetdicom_send_timed(port: int, called_ae: str, files: Sequence[Path],
                          calling_ae: str = "BENCH") -> TimedSend:
    """One association, one C-STORE at a time, each timed. The files are streamed as they
    are (no decode), over a socket without Nagle's delay, as DCMTK sends."""
    from pydicom import dcmread
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    classes = {str(dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files}
    ae = AE(ae_title=calling_ae)
    ae.maximum_pdu_size = 0
    for sop_class in classes:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        raise RuntimeError(f"association with {called_ae} on port {port} not established")
    no_delay(assoc)
    latencies: list[float] = []
    failures: list[str] = []
    try:
        for path in files:
            start = time.perf_counter()
            status = assoc.send_c_store(path)
            latencies.append((time.perf_counter() - start) * 1000)
            code = getattr(status, "Status", None)
            if code != 0x0000:
                comment = getattr(status, "ErrorComment", "")
                failures.append(f"{path.name}: status {code!r} {comment}".strip())
    finally:
        assoc.release()
    return TimedSend(tuple(latencies), tuple(failures))


# --- the reference receiver: a bare pynetdicom SCP ---------------------------------------

def run_bare_scp(port: int, out: Path, chunked: bool) -> None:
    """Accept every storage SOP class and write what arrives to ``out``, nothing else.

    Set up as the bridge's server is (TCP_NODELAY, 16 associations), plus the fastest
    settings measured here (docs: shared/reference/dicom.md): no PDU size limit, and with
    ``chunked`` the data set streamed to a temporary file that is renamed into place."""
    from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event

    _config.STORE_RECV_CHUNKED_DATASET = chunked
    out.mkdir(parents=True, exist_ok=True)

    def on_open(event: Event) -> None:
        no_delay(event.assoc)

    def store(event: Event) -> int:
        request = cast(C_STORE, event.request)
        target = out / f"{request.AffectedSOPInstanceUID}.dcm"
        if chunked:
            os.replace(event.dataset_path, target)
        else:
            with target.open("wb") as fh:
                fh.write(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title="BARE")
    ae.maximum_associations = 16
    ae.maximum_pdu_size = 0
    ae.supported_contexts = AllStoragePresentationContexts
    ae.start_server(("127.0.0.1", port), block=True,
                    evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_C_STORE, store)])


@contextmanager
def bare_scp(out: Path, *, chunked: bool = False) -> Iterator[int]:
    """The bare SCP in its own process (its own GIL, as the bridge has); yields its port."""
    port = free_port()
    args = [sys.executable, str(Path(__file__).resolve()), "bare-scp", str(port), str(out)]
    proc = subprocess.Popen([*args, *(["--chunked"] if chunked else [])], cwd=ROOT,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30, proc)
        yield port
    finally:
        stop_process(proc, 10)


# --- the MIS side: an order the study is reconciled against -------------------------------

def order_message(*, run: str, accession: str, study_uid: str) -> bytes:
    """An ORM^O01 NW for the fixture patient (P10001), with this accession and study UID."""
    raw = HL7_TEMPLATE.replace(b"ORM0001", f"B{run}".encode())
    raw = raw.replace(b"PLC1001", f"PB{run}".encode())
    raw = raw.replace(b"ACC1001", accession.encode())
    raw = raw.replace(b"SPS1001", f"S{run}".encode()[:16])
    return raw.replace(b"1.2.826.0.1.3680043.10.1137.1.1001", study_uid.encode())


def schedule_order(mllp_port: int, *, run: str, accession: str, study_uid: str) -> None:
    from bridge.clients.mllp import MLLPClient

    with MLLPClient("127.0.0.1", mllp_port) as client:
        ack = client.send(order_message(run=run, accession=accession, study_uid=study_uid))
    if b"MSA|AA|" not in ack:
        raise RuntimeError(f"order not accepted: {ack[:200]!r}")


# --- processes -----------------------------------------------------------------------------

def pid_listening_on(port: int) -> int:
    """The process holding the listening TCP socket on ``port`` (one of ours: /proc/net/tcp
    gives the socket's inode, the owner's fd table names it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(pid_dir.name)
        except OSError:
            continue
    raise LookupError(f"no process of ours listens on port {port}")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the RSS high-water mark since start) of a process, in KiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0])
    return figures


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 3 and argv[0] == "bare-scp":
        run_bare_scp(int(argv[1]), Path(argv[2]), "--chunked" in argv[3:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
