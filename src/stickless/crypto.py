"""Encryption at rest of session values (the ``crypto`` extra, on ``cryptography``).

Each value is sealed on its own with AES-256-GCM. The associated data binds it to its field
name and to the session's family, so a ciphertext copied to another field, or into another
session, fails to open (it is dropped, and logged without content). The newest key seals; every
key opens, so keys rotate without logging anyone out: a value opened with an older key is
sealed again with the newest at the session's next save.

A sealed value is ``MARKER + key id (4 bytes) + nonce (12 bytes) + ciphertext + tag``; the
marker starts with a NUL byte, which no JSON text does, so sealed and plain values (the
integers ``incr`` works on, which stay plain) can share a hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stickless.errors import ConfigurationError

MARKER = b"\x00s1"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12


def _key_bytes(key: str | bytes) -> bytes:
    """A 32-byte key, given as raw bytes or as base64 (standard or urlsafe) text."""
    raw: bytes
    if isinstance(key, bytes) and len(key) == 32:
        raw = key
    else:
        text = key.decode() if isinstance(key, bytes) else key
        try:
            raw = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "==")
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != 32:
        # never echo the key
        raise ConfigurationError(
            "SessionConfig.encryption_keys: each key must be 32 random bytes, or their base64 "
            '(make one with: python -c "import secrets,base64; '
            'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())")'
        )
    return raw


@dataclass(frozen=True, slots=True)
class Opened:
    """A value opened by :meth:`ValueCipher.open`: its JSON, and whether it was sealed with
    an older key than the newest (it is sealed again at the next save)."""

    plaintext: bytes
    stale: bool


class ValueCipher:
    """Seals and opens session values with ``keys`` (newest first)."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
        except ImportError:  # pragma: no cover - the extra is missing
            raise ConfigurationError(
                "SessionConfig.encryption_keys needs the crypto extra: "
                "pip install 'stickless[crypto]'"
            ) from None
        if not keys:
            raise ConfigurationError("SessionConfig.encryption_keys must hold at least one key")
        self._ciphers: list[tuple[bytes, Any]] = []
        for key in keys:
            raw = _key_bytes(key)
            key_id = hashlib.sha256(b"stickless.key-id" + raw).digest()[:_KEY_ID_BYTES]
            self._ciphers.append((key_id, AESGCM(raw)))
        self._by_id = dict(self._ciphers)

    @staticmethod
    def _associated(family: str, field: str) -> bytes:
        return f"stickless:{family}:{field}".encode()

    def seal(self, family: str, field: str, plaintext: bytes) -> bytes:
        """``plaintext`` sealed with the newest key, bound to ``family`` and ``field``."""
        key_id, cipher = self._ciphers[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed: bytes = cipher.encrypt(nonce, plaintext, self._associated(family, field))
        return MARKER + key_id + nonce + sealed

    def open(self, family: str, field: str, data: bytes) -> Opened:
        """The value sealed in ``data``; raises ValueError when no key opens it (an unknown
        key, a corrupt value, or one moved from another field or session)."""
        head = len(MARKER)
        key_id = data[head : head + _KEY_ID_BYTES]
        nonce = data[head + _KEY_ID_BYTES : head + _KEY_ID_BYTES + _NONCE_BYTES]
        cipher = self._by_id.get(key_id)
        if cipher is None:
            raise ValueError("sealed with a key that is not in SessionConfig.encryption_keys")
        try:
            from cryptography.exceptions import InvalidTag  # noqa: PLC0415

            plaintext: bytes = cipher.decrypt(
                nonce,
                data[head + _KEY_ID_BYTES + _NONCE_BYTES :],
                self._associated(family, field),
            )
        except InvalidTag:
            raise ValueError("the value does not open (corrupt, or moved)") from None
        return Opened(plaintext, stale=key_id != self._ciphers[0][0])


def is_sealed(data: bytes) -> bool:
    return data.startswith(MARKER)


def is_plain_integer(encoded: bytes) -> bool:
    """The JSON of an integer (what ``incr`` works on: it stays plain when encrypting)."""
    body = encoded[1:] if encoded[:1] == b"-" else encoded
    return bool(body) and body.isdigit()
