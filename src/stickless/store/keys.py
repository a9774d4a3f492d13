"""The Redis key and field layout, in one place (documented in docs/key-layout.md).

Per session (all in one cluster slot, thanks to the ``{family}`` hash tag)::

    <prefix>:s:{<family>}:<digest>   hash   the session: d:<key> = JSON value, m:* = metadata
    <prefix>:f:{<family>}:<digest>   string forward to the renewed digest (short TTL)
    <prefix>:t:{<family>}:<digest>   string tombstone of a destroyed session (short TTL)

Per user (its own slot)::

    <prefix>:u:{<user id>}           zset   member <family>:<digest>, score = absolute deadline (ms)

``digest`` is the base64url SHA-256 of the raw token: the token itself is never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from stickless.tokens import TokenId

DATA_PREFIX = "d:"
"""Hash fields holding user data start with this; metadata fields cannot collide with them."""
META_CREATED = "m:c"
META_ACCESS = "m:a"
META_DEADLINE = "m:x"
META_USER = "m:u"
META_FIELDS = (META_CREATED, META_ACCESS, META_DEADLINE, META_USER)


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Builds every key name from the configured prefix."""

    prefix: str

    def tag(self, family: str) -> str:
        """The hash-tagged family part shared by a session's keys: ``{family}:``."""
        return "{" + family + "}:"

    def data(self, tid: TokenId) -> str:
        return f"{self.prefix}:s:{self.tag(tid.family)}{tid.digest}"

    def user_index(self, user_id: str) -> str:
        return f"{self.prefix}:u:{{{user_id}}}"

    def session_pattern(self) -> str:
        """SCAN pattern matching every session hash."""
        return f"{self.prefix}:s:*"

    def token_id_of(self, data_key: str) -> TokenId | None:
        """Inverse of :meth:`data` (for listings); None for a foreign key."""
        head = f"{self.prefix}:s:{{"
        if not data_key.startswith(head):
            return None
        family, sep, digest = data_key[len(head) :].partition("}:")
        return TokenId(family, digest) if sep and family and digest else None
