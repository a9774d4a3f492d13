"""``from stickless.wsgi import SessionMiddleware``: sessions for any WSGI app.

The implementation lives in :mod:`stickless.web.wsgi`; see docs/adapters/wsgi.md.
"""

from stickless.web.wsgi import SESSION_KEY, STORE_KEY, LazySession, SessionMiddleware, get_session

__all__ = ["SESSION_KEY", "STORE_KEY", "LazySession", "SessionMiddleware", "get_session"]
