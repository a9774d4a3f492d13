"""'Your devices' for Starlette and FastAPI: a small Starlette app to mount.

::

    from stickless.web.devices.starlette import devices_app

    app.mount("/account/devices", devices_app())          # Starlette or FastAPI
    # needs stickless.asgi.SessionMiddleware around the app (eager or lazy)

See :mod:`stickless.web.devices` for the routes, the owner checks and the same-origin check
(``trusted_origins``: other origins allowed to post, e.g. ``["https://app.example.com"]``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from stickless.session import Session
from stickless.store.aio import AsyncSessionStore
from stickless.web.asgi import load_session
from stickless.web.devices import (
    MESSAGES,
    NAME_FIELD,
    listing,
    render_page,
    same_origin,
    session_id_or_none,
    wants_json,
)

__all__ = ["devices_app", "devices_routes"]


def devices_routes(*, trusted_origins: Sequence[str] = ()) -> list[Route]:
    """The routes, relative to where they are mounted (for ``Router`` / ``Mount``)."""
    trusted = tuple(trusted_origins)

    async def guard(request: Request) -> tuple[Session, AsyncSessionStore, str] | Response:
        """The session, the store and the user; or the refusal (403 cross-site, 401)."""
        headers = request.headers
        if not same_origin(
            request.method,
            host=headers.get("host"),
            origin=headers.get("origin"),
            referer=headers.get("referer"),
            fetch_site=headers.get("sec-fetch-site"),
            trusted_origins=trusted,
        ):
            return _refuse(request, 403, "cross-site request refused")
        session = await load_session(request)
        store: AsyncSessionStore = request.scope["stickless.store"]
        if session.user_id is None:
            return _refuse(request, 401, "sign in first")
        return session, store, session.user_id

    async def page(request: Request) -> Response:
        checked = await guard(request)
        if isinstance(checked, Response):
            return checked
        session, store, user = checked
        current = session.session_id if session.meta is not None else None
        body = listing(await store.sessions_for(user), current)
        if wants_json(request.headers.get("accept"), request.query_params.get("format")):
            return JSONResponse(body, headers={"Cache-Control": "no-store"})
        done = MESSAGES.get(request.query_params.get("done", ""))
        html = render_page(body, base=_base(request), message=done)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def sign_out(request: Request) -> Response:
        checked = await guard(request)
        if isinstance(checked, Response):
            return checked
        _, store, user = checked
        target = session_id_or_none(request.path_params["session_id"])
        done = target is not None and await store.destroy_id(target, user_id=user)
        return _answer(request, {"signed_out": bool(done)}, "signed-out" if done else "not-found")

    async def sign_out_others(request: Request) -> Response:
        checked = await guard(request)
        if isinstance(checked, Response):
            return checked
        session, store, user = checked
        count = await store.revoke_user(user, keep=session)
        return _answer(request, {"signed_out": count}, "others")

    async def name(request: Request) -> Response:
        checked = await guard(request)
        if isinstance(checked, Response):
            return checked
        session, _, _ = checked
        given = (await _fields(request)).get(NAME_FIELD)
        try:
            session.device_name = given if isinstance(given, str) else None
        except (TypeError, ValueError) as exc:
            return _refuse(request, 400, str(exc))
        return _answer(request, {"name": session.device_name}, "named")

    return [
        Route("/", page, methods=["GET"]),
        Route("/", sign_out_others, methods=["DELETE"]),
        Route("/sign-out-others", sign_out_others, methods=["POST"]),
        Route("/name", name, methods=["POST"]),
        Route("/{session_id}/sign-out", sign_out, methods=["POST"]),
        Route("/{session_id}", sign_out, methods=["DELETE"]),
    ]


def devices_app(*, trusted_origins: Sequence[str] = ()) -> Starlette:
    """The devices pages as an app to mount (``app.mount("/account/devices", ...)``)."""
    return Starlette(routes=devices_routes(trusted_origins=trusted_origins))


def _base(request: Request) -> str:
    """Where the app is mounted, ending in ``/`` (the forms post there)."""
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


def _json_client(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return (
        "json" in kind
        or request.method == "DELETE"
        or wants_json(request.headers.get("accept"), request.query_params.get("format"))
    )


def _answer(request: Request, body: dict[str, Any], done: str) -> Response:
    """JSON for API clients, else back to the page (303) with a note."""
    if _json_client(request):
        status = 404 if body.get("signed_out") is False else 200
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
    return RedirectResponse(f"{_base(request)}?done={done}", status_code=303)


def _refuse(request: Request, status: int, why: str) -> Response:
    if _json_client(request) or (
        request.method == "GET"
        and wants_json(request.headers.get("accept"), request.query_params.get("format"))
    ):
        return JSONResponse({"error": why}, status_code=status)
    return Response(why + "\n", status_code=status, media_type="text/plain")


async def _fields(request: Request) -> dict[str, Any]:
    """The posted fields: JSON, or an urlencoded form (no multipart parser needed)."""
    raw = await request.body()
    if "json" in request.headers.get("content-type", ""):
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}
