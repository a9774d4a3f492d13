"""Which failures mean "the store is not available right now", decided in one place.

Both executors (``sync.py``, ``aio.py``) pass every exception and every reply through
:func:`classify_error` / :func:`screen_replies` (via ``StoreBase``); the planner only ever
sees :class:`Unavailable` for them, turns it into :class:`~stickless.errors.StoreUnavailable`
and retries what is idempotent. Web adapters answer a ``StoreUnavailable`` with 503 and
``Retry-After`` (or fail open), never with a 500.

This module does not import redis-py: it reads server error *codes* (the first word of an
error reply, which redis-py keeps in ``status_code``) and exception types by name, so that
the sans-IO planner can depend on it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

log = logging.getLogger("stickless.store")

UNAVAILABLE_CODES: Final = frozenset(
    {
        "CLUSTERDOWN",  # the cluster (or the slot's owner) is down
        "TRYAGAIN",  # a multi-key command during a slot migration
        "UNBLOCKED",  # a blocked command (WAIT) cut short: the node was demoted
        "MASTERDOWN",  # a replica that lost its primary (replica-serve-stale-data no)
        "LOADING",  # the server is loading its data set (restart, full sync)
        "READONLY",  # a replica: the node we talk to is no primary (any more)
        "NOREPLICAS",  # fencing: min-replicas-to-write not met
        "BUSY",  # a script or module command runs past busy-reply-threshold
        "MISCONF",  # persistence failing: the server refuses writes
        "OOM",  # maxmemory reached with noeviction: the server refuses writes
    }
)
"""Error replies that mean "not available right now": the command was refused before it
ran (scripts included: the refusal hits their first write, so nothing was written)."""

ROLE_CODES: Final = frozenset({"READONLY", "MASTERDOWN", "LOADING"})
"""Error replies saying that the node is not a usable primary: a Sentinel-managed store
re-checks the named primary and reconnects."""

_REDIS_INTERNAL: Final = (AttributeError, TypeError, KeyError, IndexError)
"""Bugs of redis-py itself seen while a client reconnects (e.g. a cluster client closing
connections under a running command): an outage, not a bug of the app."""


class Unavailable(Exception):
    """An executor's verdict: the store could not serve this batch right now.

    Raised by the executors (never seen by users: the planner turns it into
    :class:`~stickless.errors.StoreUnavailable`). ``cause`` is the underlying exception or
    error reply (None when the executor refused on its own, e.g. during a failover);
    ``detail`` explains it; ``applied`` says whether a write took effect: False (refused
    before it ran, or never sent), None (unknown: the answer was lost). ``role`` is True
    when the node answered that it is not a usable primary.
    """

    def __init__(
        self,
        cause: BaseException | None,
        detail: str | None = None,
        *,
        applied: bool | None = None,
        role: bool = False,
    ) -> None:
        self.cause = cause
        self.detail = detail
        self.applied = applied
        self.role = role
        text = detail or (f"{type(cause).__name__}: {cause}" if cause is not None else "")
        super().__init__(text)


class SlotMoved(Unavailable):
    """A cluster save refused unsent: its session's slot is owned by another node than the
    one it was loaded from (see :class:`~stickless.store.plan.Locate`). The planner asks
    the new owner whether the session is still as loaded before giving up."""


def error_code(error: BaseException) -> str | None:
    """The server's error code of an error reply (``"READONLY"``, ``"CLUSTERDOWN"``...).

    redis-py strips the code of the errors it knows from the message and keeps it in
    ``status_code``; unknown ones keep it as the message's first word."""
    code = getattr(error, "status_code", None)
    text = str(error)
    if code in (None, "ERR", "@user_script:") and text.startswith(_SCRIPT_PREFIXES):
        # Redis < 7.0 wraps a script's error as ERR "Error running script (call to f_...):
        # @user_script:95: @user_script: 95: -READONLY You can't write..." (an error a script
        # caught with pcall and returned: "@user_script: 73: -NOREPLICAS ..."); the code is in
        inner = _SCRIPT_ERROR.search(text)
        return inner.group(1) if inner else "ERR"
    if isinstance(code, str) and code:
        return code
    first = text.split(" ", 1)[0]
    return first if first.isupper() and first.isalpha() else None


_SCRIPT_ERROR: Final = re.compile(r": -([A-Z]+) ")
_SCRIPT_PREFIXES: Final = ("Error running script", "@user_script")


def _is_error_reply(reply: object) -> bool:
    """An error the server answered (redis-py: a ``ResponseError``, or an error it built
    from a reply and tagged with its code, such as ``BusyLoadingError`` for LOADING)."""
    return isinstance(reply, Exception) and (
        isinstance(getattr(reply, "status_code", None), str)
        or any(cls.__name__ == "ResponseError" for cls in type(reply).__mro__)
    )


def unavailable_reply(reply: object) -> Unavailable | None:
    """The verdict on one reply: an :class:`Unavailable` when it is an error reply meaning
    "not available right now" (the command was refused before it ran), a
    :class:`Misconfigured` for a refusal no retry will change (see :func:`misconfiguration`),
    else None."""
    if not _is_error_reply(reply):
        return None
    assert isinstance(reply, Exception)
    wrong = misconfiguration(reply)
    if wrong is not None:
        return wrong
    code = error_code(reply)
    if code not in UNAVAILABLE_CODES:
        return None
    return Unavailable(reply, applied=False, role=code in ROLE_CODES)


