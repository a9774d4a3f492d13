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
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from stickless.session import Session
from stickless.web.asgi import load_session

__all__ = ["session"]


async def session(connection: HTTPConnection) -> Session:
    """The request's (or WebSocket's) session, loaded on first use: see
    :func:`stickless.asgi.load_session`."""
    return await load_session(connection)
