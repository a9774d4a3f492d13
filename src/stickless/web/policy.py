"""What adapters do when the session store is unreachable: one policy for all of them.

Fail closed (default): the request is answered ``503 Service Unavailable`` with a short
plain-text body and ``Retry-After``, never after more than the store's configured timeouts
(``connect_timeout`` / ``socket_timeout`` times ``retries + 1`` for a load). Nothing is
retried across requests: the next request tries Redis again, so the app recovers by itself
as soon as Redis is back.

Fail open (``fail_open=True``): the request goes on with an empty session that is *not*
saved, and a warning is logged (without the token). Use it when serving anonymous pages
matters more than the session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stickless.errors import StoreUnavailable

log = logging.getLogger("stickless.web")


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """How to answer when the store is unavailable."""

    fail_open: bool = False
    status: int = 503
    body: bytes = b"Session store unavailable, please retry shortly.\n"
    retry_after: int = 1

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(self.body))),
            ("Retry-After", str(self.retry_after)),
            ("Cache-Control", "no-store"),
        ]

    def report(self, exc: StoreUnavailable, during: str) -> None:
        """Log the failure once (address and cause only: no token, no session data)."""
        action = "continuing with an unsaved empty session" if self.fail_open else "answering 503"
        log.warning("session %s failed, %s: %s", during, action, exc)
