"""The ASGI (Starlette) app of the fault suite, served by uvicorn. See :mod:`faults.apps`."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from faults.apps import COOKIE, session_config, store_url
from stickless.asgi import SessionMiddleware, session_of


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def write(request: Request) -> Response:
    seq = int(request.query_params["i"])
    session = session_of(request.scope)
    count = session.incr("n")
    session["cart"] = [*session.get("cart", []), seq]
    return JSONResponse({"n": count})


app = Starlette(
    routes=[Route("/health", health), Route("/w", write, methods=["POST"])],
    middleware=[
        Middleware(
            SessionMiddleware,
            url=store_url(),
            config=session_config(),
            session_cookie=COOKIE,
            exclude_paths=["/health"],
        )
    ],
)
