"""Signed viewer links and CSRF tokens.

A link token is ``brl_<payload>.<mac>``: the payload (base64url of ``v1|study|expiry``) says
which study it opens and until when, the MAC (HMAC-SHA-256 under the console secret, 32 bytes)
proves the bridge wrote it. Nothing is stored: a link is checked by recomputing its MAC
(compared in constant time), so any bridge that shares the secret honours it, and it cannot be
revoked before it expires; this is why links are short-lived (minutes) and open one study only.

The study is named by its UID, which is not personal data; the token never holds a patient's
name or identifier, so it can sit in a URL the MIS shows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final, Literal

LINK_PREFIX: Final = "brl_"
_VERSION: Final = "v1"
#: Longer input is refused before any work (a study UID is at most 64 characters).
MAX_LINK_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """What a valid link grants: read access to one study until ``expires`` (epoch s)."""

    study_uid: str
    expires: int


@dataclass(frozen=True, slots=True)
class LinkProblem:
    """Why a link does not open: ``expired`` (it was ours) or ``invalid`` (altered, not ours)."""

    kind: Literal["expired", "invalid"]

    @property
    def message(self) -> str:
        if self.kind == "expired":
            return "this viewer link has expired; open the study again from the MIS"
        return "this viewer link is not valid (altered or not issued by this archive)"


def sign_link(secret: bytes, study_uid: str, expires: int) -> str:
    payload = _b64(f"{_VERSION}|{study_uid}|{expires}".encode("ascii"))
    return f"{LINK_PREFIX}{payload}.{_b64(_mac(secret, b'link', payload))}"


def check_link(secret: bytes, token: str, now: float) -> LinkClaim | LinkProblem:
    """The claim of a link the bridge signed, or why it does not hold."""
    if len(token) > MAX_LINK_LENGTH or not token.startswith(LINK_PREFIX) \
            or token.count(".") != 1:
        return LinkProblem("invalid")
    payload, mac = token[len(LINK_PREFIX):].split(".")
    try:
        presented = _unb64(mac)
        fields = _unb64(payload).decode("ascii").split("|")
    except (ValueError, UnicodeDecodeError):
        return LinkProblem("invalid")
    if not hmac.compare_digest(presented, _mac(secret, b"link", payload)):
        return LinkProblem("invalid")
    if len(fields) != 3 or fields[0] != _VERSION or not fields[2].isdigit():
        return LinkProblem("invalid")
    claim = LinkClaim(study_uid=fields[1], expires=int(fields[2]))
    return LinkProblem("expired") if claim.expires <= now else claim


def csrf_token(secret: bytes, session_token: str) -> str:
    """The CSRF token of a console login: bound to it, so it cannot be planted from outside
    (the signed double-submit pattern); the browser holds it in a readable cookie and sends
    it back in the ``X-CSRF-Token`` header of every request that changes something."""
    return _b64(_mac(secret, b"csrf", session_token))


def _mac(secret: bytes, purpose: bytes, text: str) -> bytes:
    return hmac.new(secret, purpose + b"\0" + text.encode("ascii", "replace"),
                    hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        # validate: characters outside the alphabet are an error, not silently skipped.
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
