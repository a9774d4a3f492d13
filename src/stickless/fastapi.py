"""FastAPI: the session as a typed dependency.

::

    from fastapi import Depends, FastAPI
    from stickless import Session
    from stickless.asgi import SessionMiddleware
    from stickless.fastapi import session

    app = FastAPI()
    app.add_middleware(SessionMiddleware, url="redis://127.0.0.1:6379/0", lazy=True)

    @app.get("/cart")
    async def cart(s: Session = Depends(session)) -> dict[str, int]:
        return {"items": s.incr("items")}

With ``lazy=True`` only the routes that declare the dependency load the session (one round
trip when a cookie is present); the others cost none. Without it, the dependency returns the
session the middleware already loaded.

``Depends(passive_session)`` (``lazy=True``) reads it without sliding the idle timeout: a poll
("you will be logged out in 2 minutes") that must not keep the session alive::

    @app.get("/session/status")
    async def status(s: Session = Depends(passive_session)) -> dict[str, float | None]:
        return {"seconds_left": s.seconds_left}
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from stickless.session import Session
from stickless.web.asgi import load_session

__all__ = ["passive_session", "session"]


async def session(connection: HTTPConnection) -> Session:
    """The request's (or WebSocket's) session, loaded on first use: see
    :func:`stickless.asgi.load_session`."""
    return await load_session(connection)


async def passive_session(connection: HTTPConnection) -> Session:
    """The request's session, read passively (the idle timeout does not slide): see
    :func:`stickless.asgi.load_session` with ``touch=False``."""
    return await load_session(connection, touch=False)
