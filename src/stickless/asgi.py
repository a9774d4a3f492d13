"""``from stickless.asgi import SessionMiddleware``: Starlette / FastAPI / any ASGI app.

The implementation lives in :mod:`stickless.web.asgi`; see docs/adapters/starlette.md.
"""

from stickless.web.asgi import SessionMiddleware, load_session, session_of

__all__ = ["SessionMiddleware", "load_session", "session_of"]
