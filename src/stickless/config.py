"""SessionConfig: every setting of the session engine, with its default, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from stickless.errors import ConfigurationError

Durability = Literal["none", "replicated"]
DeviceIP = Literal["full", "truncated", "none"]
OnLimit = Literal["evict_oldest", "refuse"]

DEFAULT_IDENTITY_KEYS: frozenset[str] = frozenset(
    {
        "user",
        "user_id",
        "username",
        "uid",
        "account_id",
        "email",
        "logged_in",
        "_user_id",  # Flask-Login
        "_fresh",  # Flask-Login
        "_auth_user_id",  # Django (django.contrib.auth)
        "_auth_user_backend",
        "_auth_user_hash",
    }
)
"""The session keys that name the user in common frameworks' login idioms."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Settings of a session store. ``SessionConfig()`` with no arguments is a sound default.

    All durations are in seconds (floats allowed).
    """

    idle_timeout: float = 30 * 60
    """Sliding expiry: a session not used for this long is gone (Redis TTL). Default 30 min."""

    absolute_timeout: float = 24 * 60 * 60
    """Hard lifetime from creation, whatever the activity; the TTL never outlives it.
    Default 24 h. Must be >= ``idle_timeout``."""

    touch_interval: float = 60.0
    """A read refreshes the idle TTL at most this often: a load that finds the last refresh
    older than this sends one more round trip (a small script) to refresh it; other loads
    are one round trip and write nothing. 0 refreshes on every load. Default 60 s."""

    key_prefix: str = "stickless"
    """Prefix of every Redis key. Default ``"stickless"``; see docs/key-layout.md."""

    secret_key: str | Sequence[str] | None = None
    """Optional signing secret(s) for tokens (HMAC-SHA256 via itsdangerous). A sequence
    allows rotation: the *last* key signs, all verify. None (default): tokens are unsigned
    256-bit random values, which is already unguessable; signing lets a forged token be
    rejected without a Redis round trip."""

    max_size: int = 64 * 1024
    """Largest encoded session (sum of field names and values), bytes. Larger raises
    :class:`~stickless.errors.SessionTooLarge` at save. Default 64 KiB."""

    durability: Durability = "none"
    """``"none"`` (default): a save returns once the primary applied it. ``"replicated"``:
    the save is pipelined with ``WAIT min_replicas wait_timeout``; fewer acknowledgements
    raise :class:`~stickless.errors.ReplicationTimeout`."""

    min_replicas: int = 1
    """Replicas that must acknowledge a save with ``durability="replicated"``. Default 1."""

    wait_timeout: float = 0.5
    """How long ``WAIT`` may block with ``durability="replicated"``. Default 0.5 s."""

    encryption_keys: Sequence[str | bytes] | None = None
    """Encrypt every session value at rest (AES-256-GCM, the ``crypto`` extra): keys of 32
    random bytes (or their base64), **newest first**: the first seals, all open, so appending
    the old key behind a new one rotates without logging anyone out (values are sealed again
    with the newest key at their session's next save; drop the old key after
    ``absolute_timeout``). Each value is bound to its field and session: a ciphertext moved
    elsewhere does not open (dropped, logged). Integers stay plain, so ``incr`` keeps working
    (their values are visible to someone who reads Redis). Default None: values are plain
    JSON."""

    device_ip: DeviceIP = "truncated"
    """How much of the client address the web adapters keep with a session for its user's
    device list (``SessionInfo.device.ip``), recorded at creation and at login:
    ``"truncated"`` (default) its network only, ``/24`` for IPv4 and ``/48`` for IPv6;
    ``"full"`` the address; ``"none"`` nothing. The address is the one the framework trusts
    (ASGI ``client``, WSGI ``REMOTE_ADDR``: set your proxy middleware up, stickless never
    reads ``X-Forwarded-For`` itself). Never logged."""

    max_idle_timeout: float | None = None
    """The longest idle timeout ``session.set_lifetime(idle=...)`` may give a session
    ("remember me"). Default None: ``idle_timeout`` (a session may only shorten it)."""

    max_absolute_timeout: float | None = None
    """The longest absolute lifetime ``session.set_lifetime(absolute=...)`` may give a session.
    Default None: ``absolute_timeout``."""

    max_sessions_per_user: int | None = None
    """The most live sessions one user may have at once (devices, browsers), enforced when a
    save binds the user (a login). Concurrent logins, from any number of processes and
    servers, never leave more. Costs a login 1 more round trip (2 more when the user already
    has that many sessions); other saves are unchanged. Default None: no cap."""

    on_limit: OnLimit = "evict_oldest"
    """What a login beyond ``max_sessions_per_user`` does. ``"evict_oldest"`` (default): it
    succeeds and ends the user's sessions that logged in longest ago, as many as needed
    (never a newer login's). ``"refuse"``: the login's save raises
    :class:`~stickless.errors.TooManySessions` and writes nothing."""

    tombstone_ttl: float = 5 * 60
    """How long a destroyed session leaves a tombstone (so a late save reports
    ``destroyed`` rather than ``expired``). Default 5 min."""

    forward_ttl: float = 60.0
    """After a plain ``renew()`` (same identity), requests still in flight with the old token
    may save *data* into the renewed session for this long; loads of the old token find
    nothing at once. After a renew that changed identity (see ``identity_keys``) the old token
    has no power at all. Default 60 s."""

    identity_keys: frozenset[str] = DEFAULT_IDENTITY_KEYS
    """Session keys that say who the user is. A save that changes one of them (a new value,
    or a delete; writing the stored value again changes nothing), changes the bound user
    (``user_id``, ``login()``), or follows ``clear()`` with new data, renews the token by
    itself, and the old token then loads, saves and destroys nothing (session fixation
    protection without a call to ``login()``). Default: :data:`DEFAULT_IDENTITY_KEYS`
    (``user``, ``user_id``, ``username``, ``uid``, ``account_id``, ``email``, ``logged_in``,
    Flask-Login's
    ``_user_id`` and ``_fresh``, Django's ``_auth_user_id``, ``_auth_user_backend`` and
    ``_auth_user_hash``). Pass
    ``DEFAULT_IDENTITY_KEYS | {"member"}`` to add your own."""

    socket_timeout: float = 2.0
    """Per-command socket timeout. Default 2 s."""

    connect_timeout: float = 2.0
    """TCP / Unix connect timeout. Default 2 s."""

    retries: int = 2
    """Extra attempts for idempotent operations (load, destroy, listings) after a connection
    error, with a short backoff. Saves are never resent. Default 2."""

    retry_backoff: float = 0.05
    """Base of the exponential backoff between retries. Default 50 ms."""

    max_connections: int = 64
    """Connection pool size. Standalone pools block (up to ``connect_timeout``) when all
    connections are in use instead of failing. Default 64."""

    primary_check_interval: float = 0.5
    """Sentinel only: how often the store asks the sentinels which node is the primary, as
    a backstop to their ``+switch-master`` announcements (which it follows at once), and to
    notice a failover under way; also re-checked after every error. Default 0.5 s."""

    stall_limit: float = 1.0
    """Cluster only: a node may have been frozen (SIGSTOP, a VM pause) while the cluster
    promoted one of its replicas; woken up, it answers and takes writes as a primary for a
    moment before it learns it was replaced: those writes are lost, those reads may be
    stale. So a node is not trusted while a batch sent to it more than ``stall_limit``
    seconds ago is unanswered, nor for ``stall_limit`` seconds after one took it longer
    than that to answer, or timed out (a replicated save's ``wait_timeout`` not counted):
    a save answered then raises :class:`~stickless.errors.StoreUnavailable` with
    ``applied=None`` (a 503: the client is not told "saved"), a load is sent again on a
    reloaded slot map (and raises the same once its ``retries`` are used up). Other nodes
    are not affected, except that a stalled batch spread over several nodes (a login's save
    and user index) makes each of them suspect. Slowness on the app's side (a blocked event
    loop) counts too. Keep it below the servers' ``cluster-node-timeout`` (a shorter freeze
    cannot end in a failover) and below ``socket_timeout``. 0 turns it off. Default 1 s."""

    client_options: dict[str, object] = field(default_factory=dict)
    """Extra keyword arguments passed to the redis-py client (e.g. ``{"protocol": 2}``)."""

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "absolute_timeout", "forward_ttl", "tombstone_ttl"):
            if not getattr(self, name) >= 0.001:  # sent to Redis in whole milliseconds
                raise ConfigurationError(f"SessionConfig.{name} must be at least 0.001 (1 ms)")
        positive = (
            "socket_timeout",
            "connect_timeout",
            "primary_check_interval",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"SessionConfig.{name} must be > 0")
        if self.max_idle_ms < self.idle_ms or self.max_absolute_ms < self.absolute_ms:
            raise ConfigurationError(
                "SessionConfig.max_idle_timeout / max_absolute_timeout must be at least "
                "idle_timeout / absolute_timeout"
            )
        if self.absolute_timeout < self.idle_timeout:
            raise ConfigurationError(
                f"SessionConfig.absolute_timeout ({self.absolute_timeout}) must be >= "
                f"idle_timeout ({self.idle_timeout})"
            )
        if self.touch_interval < 0:
            raise ConfigurationError("SessionConfig.touch_interval must be >= 0")
        if not self.stall_limit >= 0:
            raise ConfigurationError("SessionConfig.stall_limit must be >= 0 (0: off)")
        if self.durability not in ("none", "replicated"):
            raise ConfigurationError(
                f"SessionConfig.durability must be 'none' or 'replicated', not {self.durability!r}"
            )
        cap = self.max_sessions_per_user
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigurationError(
                f"SessionConfig.max_sessions_per_user must be None or an int >= 1, not {cap!r}"
            )
        if self.on_limit not in ("evict_oldest", "refuse"):
            raise ConfigurationError(
                f"SessionConfig.on_limit must be 'evict_oldest' or 'refuse', not {self.on_limit!r}"
            )
        if self.max_size <= 0 or self.min_replicas < 0 or self.retries < 0:
            raise ConfigurationError("max_size must be > 0, min_replicas and retries >= 0")
        if not self.retry_backoff >= 0:
            raise ConfigurationError(
                f"SessionConfig.retry_backoff must be >= 0 (seconds), not {self.retry_backoff!r}"
            )
        if not self.key_prefix or any(c in self.key_prefix for c in "{} "):
            raise ConfigurationError("key_prefix must be non-empty, without braces or spaces")
        if isinstance(self.identity_keys, str) or not all(
            isinstance(k, str) for k in self.identity_keys
        ):
            raise ConfigurationError("SessionConfig.identity_keys must be a set of key names")
        object.__setattr__(self, "identity_keys", frozenset(self.identity_keys))
        if self.device_ip not in ("full", "truncated", "none"):
            raise ConfigurationError(
                "SessionConfig.device_ip must be 'full', 'truncated' or 'none', "
                f"not {self.device_ip!r}"
            )
        if self.encryption_keys is not None:
            if isinstance(self.encryption_keys, str | bytes):
                raise ConfigurationError(
                    "SessionConfig.encryption_keys must be a list of keys, newest first"
                )
            from stickless.crypto import ValueCipher  # noqa: PLC0415  (the crypto extra)

            ValueCipher(self.encryption_keys)  # each key checked now, never echoed
        if isinstance(self.secret_key, str | bytes) and not self.secret_key:
            raise ConfigurationError("secret_key must be non-empty (or None)")

    def with_options(self, **changes: object) -> SessionConfig:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def idle_ms(self) -> int:
        return int(self.idle_timeout * 1000)

    @property
    def absolute_ms(self) -> int:
        return int(self.absolute_timeout * 1000)

    @property
    def max_idle_ms(self) -> int:
        limit = self.max_idle_timeout if self.max_idle_timeout is not None else self.idle_timeout
        return int(limit * 1000)

    @property
    def max_absolute_ms(self) -> int:
        limit = self.max_absolute_timeout
        return int((limit if limit is not None else self.absolute_timeout) * 1000)
