"""DICOMweb's HTTP framing: the multipart/related push parser (chunks split anywhere) and
the writer, and Accept/Content-Type negotiation."""

from __future__ import annotations

import random

import pytest
from fastapi import HTTPException

from bridge.adapters.http.dicomweb.common import (
    ANY_SYNTAX,
    DEFAULT_SYNTAX,
    parse_media_ranges,
    parse_media_type,
    require_json_accepted,
    require_octet_stream_accepted,
    wanted_dicom_syntaxes,
)
from bridge.adapters.http.dicomweb.multipart import (
    PART_END,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    closing,
    new_boundary,
    part_head,
)

BOUNDARY = "b-1137"


def written(parts: list[bytes], boundary: str = BOUNDARY) -> bytes:
    return b"".join(part_head(boundary, "application/dicom", len(p)) + p + PART_END
                    for p in parts) + closing(boundary)


def parse(body: bytes, chunk_sizes: list[int], boundary: str = BOUNDARY
          ) -> tuple[list[dict[str, str]], list[bytes], MultipartParser]:
    parser = MultipartParser(boundary)
    headers: list[dict[str, str]] = []
    contents: list[bytes] = []
    current: bytearray | None = None
    position = 0
    sizes = iter(chunk_sizes)
    while position < len(body):
        size = next(sizes, len(body))
        for event in parser.feed(body[position : position + size]):
            if isinstance(event, PartStart):
                headers.append(event.headers)
                current = bytearray()
            elif isinstance(event, PartData):
                assert current is not None
                current += event.data
            elif isinstance(event, PartEnd):
                assert current is not None
                contents.append(bytes(current))
                current = None
        position += size
    return headers, contents, parser


# Content that looks like delimiters without being one (a real one, CRLF + "--" + the
# boundary, never occurs in content: the sender picks the boundary so).
TRICKY = [b"", b"\r\n--b-113", b"--b-1137", b"x--b-1137\r\n" * 3, bytes(range(256)) * 40]


@pytest.mark.parametrize("chunk", [1, 2, 7, 13, 4096, 1 << 20])
def test_parts_come_back_exactly_whatever_the_chunking(chunk: int) -> None:
    headers, contents, parser = parse(written(TRICKY), [chunk] * 100_000)
    assert contents == TRICKY
    assert headers[0] == {"content-type": "application/dicom", "content-length": "0"}
    parser.finish()  # complete: no error
    assert parser.done and parser.parts == len(TRICKY)


def test_random_chunking_and_other_clients_framing() -> None:
    # Preamble, transport padding after the delimiter, no part headers, an epilogue.
    body = (b"preamble\r\n--b-1137  \r\n\r\nfirst\r\n--b-1137\r\nContent-Type: "
            b"application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\nsecond\r\n"
            b"--b-1137--\r\nepilogue")
    rng = random.Random(1137)
    for _ in range(50):
        headers, contents, parser = parse(body, [rng.randint(1, 9) for _ in range(len(body))])
        assert contents == [b"first", b"second"]
        assert headers[0] == {}
        assert headers[1]["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.1")
        parser.finish()


def test_truncated_and_malformed_bodies() -> None:
    body = written([b"x" * 100])
    _, contents, parser = parse(body[:100], [100])
    assert contents == [] and parser.in_part
    with pytest.raises(MultipartError):
        parser.finish()
    with pytest.raises(MultipartError):
        parse(b"--b-1137garbage\r\n", [100])
    with pytest.raises(MultipartError):
        parse(b"--b-1137\r\nno colon here\r\n\r\ndata", [100])
    _, contents, parser = parse(b"not multipart at all", [5])
    assert parser.parts == 0 and not parser.done
    with pytest.raises(MultipartError):
        MultipartParser("")


def test_boundaries_are_unique() -> None:
    assert new_boundary() != new_boundary()
    assert part_head("b", "application/dicom") == (
        b"--b\r\nContent-Type: application/dicom\r\n\r\n")


def test_media_ranges() -> None:
    ranges = parse_media_ranges('multipart/related; type="application/dicom"; '
                                'transfer-syntax=*; q=0.5, application/dicom+json, x/y;q=0')
    assert [r.type for r in ranges] == ["application/dicom+json", "multipart/related"]
    assert ranges[1].params == {"type": "application/dicom", "transfer-syntax": "*"}
    assert parse_media_ranges(None)[0].type == "*/*"
    quoted = parse_media_type('multipart/related; boundary="a;b,c"; type=application/dicom')
    assert quoted is not None and quoted.params["boundary"] == "a;b,c"
    assert parse_media_type("nonsense") is None


@pytest.mark.parametrize(("accept", "expected"), [
    (None, [DEFAULT_SYNTAX]),
    ("*/*", [DEFAULT_SYNTAX]),
    ('multipart/related; type="application/dicom"', [DEFAULT_SYNTAX]),
    ("multipart/related; type=application/dicom; transfer-syntax=*", [ANY_SYNTAX]),
    ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80, '
     'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.1',
     ["1.2.840.10008.1.2.4.80", ANY_SYNTAX]),
])
def test_retrieve_syntaxes(accept: str | None, expected: list[str]) -> None:
    assert wanted_dicom_syntaxes(accept) == expected


@pytest.mark.parametrize("accept", [
    "application/dicom+json", 'multipart/related; type="application/octet-stream"',
    "image/jpeg", 'multipart/related; type="application/dicom"; q=0'])
def test_retrieve_refuses_what_it_cannot_send(accept: str) -> None:
    with pytest.raises(HTTPException) as raised:
        wanted_dicom_syntaxes(accept)
    assert raised.value.status_code == 406


def test_json_and_bulk_data_negotiation() -> None:
    for accept in (None, "*/*", "application/*", "application/dicom+json", "application/json"):
        require_json_accepted(accept)
    for accept in (None, "*/*", 'multipart/related; type="application/octet-stream"'):
        require_octet_stream_accepted(accept)
    for check, accept in ((require_json_accepted, "application/dicom+xml"),
                          (require_octet_stream_accepted, "application/dicom+json")):
        with pytest.raises(HTTPException) as raised:
            check(accept)
        assert raised.value.status_code == 406
