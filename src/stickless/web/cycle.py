"""One request's session, from the presented token to the response headers (no I/O).

The ASGI and WSGI middlewares differ only in how they do I/O (awaited or blocking) and how
they reach the request and the response. Everything they decide alike lives here:

* which token the request presented (:meth:`Transport.read_token`);
* what the store being unavailable means for this request (:class:`FailurePolicy`): answer
  503, or go on with a fresh session that is never saved (fail-open);
* which headers the response gets after the save (:meth:`SessionCycle.response_headers`):
  the cookie is touched only when the session was used, and every response that sets or
  deletes it, or that read the session, carries ``Vary``;
* whether changes made *after* the response headers went out may still be saved: only when
  they do not need a token the client has not got (see :meth:`SessionCycle.late_save_allowed`).
"""

from __future__ import annotations

import logging

from stickless.errors import StoreUnavailable
from stickless.session import Session, SessionStatus
from stickless.web.options import MiddlewareOptions

log = logging.getLogger("stickless.web")


class SessionCycle:
    """Bookkeeping of one request's session. Adapters create one per request.

    ``session`` is None until the adapter calls :meth:`begin` (a lazy adapter calls it on
    first access only, so an untouched request costs no round trip and sends no header).
    """

    __slots__ = ("delivered", "https", "options", "presented", "refused", "saveable", "session")

    def __init__(
        self,
        options: MiddlewareOptions,
        *,
        cookie_header: str | None,
        token_header: str | None,
        https: bool,
    ) -> None:
        self.options = options
        self.https = https
        self.presented: str | None = options.transport.read_token(cookie_header, token_header)
        """The token the request carried (unvalidated; the store validates), or None."""
        self.session: Session | None = None
        self.saveable = True
        """False after a fail-open: the session is a stand-in and is never saved."""
        self.delivered = False
        """True once the response headers (with the session's) were handed on."""
        self.refused = False
        """True once the request was answered with the failure policy's response."""

    @property
    def needs_load(self) -> bool:
        """True when a token was presented, so :meth:`begin` needs ``store.load`` first."""
        return self.presented is not None

    def begin(self, session: Session) -> Session:
        """Record the request's session: the loaded one, or ``store.new()`` when the token
        was absent, unknown, expired, malformed or forged."""
        self.session = session
        return session

    def fail(self, exc: StoreUnavailable, during: str, stand_in: Session | None = None) -> bool:
        """The store failed ``during`` ``"load"`` or ``"save"``. Logs it (no token, no data)
        and returns True when the request must be refused (503, fail closed). With
        ``fail_open`` it returns False and the session becomes unsaveable; ``stand_in``
        (a ``store.new()``) replaces a session that could not be loaded."""
        self.options.policy.report(exc, during)
        if not self.options.policy.fail_open:
            self.refused = True
            return True
        self.saveable = False
        if self.session is None and stand_in is not None:
            self.session = stand_in
        return False

    def end_if_emptied(self) -> None:
        """Before the save: a stored session the request emptied ends (destroyed, cookie
        deleted), as with Starlette's and Flask's own sessions."""
        if self.session is not None and self.session.emptied:
            self.session.invalidate()

    @property
    def should_save(self) -> bool:
        """True when a save must run before the response headers go out."""
        return self.session is not None and self.saveable

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers to add to the response once the session was saved (call after the save).

        ``Set-Cookie`` / token header only when the client's token changed (first save,
        renewal) or ended: a deletion cookie goes out only when the request *used* the
        session (read or wrote it, or logged out), so a route that never touches it leaves
        even an unknown or expired cookie alone. ``Vary`` (``Cookie`` and the token header)
        whenever the session was used, hence on every response that sets or deletes the
        cookie: a shared cache must never hand one client's ``Set-Cookie`` to another, even
        when the app marked the response ``Cache-Control: public``. Nothing for an untouched
        request or a fail-open stand-in.
        """
        self.delivered = True
        session = self.session
        if session is None or not self.saveable or not self._used(session):
            return []
        transport = self.options.transport
        headers = transport.response_headers(self.presented, session, https=self.https)
        if transport.cookie is not None:
            headers.append(("Vary", "Cookie"))
        if transport.header:
            headers.append(("Vary", transport.header))
        return headers

    def _used(self, session: Session) -> bool:
        """True when the request used the session (after the save): it read or wrote it,
        ended it, or the save gave it a token the client does not hold yet."""
        return (
            session.accessed
            or session.status is SessionStatus.INVALIDATED
            or (session.meta is not None and session.token != self.presented)
        )

    def late_save_allowed(self) -> bool:
        """After the headers went out: True when the session has changes that can still be
        saved under the token the client already holds (data changes, ``incr``, ``logout``
        of a stored session). A brand-new session, a pending renewal, or data written after
        ``logout()`` would need a new token that can no longer reach the client: those
        changes are dropped, with a warning (never showing the data)."""
        session = self.session
        if session is None or not self.saveable or not session.modified:
            return False
        needs_new_token = (
            session.meta is None
            or session.renew_pending
            or (session.status is SessionStatus.INVALIDATED and dict.__len__(session) > 0)
        )
        if needs_new_token:
            log.warning(
                "session changed after the response headers were sent in a way that needs a "
                "new token (new session, renew/login, or data after logout): not saved"
            )
            return False
        return True
