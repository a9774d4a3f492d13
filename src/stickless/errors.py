"""Every exception stickless raises on purpose, in one place.

All of them derive from :class:`SticklessError`, so ``except SticklessError`` catches
anything the library means to tell you.
"""

from __future__ import annotations

from stickless.store.failures import Unavailable


class SticklessError(Exception):
    """Base class of all stickless errors."""


class ConfigurationError(SticklessError, ValueError):
    """A setting or URL is invalid; the message says which one and why."""


class StoreUnavailable(SticklessError):
    """Redis / Valkey cannot serve the operation right now.

    Raised when the server could not be reached or did not answer in time, and for every
    answer meaning "not now": a failover under way (the store refuses writes while Sentinel
    moves the primary), a node that is no longer the primary (``READONLY``, ``MASTERDOWN``),
    a cluster that is down or resharding (``CLUSTERDOWN``, ``TRYAGAIN``), a server loading
    its data (``LOADING``), fencing (``NOREPLICAS``: ``min-replicas-to-write`` not met),
    ``BUSY``, ``MISCONF``, ``OOM``, and redis-py failing internally while it reconnects.

    ``address`` names the server (or topology) that failed, ``cause`` is the underlying
    exception (or error reply). ``applied`` says what became of a *save*: ``False`` when it
    was refused or never sent (nothing was written), ``None`` when unknown (the answer was
    lost: it may have been applied), ``True`` for :class:`ReplicationTimeout`. Web adapters
    turn this into a 503 with ``Retry-After`` (or an empty, unsaved session when configured
    to fail open).
    """

    applied: bool | None
    """What became of a save: False (nothing written), None (unknown), True (written)."""

    def __init__(self, address: str, cause: BaseException) -> None:
        # the executors' verdict (stickless.store.failures.Unavailable) stands for its cause
        detail: str | None = None
        self.applied = None
        if isinstance(cause, Unavailable):
            detail, self.applied = cause.detail, cause.applied
            cause = cause.cause if cause.cause is not None else cause
        self.address = address
        self.cause = cause
        reason = detail or f"{type(cause).__name__}: {cause}"
        super().__init__(f"session store at {address} unavailable: {reason}")


class SessionTooLarge(SticklessError):
    """The encoded session is larger than ``SessionConfig.max_size``; nothing was written."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"session is {size} bytes encoded, above max_size={limit} bytes; nothing was saved "
            "(store large data elsewhere and keep a reference in the session)"
        )


class SessionConflict(SticklessError):
    """A save could not be applied because Redis holds something incompatible.

    Raised when ``incr`` meets a value that is not an integer, or when a brand-new
    session's token already exists (a token collision, which 256 random bits make
    practically impossible). Nothing of the save was written.
    """


class ReplicationTimeout(StoreUnavailable):
    """``durability="replicated"``: fewer replicas acknowledged the save than required.

    **Applied, not replicated.** The save *was* applied on the primary (``applied`` is
    True; the Session object reflects it, and later loads see it) but fewer than
    ``min_replicas`` replicas confirmed it within ``wait_timeout``: it may be lost if the
    primary fails before replicating it. It is not resent (an ``incr`` would count twice).
    ``acknowledged`` and ``required`` give the counts.

    It is a :class:`StoreUnavailable`: the store cannot currently give the durability asked
    for, so web adapters answer it like an outage, 503 with ``Retry-After`` by default (the
    client was not told "saved" and may retry; a retried request re-applies its changes on
    top of the write that is already there), or carry on when configured to fail open.
    """

    def __init__(self, acknowledged: int, required: int, timeout_ms: int) -> None:
        self.acknowledged = acknowledged
        self.required = required
        self.applied = True
        self.address = "replicas"
        self.cause = TimeoutError(f"WAIT {required} {timeout_ms}")
        SticklessError.__init__(
            self,
            f"save applied on the primary, not replicated: acknowledged by {acknowledged} "
            f"replica(s) within {timeout_ms} ms, {required} required (it may be lost if the "
            "primary fails before replicating it; not resent)",
        )
