"""Every exception stickless raises on purpose, in one place.

All of them derive from :class:`SticklessError`, so ``except SticklessError`` catches
anything the library means to tell you.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from stickless.store.failures import Misconfigured, Unavailable, misconfiguration

log = logging.getLogger("stickless.store")


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

    def __new__(cls, *args: Any) -> StoreUnavailable:
        # a refusal of our credentials or permissions is no outage: wherever the error is
        # raised for one, it is a StoreMisconfigured (one classification, store.failures)
        cause = args[1] if len(args) == 2 else None
        wrong = isinstance(cause, Misconfigured) or misconfiguration(cause) is not None
        kind = StoreMisconfigured if cls is StoreUnavailable and wrong else cls
        return super().__new__(kind, *args)

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


class StoreMisconfigured(StoreUnavailable):
    """The server refused our credentials or permissions: ``WRONGPASS`` (wrong user name or
    password), ``NOAUTH`` (a password is required), ``NOPERM`` (the user's ACL denies a
    command or key stickless needs).

    Not an outage: no retry helps until ``setting`` (e.g. "the user name and password in the
    store URL") is fixed, so the store does not retry it, and logs it at ERROR once per cause
    (the message names the setting, never a secret). ``code`` is the server's error code.

    It is a :class:`StoreUnavailable`, so code that catches those keeps working; web
    adapters answer it ``500 Internal Server Error`` without ``Retry-After`` (a server-side
    fault the client cannot wait out), and never fail open on it (see docs/production.md).
    """

    code: str
    setting: str

    def __init__(self, address: str, cause: BaseException) -> None:
        verdict = cause if isinstance(cause, Misconfigured) else misconfiguration(cause)
        super().__init__(address, verdict or cause)
        self.code = verdict.code if verdict else "ERR"
        self.setting = verdict.setting if verdict else "the store URL"
        detail = verdict.detail if verdict else str(cause)
        Exception.__init__(self, f"session store at {address} refused us: {detail}")
        _log_once(self, address, detail)


_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def _log_once(error: StoreMisconfigured, address: str, detail: str | None) -> None:
    """ERROR log of a misconfiguration, the first time each (address, cause) is seen."""
    key = (address, str(detail))
    with _reported_lock:
        first = key not in _reported and len(_reported) < 1000
        if first:
            _reported.add(key)
    if first:
        log.error("%s (fix %s; logged once)", error, error.setting)


class SessionTooLarge(SticklessError):
    """The encoded session is larger than ``SessionConfig.max_size``; nothing was written."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"session is {size} bytes encoded, above max_size={limit} bytes; nothing was saved "
            "(store large data elsewhere and keep a reference in the session)"
        )


class ServerError(SticklessError):
    """The server answered with an error stickless does not expect here (for example an ACL
    refusing a command: ``NOPERM``). ``code`` is the error's first word, ``message`` the
    whole reply. Errors that mean "not available right now" are :class:`StoreUnavailable`
    instead."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"the server answered: {message}")


class SessionConflict(SticklessError):
    """A save could not be applied because Redis holds something incompatible.

    Raised when ``incr`` meets a value that is not an integer, or when a brand-new
    session's token already exists (a token collision, which 256 random bits make
    practically impossible). Nothing of the save was written.
    """


class TooManySessions(SticklessError):
    """A login would give its user more live sessions than
    ``SessionConfig.max_sessions_per_user`` allows, with ``on_limit="refuse"``.

    Raised by the save that binds the user (``session.login(...)``, ``user_id = ...``, or a
    framework's login through the adapters). **Nothing of that save was written**: the
    session in Redis is as it was (anonymous, or still bound to its previous user), and the
    :class:`~stickless.Session` object keeps its pending changes, so saving it again (after
    the app made room, e.g. with ``store.revoke_user(user_id)``) retries the login. To give
    the login up, undo it (``session.user_id = None``, or ``session.logout()``).

    It is not a :class:`StoreUnavailable`: web adapters never turn it into a 503; it reaches
    the app (see docs/core.md, "A cap on sessions per user"). ``limit`` is the cap. The
    message never names the user.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"login refused: the user already has {limit} live session(s), the most "
            f"max_sessions_per_user allows (on_limit='refuse'); nothing was saved"
        )


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
