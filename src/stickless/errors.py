"""Every exception stickless raises on purpose, in one place.

All of them derive from :class:`SticklessError`, so ``except SticklessError`` catches
anything the library means to tell you.
"""

from __future__ import annotations


class SticklessError(Exception):
    """Base class of all stickless errors."""


class ConfigurationError(SticklessError, ValueError):
    """A setting or URL is invalid; the message says which one and why."""


class StoreUnavailable(SticklessError):
    """Redis / Valkey could not be reached or did not answer in time.

    ``address`` names the server (or topology) that failed, ``cause`` is the underlying
    exception. Web adapters turn this into a 503 (or an empty, unsaved session when
    configured to fail open).
    """

    def __init__(self, address: str, cause: BaseException) -> None:
        self.address = address
        self.cause = cause
        super().__init__(f"session store at {address} unavailable: {type(cause).__name__}: {cause}")


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

    The save *was* applied on the primary (the Session object reflects it); it may be lost
    if the primary fails before replicating it. ``acknowledged`` and ``required`` give the
    counts. It is a :class:`StoreUnavailable` (the store cannot currently give the durability
    asked for), so web adapters answer it like an outage: 503 by default, or carry on when
    configured to fail open.
    """

    def __init__(self, acknowledged: int, required: int, timeout_ms: int) -> None:
        self.acknowledged = acknowledged
        self.required = required
        self.address = "replicas"
        self.cause = TimeoutError(f"WAIT {required} {timeout_ms}")
        SticklessError.__init__(
            self,
            f"save acknowledged by {acknowledged} replica(s) within {timeout_ms} ms, "
            f"{required} required (the write is on the primary only)",
        )
