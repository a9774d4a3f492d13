"""The Redis key and field layout, in one place (documented in docs/key-layout.md).

Per session, all named by the session's *family* (the first part of its token, kept across
renewals), so every key of a session shares one cluster slot and every script can declare,
in ``KEYS``, each key it touches::

    <prefix>:s:{<family>}   hash    the session: d:<key> = JSON value, m:* = metadata,
                                    k:<digest> = "1": the one token that may load it
    <prefix>:f:{<family>}   string  after a renew: the digest of the previous token, which
                                    may still save *data* for forward_ttl (plain rotation),
                                    or "" (identity change: the old token has no power left)
    <prefix>:t:{<family>}   string  tombstone of a destroyed session (short TTL)

Per user (its own slot)::

    <prefix>:u:{<user id>}  zset    member <family>, score = absolute deadline (ms)
    <prefix>:l:{<user id>}  zset    the user's logins (max_sessions_per_user): member
                                    <family>, score = when it logged in (server ms)

``digest`` is the base64url SHA-256 of the raw token: the token itself is never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_PREFIX = "d:"
"""Hash fields holding user data start with this; metadata fields cannot collide with them."""
META_CREATED = "m:c"
META_ACCESS = "m:a"
META_DEADLINE = "m:x"
META_USER = "m:u"
TOKEN_FIELD_PREFIX = "k:"  # noqa: S105  (a field name, not a secret)
"""The session hash has one field ``k:<digest>`` (value ``"1"``), of its current token: a
token's power is one field's existence, which a save checks without a script
(``HSETEX ... FXX``, see :meth:`~stickless.store.plan.Planner.save`)."""
META_IDLE = "m:i"
"""The session's own idle timeout (ms), when ``set_lifetime`` gave it one."""
META_FIELDS = (META_CREATED, META_ACCESS, META_DEADLINE, META_USER)
META_USER_AGENT = ("m:ua", "m:ua1", "m:ua2", "m:ua3")
"""The device's user agent, as recorded at creation / login (``SessionInfo.device``), in
pieces of at most 64 bytes (see ``stickless.devices.user_agent_parts``)."""
META_IP = "m:ip"
"""The device's client address, as ``SessionConfig.device_ip`` wants it kept."""
META_DEVICE_NAME = "m:dn"
"""The name the user gave the device (``session.device_name``)."""
INFO_FIELDS = (*META_FIELDS, META_IDLE, META_IP, META_DEVICE_NAME, *META_USER_AGENT)
"""What ``sessions_for`` reads of each session (one HMGET)."""

SESSION, FORWARD, TOMBSTONE, USER_INDEX, LOGINS = "s", "f", "t", "u", "l"
"""The kinds of key, as they appear after the prefix."""
KINDS = (SESSION, FORWARD, TOMBSTONE, USER_INDEX, LOGINS)


def token_field(digest: str) -> str:
    """The field of the session hash that exists while ``digest``'s token is its current one."""
    return TOKEN_FIELD_PREFIX + digest


def glob_escape(text: str) -> str:
    """``text`` with the glob characters of SCAN's MATCH escaped."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Builds every key name from the configured prefix."""

    prefix: str

    def _family_key(self, kind: str, family: str) -> str:
        return f"{self.prefix}:{kind}:{{{family}}}"

    def data(self, family: str) -> str:
        """The session hash of ``family``."""
        return self._family_key(SESSION, family)

    def forward(self, family: str) -> str:
        """Which previous token of ``family`` may still save data (after a plain renew)."""
        return self._family_key(FORWARD, family)

    def tombstone(self, family: str) -> str:
        """Left for a while by a destroy, so a late save reports ``destroyed``."""
        return self._family_key(TOMBSTONE, family)

    def session_keys(self, family: str) -> tuple[str, str, str]:
        """Every key of one session, in the order the scripts declare them."""
        return self.data(family), self.forward(family), self.tombstone(family)

    def user_index(self, user_id: str) -> str:
        return f"{self.prefix}:{USER_INDEX}:{{{user_id}}}"

    def logins(self, user_id: str) -> str:
        """When each of the user's sessions logged in (``max_sessions_per_user``); in the
        slot of :meth:`user_index`."""
        return f"{self.prefix}:{LOGINS}:{{{user_id}}}"

    def user_keys(self, user_id: str) -> tuple[str, str]:
        """The user's index and logins, in the order ``cap.lua`` declares them."""
        return self.user_index(user_id), self.logins(user_id)

    def pattern(self, *kinds: str) -> str:
        """SCAN / PSUBSCRIBE pattern matching every key of these kinds (``"s"``, ``"f"``,
        ``"t"``, ``"u"``, ``"l"``), or every key under the prefix when none is given."""
        head = glob_escape(self.prefix)
        if not kinds:
            return f"{head}:*"
        return f"{head}:{kinds[0] if len(kinds) == 1 else '[' + ''.join(kinds) + ']'}:*"

    def kind_of(self, key: str) -> str | None:
        """Which kind of stickless key ``key`` is (``"s"``, ``"f"``, ``"t"``, ``"u"``,
        ``"l"``), or None."""
        head = self.prefix + ":"
        if not key.startswith(head) or key[len(head) + 1 : len(head) + 2] != ":":
            return None
        kind = key[len(head)]
        return kind if kind in KINDS else None

    def family_of(self, key: str, kind: str = SESSION) -> str | None:
        """Inverse of :meth:`data` (or of the ``kind`` given): the family, or None for a
        foreign key."""
        head = f"{self.prefix}:{kind}:{{"
        if not key.startswith(head) or not key.endswith("}"):
            return None
        family = key[len(head) : -1]
        return family if family and "}" not in family and "{" not in family else None
