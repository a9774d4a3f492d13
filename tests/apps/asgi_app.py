"""The Starlette app run by tests/test_multiprocess_asgi.py in several uvicorn processes.

Reads the store URL from ``STICKLESS_URL``. Every response carries ``X-Server-Pid`` so the
test can see which process answered.
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from stickless import AsyncSessionStore
from stickless.asgi import SessionMiddleware, session_of

PID = {"X-Server-Pid": str(os.getpid())}


async def health(request: Request) -> Response:
    return PlainTextResponse("ok", headers=PID)


async def read(request: Request) -> Response:
    return JSONResponse(request.session, headers=PID)


async def set_values(request: Request) -> Response:
    request.session.update(request.query_params)
    return PlainTextResponse("set", headers=PID)


async def incr(request: Request) -> Response:
    return PlainTextResponse(str(session_of(request.scope).incr("n")), headers=PID)


async def login(request: Request) -> Response:
    session_of(request.scope).login(request.path_params["user"])
    return PlainTextResponse("in", headers=PID)


async def logout(request: Request) -> Response:
    session_of(request.scope).logout()
    return PlainTextResponse("out", headers=PID)


async def slow_set(request: Request) -> Response:
    """Changes the session, tells the test it has loaded (a Redis counter), then sleeps: the
    save happens at the end, possibly after a logout that raced it."""
    request.session[request.query_params["key"]] = "late"
    session_of(request.scope).incr("slow")
    store: AsyncSessionStore = request.scope["stickless.store"]
    await store.client.incr("test:slow-loaded")
    await asyncio.sleep(float(request.query_params["delay"]))
    return PlainTextResponse("slow done", headers=PID)


async def signin(request: Request) -> Response:
    """Log in the way Starlette apps do: write the user into the session (no login())."""
    request.session["user"] = request.path_params["user"]
    return PlainTextResponse("signed in", headers=PID)


async def whoami(request: Request) -> Response:
    return JSONResponse({"user": request.session.get("user")}, headers=PID)


async def slow_logout(request: Request) -> Response:
    """A logout that takes its time: loads, tells the test, sleeps; destroys at the end."""
    session_of(request.scope).logout()
    store: AsyncSessionStore = request.scope["stickless.store"]
    await store.client.incr("test:slow-loaded")
    await asyncio.sleep(float(request.query_params["delay"]))
    return PlainTextResponse("slow logout done", headers=PID)


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/read", read),
        Route("/set", set_values),
        Route("/incr", incr),
        Route("/login/{user}", login),
        Route("/logout", logout),
        Route("/slow-set", slow_set),
        Route("/signin/{user}", signin),
        Route("/whoami", whoami),
        Route("/slow-logout", slow_logout),
    ],
    middleware=[Middleware(SessionMiddleware, url=os.environ["STICKLESS_URL"])],
)
