"""The known DICOM peers (``BRIDGE_DICOM_PEERS``) as the bridge resolved them at start."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from bridge.adapters.http.deps import ContextDep, ViewerToken

router = APIRouter(prefix="/api/peers", tags=["peers"])


class PeerOut(BaseModel):
    ae_title: str
    host: str | None
    port: int | None
    role: Literal["scu", "scp", "both"]
    charset: str | None
    latin_only: bool


class PeersOut(BaseModel):
    #: Unknown calling AE titles are refused when true.
    strict: bool
    peers: list[PeerOut]


@router.get("", response_model=PeersOut)
def peers(context: ContextDep, _token: ViewerToken) -> PeersOut:
    settings = context.settings
    return PeersOut(strict=settings.dicom_strict_peers,
                    peers=[PeerOut.model_validate(p.model_dump()) for p in settings.dicom_peers])