def screen_replies(replies: Sequence[Any], idempotent: bool) -> None:
    """Raise :class:`Unavailable` when the batch's replies say the store is unavailable.

    Every reply of an idempotent batch counts (it is retried as a whole). Of a batch that is
    not (a save), only the first reply does: when the save itself ran, a refusal of a later
    command (the user index, a hint repaired lazily) must not report an applied save as
    failed."""
    for i, reply in enumerate(replies):
        if i and not idempotent:
            return
        verdict = unavailable_reply(reply)
        if verdict is not None:
            raise verdict


def raised_inside(error: BaseException, packages: Iterable[str]) -> bool:
    """Was ``error`` raised by code of one of ``packages`` (its innermost frame)?"""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return any(module == p or module.startswith(p + ".") for p in packages)


def classify_error(
    error: BaseException, unavailable_types: tuple[type[BaseException], ...]
) -> BaseException:
    """``error`` as the planner should see it: an :class:`Unavailable` when it means "not
    available right now", else ``error`` itself (a bug, surfacing as such).

    ``unavailable_types`` are the client library's exception types for connection errors
    and timeouts (the executors pass redis-py's); an error reply raised as an exception is
    judged by its code; an ``AttributeError``/``TypeError``/``KeyError``/``IndexError``
    raised inside redis-py itself counts as an outage (logged with its traceback)."""
    if isinstance(error, Unavailable):
        return error
    wrong = misconfiguration(error)
    if wrong is not None:
        return wrong
    verdict = unavailable_reply(error)
    if verdict is not None:
        return verdict
    if isinstance(error, unavailable_types):
        return Unavailable(error)
    if isinstance(error, _REDIS_INTERNAL) and raised_inside(error, ("redis",)):
        log.warning("redis-py failed internally; answered as unavailable", exc_info=error)
        return Unavailable(error, f"redis-py internal error: {type(error).__name__}: {error}")
    return error


# ------------------------------------------------------------- misconfiguration
_FIXES: Final = {
    "WRONGPASS": (
        "the user name and password in the store URL",
        "the server refused the user name / password (WRONGPASS): fix them in the store URL "
        "(STICKLESS_URL, --url); percent-encode special characters of the password "
        "(urllib.parse.quote(password, safe=''))",
    ),
    "NOAUTH": (
        "the password in the store URL",
        "the server requires a password (NOAUTH): put it in the store URL, "
        "redis://USER:PASSWORD@HOST:PORT/0 (percent-encoded)",
    ),
    "AUTH": (
        "the password in the store URL",
        "the store URL gives a password but the server has none for that user: remove it "
        "from the URL, or set one on the server",
    ),
    "NOPERM": (
        "the ACL of the store URL's user",
        "the server's ACL refused a command ({message}): grant the store URL's user what "
        "stickless needs (docs/production.md has the ACL; `stickless check` names what is "
        "missing)",
    ),
}
_AUTH_ERRORS: Final = frozenset({"AuthenticationError", "AuthenticationWrongNumberOfArgsError"})
_ACL_TEXTS: Final = (
    "no permissions to run",  # NOPERM, and Valkey's "ACL failure in script: User x has no..."
    "no permissions to access",  # a key or channel outside the user's patterns
    "can't run this command or subcommand",  # Redis 6.2 / 7.0, inside a script
    "can't access at least one of the keys",  # the same for keys
)
"""How an ACL refusal reads when it is not a NOPERM reply (a script's ERR on Redis 6.2 /
7.0 / Valkey)."""


def is_acl_refusal(text: str) -> bool:
    """Does this error text say that the user's ACL refused a command or a key?"""
    lowered = text.lower()
    return lowered.startswith("noperm") or any(t.lower() in lowered for t in _ACL_TEXTS)


class Misconfigured(Unavailable):
    """An executor's verdict: the server refused our credentials or permissions
    (``WRONGPASS``, ``NOAUTH``, ``NOPERM``). No retry helps until ``setting`` is fixed; the
    planner raises :class:`~stickless.errors.StoreMisconfigured` at once."""

    def __init__(self, cause: BaseException, code: str, setting: str, detail: str) -> None:
        super().__init__(cause, detail, applied=None if code == "NOPERM" else False)
        self.code = code
        self.setting = setting


def misconfiguration(error: object) -> Misconfigured | None:
    """A :class:`Misconfigured` when ``error`` (raised, or an error reply) is a refusal of
    our credentials or permissions, else None. Its ``detail`` says what to fix and never
    holds a secret (the server's own NOPERM message names a user and a command only)."""
    if not isinstance(error, BaseException):
        return None
    code = error_code(error)
    if code not in _FIXES:
        if is_acl_refusal(str(error)):
            code = "NOPERM"  # inside a script the refusal is an ERR
        elif not any(cls.__name__ in _AUTH_ERRORS for cls in type(error).__mro__):
            return None
        else:
            code = "AUTH" if "without any password configured" in str(error) else "WRONGPASS"
    assert code is not None
    setting, detail = _FIXES[code]
    message = str(error).strip()
    if not message.startswith(code):
        message = f"{code} {message}"
    return Misconfigured(error, code, setting, detail.format(message=message))
