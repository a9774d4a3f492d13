"""A FastAPI app with stickless sessions: cart, visit counter, login, logout, devices.

Run it with one command::

    python examples/fastapi_app.py          # http://127.0.0.1:8000/docs

It uses the Redis / Valkey named by ``STICKLESS_URL`` (e.g. ``redis://127.0.0.1:6379/0``);
without it, an embedded Valkey is started for the life of the process (needs
``pip install 'stickless[embedded]'``). ``PORT`` chooses the port (default 8000).

Try it with curl (``-c``/``-b`` keep the cookie)::

    curl -c jar -b jar -X POST localhost:8000/cart/apple
    curl -c jar -b jar -X POST localhost:8000/login -H 'content-type: application/json' \\
         -d '{"user": "alice"}'
    curl -c jar -b jar localhost:8000/
    curl -c jar -b jar localhost:8000/devices
    curl -c jar -b jar -X POST localhost:8000/logout-everywhere
    curl -c jar -b jar -X POST localhost:8000/logout
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from stickless import AsyncSessionStore, Session
from stickless.asgi import SessionMiddleware
from stickless.asgi import session_of as scope_session
from stickless.embedded import start_standalone


class Login(BaseModel):
    user: str


def session_of(request: Request) -> Session:
    """``request.session``, typed as the stickless Session it is (a dict subclass)."""
    return scope_session(request.scope)


def store_of(request: Request) -> AsyncSessionStore:
    return request.scope["stickless.store"]  # type: ignore[no-any-return]


def create_app(url: str) -> FastAPI:
    """The app, with its sessions in the store at ``url``."""
    app = FastAPI(title="stickless + FastAPI")
    app.add_middleware(SessionMiddleware, url=url)

    @app.get("/")
    async def home(request: Request) -> dict[str, Any]:
        session = session_of(request)
        visits = session.incr("visits")  # atomic: concurrent tabs never lose a count
        return {"user": session.user_id, "visits": visits, "cart": session.get("cart", [])}

    @app.post("/cart/{item}")
    async def add_to_cart(item: str, request: Request) -> list[str]:
        session = session_of(request)
        cart: list[str] = session.setdefault("cart", [])
        cart.append(item)  # in-place change: detected at save
        return cart

    @app.post("/login")
    async def login(body: Login, request: Request) -> dict[str, str]:
        # binds the user (indexed for "devices" / "log out everywhere") and renews the token
        session_of(request).login(body.user)
        return {"logged_in": body.user}

    @app.post("/logout")
    async def logout(request: Request) -> dict[str, bool]:
        session_of(request).logout()  # destroyed at save; the cookie is deleted
        return {"logged_out": True}

    @app.get("/devices")
    async def devices(request: Request) -> list[dict[str, Any]]:
        user = session_of(request).user_id
        if user is None:
            raise HTTPException(401, "log in first")
        infos = await store_of(request).sessions_for(user)
        return [
            {"id": i.session_id[-10:], "created": i.created_at, "last_seen": i.last_access}
            for i in infos
        ]

    @app.post("/logout-everywhere")
    async def logout_everywhere(request: Request) -> dict[str, int]:
        session = session_of(request)
        if session.user_id is None:
            raise HTTPException(401, "log in first")
        revoked = await store_of(request).revoke_user(session.user_id, keep=session)
        return {"other_sessions_ended": revoked}

    return app


def main() -> None:
    url = os.environ.get("STICKLESS_URL")
    port = int(os.environ.get("PORT", "8000"))
    with contextlib.ExitStack() as stack:
        if not url:
            url = stack.enter_context(start_standalone()).url
            print(f"STICKLESS_URL not set: started an embedded Valkey at {url}")
        uvicorn.run(create_app(url), host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
