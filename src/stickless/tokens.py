"""Session tokens: creation, validation, optional signing, and the hash used as Redis key.

A token is ``<family>.<secret>``: 8 random bytes naming the session's *family* (kept across
renewals so that all of a session's keys share one Redis Cluster slot) and 32 random bytes
(256 bits) of secret, both base64url without padding. With a signing secret configured the
client sees ``<family>.<secret>.<signature>``.

Only a hash of the token (:func:`token_id`) ever reaches Redis, so someone who can read
Redis cannot present a stolen key as a cookie.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import Signer
from itsdangerous.encoding import want_bytes

from stickless.errors import ConfigurationError

FAMILY_BYTES = 8
SECRET_BYTES = 32
MAX_TOKEN_LENGTH = 256
_B64 = r"[A-Za-z0-9_-]"
_TOKEN_RE = re.compile(rf"({_B64}{{11}})\.({_B64}{{43}})")
_SESSION_ID_RE = re.compile(rf"{_B64}{{11}}")
_SIGNATURE_RE = re.compile(rf"{_B64}{{43}}")  # an HMAC-SHA256, unpadded base64url


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class TokenId:
    """What the store needs to find a session: its family and the hash of its token."""

    family: str
    digest: str

    @property
    def session_id(self) -> str:
        """The session's id: its family. Safe to show (it cannot be used as a cookie), and
        the same across renewals. The per-user index holds these."""
        return self.family


def parse_session_id(session_id: str) -> str:
    """A session id (as in ``SessionInfo.session_id``) -> the family it names.
    Raises :class:`~stickless.errors.ConfigurationError` (a ValueError) otherwise."""
    if not isinstance(session_id, str) or not _SESSION_ID_RE.fullmatch(session_id):
        # never echo the value: an operator may have pasted a user's token
        raise ConfigurationError(
            "not a session id (as listed by `stickless sessions ls` or "
            "SessionInfo.session_id; a token is never accepted here)"
        )
    return session_id


def new_family() -> str:
    return _b64(secrets.token_bytes(FAMILY_BYTES))


def new_raw_token(family: str | None = None) -> str:
    """A fresh unsigned token, in ``family`` (a new one if None)."""
    return f"{family or new_family()}.{_b64(secrets.token_bytes(SECRET_BYTES))}"


DIGEST_BYTES = 16
"""The stored hash keeps the first 128 bits of the token's SHA-256: finding a token from it
costs 2**128 tries (the secret has 256 bits), and it keeps small sessions small."""


@functools.lru_cache(maxsize=4096)
def token_id(raw_token: str) -> TokenId:
    """The storage identity of a well-formed raw token (see :func:`parse`). The last 4096
    are kept: a session's requests compute it again for every load and save."""
    family = raw_token.partition(".")[0]
    digest = _b64(hashlib.sha256(raw_token.encode("ascii")).digest()[:DIGEST_BYTES])
    return TokenId(family, digest)


class _Signer(Signer):
    """itsdangerous's Signer with each key derived once (it derives the key again at every
    sign and verify, which cost more than the HMAC itself). Same signatures."""

    def __init__(self, secret_keys: list[Any], **options: Any) -> None:
        super().__init__(secret_keys, **options)
        self._derived: dict[bytes, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        raw = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        derived = self._derived.get(raw)
        if derived is None:
            derived = self._derived[raw] = super().derive_key(raw)
        return derived

    def signing_key(self, value: str, signature: str) -> int | None:
        """Which key signed ``value`` with exactly ``signature`` (its one canonical form,
        as :meth:`sign` writes it): 0 for the newest, 1 for the one before...; None for
        none. Constant-time per key."""
        message = value.encode("ascii")
        for age, key in enumerate(reversed(self.secret_keys)):
            expected = _b64(hmac.digest(self.derive_key(key), message, "sha256"))
            if hmac.compare_digest(expected, signature):
                return age
        return None


OPENED_KEPT = 4096
"""How many opened client values a :class:`TokenCodec` remembers."""


class TokenCodec:
    """Turns raw tokens into client-facing strings and back, signing when configured."""

    def __init__(self, secret_key: str | bytes | Sequence[str | bytes] | None) -> None:
        self._opened: dict[str, tuple[str, str]] = {}
        if secret_key is None:
            self._signer: _Signer | None = None
        else:
            keys = [secret_key] if isinstance(secret_key, str | bytes) else list(secret_key)
            self._signer = _Signer(
                keys, salt="stickless.token", digest_method=hashlib.sha256, sep="."
            )

    @property
    def signed(self) -> bool:
        return self._signer is not None

    def dump(self, raw_token: str) -> str:
        """The string the client keeps (cookie / header value)."""
        return raw_token if self._signer is None else self._signer.sign(raw_token).decode()

    def parse(self, presented: object) -> str | None:
        """The raw token inside a client-presented value, or None when it is malformed,
        oversized, not ASCII, or (with signing) forged. Never raises, never does I/O."""
        opened = self.open(presented)
        return opened[0] if opened is not None else None

    def open(self, presented: object) -> tuple[str, str] | None:
        """``(raw token, value the client should keep)`` of a client-presented value, or None
        as :meth:`parse`. The value is the presented one itself, unless it was signed with
        an older key (then it is signed again with the newest).

        Values that opened are remembered (at most :data:`OPENED_KEPT`, then forgotten all
        at once): a session's next requests present the same value, and opening it costs
        two regular expressions and an HMAC. Only a value that opened is kept, so a forged
        one is checked in full every time."""
        if type(presented) is str and (known := self._opened.get(presented)) is not None:
            return known
        opened = self._open(presented)
        if opened is not None and type(presented) is str:
            if len(self._opened) >= OPENED_KEPT:
                self._opened.clear()
            self._opened[presented] = opened
        return opened

    def _open(self, presented: object) -> tuple[str, str] | None:
        if isinstance(presented, bytes):
            try:
                presented = presented.decode("ascii")
            except UnicodeDecodeError:
                return None
        if not isinstance(presented, str) or len(presented) > MAX_TOKEN_LENGTH:
            return None
        presented = str.__str__(presented)  # a plain str (a subclass may override methods)
        if self._signer is None:
            return (presented, presented) if _TOKEN_RE.fullmatch(presented) else None
        raw, _, signature = presented.rpartition(".")
        if not (_TOKEN_RE.fullmatch(raw) and _SIGNATURE_RE.fullmatch(signature)):
            return None  # only the one canonical form: the value is kept as the client's
        age = self._signer.signing_key(raw, signature)
        if age is None:
            return None
        return raw, presented if age == 0 else self.dump(raw)  # an older key: signed anew
