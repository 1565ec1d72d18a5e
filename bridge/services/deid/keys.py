"""The master key and the keys under it (AES-256-GCM, the ``cryptography`` package).

- The **master key** (32 bytes) comes from ``BRIDGE_DEID_MASTER_KEY_FILE`` (raw bytes, hex
  or base64) or ``BRIDGE_DEID_MASTER_KEY`` (hex or base64). It never enters the database:
  rows keep only its *key id* (a keyed hash of it), so a wrong key is told apart from a
  damaged record.
- Each export has its own **data key**, and each destination its **pseudonym secret**; both
  are stored *wrapped* (encrypted) by the master key. Key records (the original values of an
  object, a study's identity) are encrypted by the export's data key, bound (AAD) to what
  they describe, so a record moved to another row does not open.
- **Rotation** unwraps every wrapped key with the old master key and wraps it with the new
  one; the records and the exported data are not touched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bridge.config.settings import Settings
from bridge.errors import BridgeError

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
_KID_LABEL: Final = b"bridge deid master key id\x00"


class KeyProblem(BridgeError):
    """The master key is missing, malformed or not the one the records were made with."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    key: bytes
    kid: str

    @classmethod
    def of(cls, key: bytes) -> MasterKey:
        if len(key) != KEY_BYTES:
            raise KeyProblem(f"the de-identification master key must be {KEY_BYTES} bytes, "
                             f"not {len(key)}", location="deid_master_key")
        return cls(key=key, kid=hashlib.sha256(_KID_LABEL + key).hexdigest()[:16])

    def wrap(self, secret: bytes, purpose: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, secret, purpose.encode())

    def unwrap(self, wrapped: bytes, purpose: str, kid: str) -> bytes:
        if kid != self.kid:
            raise KeyProblem(f"{purpose} was wrapped by master key {kid}; the configured "
                             f"master key is {self.kid} (rotate, or configure the old key)",
                             location="deid_master_key")
        try:
            return AESGCM(self.key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                            purpose.encode())
        except InvalidTag:
            raise KeyProblem(f"the master key does not open {purpose} (damaged row?)",
                             location="deid_master_key") from None


def parse_key(text: bytes) -> bytes:
    """32 raw bytes, 64 hex characters or base64 of 32 bytes (whitespace ignored)."""
    if len(text) == KEY_BYTES:
        return text
    stripped = text.strip()
    for decode in (binascii.unhexlify, base64.b64decode):
        try:
            key = decode(stripped)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise KeyProblem("the de-identification master key is not 32 bytes (raw, hex or base64)",
                     location="deid_master_key")


def master_key(settings: Settings) -> MasterKey:
    """The configured master key, or a :class:`KeyProblem` saying what to set."""
    if settings.deid_master_key_file is not None:
        try:
            data = Path(settings.deid_master_key_file).read_bytes()
        except OSError as exc:
            raise KeyProblem(f"BRIDGE_DEID_MASTER_KEY_FILE: cannot read "
                             f"{settings.deid_master_key_file}: {exc.strerror}",
                             location="deid_master_key_file") from None
        return MasterKey.of(parse_key(data))
    if settings.deid_master_key:
        return MasterKey.of(parse_key(settings.deid_master_key.get_secret_value().encode()))
    raise KeyProblem("no de-identification master key: set BRIDGE_DEID_MASTER_KEY_FILE "
                     "(bridge deid new-key makes one)", location="deid_master_key_file")


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def seal(data_key: bytes, record: dict[str, Any], bound_to: str) -> bytes:
    """A key record: compressed JSON, encrypted by the data key, bound to ``bound_to``."""
    plain = zlib.compress(json.dumps(record, separators=(",", ":")).encode(), 1)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(data_key).encrypt(nonce, plain, bound_to.encode())


def unseal(data_key: bytes, sealed: bytes, bound_to: str) -> dict[str, Any]:
    try:
        plain = AESGCM(data_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:],
                                         bound_to.encode())
    except InvalidTag:
        raise KeyProblem(f"the key record of {bound_to} does not open (damaged or moved)",
                         location="deid_key_record") from None
    result: dict[str, Any] = json.loads(zlib.decompress(plain))
    return result


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)
