"""Decompression on the way out, for peers that do not accept the stored transfer syntax.

The archive keeps objects as stored (as received, or losslessly compressed by
:mod:`bridge.services.compression.compressor`). A peer that takes the stored syntax gets the
object as it
is; one that takes only uncompressed syntaxes gets it decoded to Explicit VR Little Endian
(pynetdicom converts that to Implicit VR when the peer accepted only Implicit):

- C-MOVE and C-GET (:mod:`bridge.adapters.dicom.qr_scp`) and forwarding
  (:mod:`bridge.services.archive.forwarding`) call :func:`fit_to_contexts` with the presentation
  contexts the peer accepted; for C-MOVE, :class:`AcceptedContexts` captures those of the
  association pynetdicom opens to the move destination.
- WADO-RS (:mod:`bridge.adapters.http.dicomweb.wado`) asks :func:`can_decompress` whether
  the default syntax can be served and :func:`decompressed` for the object itself.

Decoding works on the already patched dataset (the MIS values applied), one object at a time,
and never touches the stored file. The SOP Instance UID is kept (pydicom would make a new one
by default): decompressing a lossless object gives back exactly the original pixel data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

log = logging.getLogger("bridge.transcode")

ContextSource = Callable[[], Sequence[PresentationContext]]


@lru_cache(maxsize=64)
def can_decompress(transfer_syntax: str) -> bool:
    """Whether objects stored in this (compressed) syntax can be decoded here."""
    from pydicom.pixels.decoders.base import get_decoder

    uid = UID(transfer_syntax)
    if not uid.is_compressed:
        return False
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:  # video and other syntaxes without a pixel decoder
        return False


def is_compressed(transfer_syntax: str) -> bool:
    return UID(transfer_syntax).is_compressed


def decompressed(dataset: Dataset) -> Dataset:
    """``dataset`` with its pixel data decoded, in Explicit VR Little Endian (in place; the
    same object is returned). Uncompressed objects come back unchanged."""
    syntax = _syntax_of(dataset)
    if syntax is None or not is_compressed(syntax):
        return dataset
    if "PixelData" in dataset:
        dataset.decompress(generate_instance_uid=False)
    else:  # nothing encapsulated: only the header's encoding changes
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def fit_to_contexts(dataset: Dataset, contexts: Sequence[PresentationContext]) -> Dataset:
    """The dataset to send over an association with these accepted contexts: as stored when
    a context for its SOP class takes its syntax (or it is uncompressed: pynetdicom converts
    between uncompressed syntaxes), else decompressed when an uncompressed context was
    accepted. Anything else goes out as it is and pynetdicom fails that one sub-operation."""
    syntax = _syntax_of(dataset)
    if syntax is None or not is_compressed(syntax):
        return dataset
    sop_class = str(dataset.get("SOPClassUID", ""))
    offered = {str(cx.transfer_syntax[0]) for cx in contexts
               if str(cx.abstract_syntax) == sop_class and cx.transfer_syntax}
    if str(syntax) in offered:
        return dataset
    if not any(not is_compressed(ts) for ts in offered) or not can_decompress(syntax):
        return dataset
    try:
        return decompressed(dataset)
    except Exception as exc:  # a corrupt stream: this object fails, the others go on
        log.warning("cannot decompress an object stored as %s for a peer that does not "
                    "accept it: %s", syntax, type(exc).__name__)
        return dataset


class AcceptedContexts:
    """Captures the accepted contexts of an association pynetdicom opens on our behalf (the
    C-MOVE sub-association): pass :attr:`handlers` as its ``evt_handlers``."""

    def __init__(self) -> None:
        self.contexts: list[PresentationContext] = []

    @property
    def handlers(self) -> list[tuple[Any, Callable[[Event], None]]]:
        return [(evt.EVT_ESTABLISHED, self._established)]

    def _established(self, event: Event) -> None:
        self.contexts = list(event.assoc.accepted_contexts)

    def __call__(self) -> Sequence[PresentationContext]:
        return self.contexts


def _syntax_of(ds: Dataset) -> str | None:
    """The transfer syntax of a dataset read from a file (None without file meta)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(syntax) if syntax else None
