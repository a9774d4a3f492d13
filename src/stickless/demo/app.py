"""The demo web app: one Starlette app, run as three uvicorn processes sharing one session.

Run by :mod:`stickless.demo.launcher` as ``python -m uvicorn stickless.demo.app:app``, with:

``STICKLESS_URL``
    the store URL (``redis://``, ``redis+sentinel://`` or ``redis+cluster://``).
``STICKLESS_DEMO_NAME``
    this server's name, e.g. ``server-2`` (default ``server``).
``STICKLESS_DEMO_PEERS``
    every server of the demo as ``name=base-url`` pairs separated by commas, e.g.
    ``server-1=http://127.0.0.1:8001,server-2=http://127.0.0.1:8002`` (default: none).
``STICKLESS_DURABILITY``
    ``none`` (default) or ``replicated``: :attr:`SessionConfig.durability`.
``STICKLESS_DEMO_FAILOVER``
    ``1``: show the "fail over now" button and its live write counter
    (:mod:`stickless.demo.failover`; the launcher sets it for its sentinel and cluster
    topologies). Default off.

Pages are rendered on the server and every form follows POST-redirect-GET; the only
JavaScript is the failover panel's live counter (the button works without it).
``GET /api/state`` returns what the page shows as JSON (used by the tour and the tests);
``GET /healthz`` gets no session at all.

What lives in the session: ``cart:<item>`` (a quantity, changed with the atomic
:meth:`Session.incr`, so concurrent adds never lose one), ``hits:<server>`` (page views per
server), ``note`` (free text) and ``flash`` (a one-shot message for the next page).

Sessions users manage (issue 12): the login form has a "remember me" checkbox
(:meth:`Session.set_lifetime` with :data:`REMEMBER_IDLE` / :data:`REMEMBER_ABSOLUTE`, the
demo's ``max_idle_timeout`` / ``max_absolute_timeout``; unchecked: the configured 30 min / 24 h)
and a device name (:attr:`Session.device_name`); a user has at most :data:`MAX_DEVICES` live
sessions (``max_sessions_per_user``, ``on_limit="evict_oldest"``: the 6th login signs the
oldest out), and the ready-made devices page is mounted at ``/account/devices/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route

from stickless.asgi import SessionMiddleware, session_of
from stickless.config import Durability, SessionConfig
from stickless.demo import failover as demo_failover
from stickless.devices import check_device_name
from stickless.errors import StoreUnavailable
from stickless.session import Session
from stickless.store.aio import AsyncSessionStore
from stickless.store.plan import SessionInfo
from stickless.tokens import TokenId, token_id
from stickless.web.devices.starlette import devices_app

log = logging.getLogger("stickless.demo")

COOKIE_NAME = "stickless_demo"
"""The session cookie of the demo (its own name, so other apps on 127.0.0.1 do not clash)."""

CART_PREFIX = "cart:"
HITS_PREFIX = "hits:"
MAX_ITEMS = 40
"""Distinct cart items a session may hold (keeps the session far below ``max_size``)."""
BURST_ITEMS = (
    "apple",
    "banana",
    "cherry",
    "date",
    "elderberry",
    "fig",
    "grape",
    "kiwi",
    "lemon",
    "mango",
)
"""The "concurrent adds" button adds each of these once on every server, all at once."""

_ITEM_RE = re.compile(r"[\w][\w .-]{0,31}")
_USER_RE = re.compile(r"[\w.@-]{1,32}")
_NOTE_MAX = 120

REMEMBER_IDLE = 7 * 24 * 3600
"""Idle timeout of a "remember me" login: 7 days (the demo's ``max_idle_timeout``)."""
REMEMBER_ABSOLUTE = 30 * 24 * 3600
"""Absolute lifetime of a "remember me" login: 30 days (the demo's ``max_absolute_timeout``)."""
MAX_DEVICES = 5
"""Live sessions one user may have (``max_sessions_per_user``); the next login ends the
oldest (``on_limit="evict_oldest"``)."""
_COLOURS = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#db2777")

ENV_URL = "STICKLESS_URL"
ENV_NAME = "STICKLESS_DEMO_NAME"
ENV_PEERS = "STICKLESS_DEMO_PEERS"
ENV_DURABILITY = "STICKLESS_DURABILITY"
ENV_FAILOVER = "STICKLESS_DEMO_FAILOVER"


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True, slots=True)
class DemoSettings:
    """What one demo server needs to know: its store, its name, and the other servers."""

    url: str
    name: str = "server"
    peers: tuple[tuple[str, str], ...] = ()
    """``(name, base URL)`` of every server of the demo, this one included."""
    durability: Durability = "none"
    failover: bool = False
    """Offer the "fail over now" button (only effective on Sentinel and Cluster URLs)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DemoSettings:
        env = os.environ if environ is None else environ
        url = env.get(ENV_URL, "").strip()
        if not url:
            raise RuntimeError(f"the demo app needs {ENV_URL} (a redis:// URL)")
        peers = []
        for item in env.get(ENV_PEERS, "").split(","):
            name, sep, base = item.strip().partition("=")
            if sep and name and base:
                peers.append((name, base.rstrip("/")))
        durability = env.get(ENV_DURABILITY, "none").strip() or "none"
        if durability not in ("none", "replicated"):
            raise RuntimeError(f"{ENV_DURABILITY} must be 'none' or 'replicated'")
        return cls(
            url=url,
            name=env.get(ENV_NAME, "").strip() or "server",
            peers=tuple(peers),
            durability="replicated" if durability == "replicated" else "none",
            failover=env.get(ENV_FAILOVER, "").strip() == "1",
        )

    @property
    def failover_enabled(self) -> bool:
        return self.failover and demo_failover.topology_of(self.url) in ("sentinel", "cluster")

    def colour(self, name: str) -> str:
        names = [n for n, _ in self.peers]
        index = names.index(name) if name in names else len(names)
        return _COLOURS[index % len(_COLOURS)]

    def session_config(self) -> SessionConfig:
        # touch_interval=0: "last access" moves on every request, which is what a person
        # watching the page expects (one extra field write per load: fine for a demo).
        # The default lifetime (30 min idle, 24 h at most) is SessionConfig's; "remember me"
        # may raise a session's own up to the maxima; a user has at most MAX_DEVICES sessions.
        return SessionConfig(
            durability=self.durability,
            touch_interval=0,
            max_idle_timeout=REMEMBER_IDLE,
            max_absolute_timeout=REMEMBER_ABSOLUTE,
            max_sessions_per_user=MAX_DEVICES,
            on_limit="evict_oldest",
        )


# ----------------------------------------------------------------------------- helpers
def short_id(tid: TokenId) -> str:
    """A session id safe to show: the family part and the first 8 characters of the token's
    digest (neither can be used as a cookie)."""
    return f"{tid.family}\u00b7{tid.digest[:8]}"


def session_short_id(session: Session) -> str | None:
    """The shown id of a stored session (None while it is new: nothing is stored yet)."""
    if session.meta is None:
        return None
    return short_id(token_id(session.raw_token))


def _family(session: Session) -> str | None:
    """The stored session's family (its keys' hash tag); None while it is new."""
    return token_id(session.raw_token).family if session.meta is not None else None


def cart_of(session: Session) -> dict[str, int]:
    return {
        key[len(CART_PREFIX) :]: int(value)
        for key, value in sorted(dict.items(session))
        if key.startswith(CART_PREFIX) and isinstance(value, int)
    }


def hits_of(session: Session) -> dict[str, int]:
    return {
        key[len(HITS_PREFIX) :]: int(value)
        for key, value in sorted(dict.items(session))
        if key.startswith(HITS_PREFIX) and isinstance(value, int)
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _when(moment: datetime | None, *, short: bool = False) -> str:
    """``2025-01-31 14:03:21 UTC (in 29 min)`` (``short``: ``14:03:21 (in 29 min)``);
    ``-`` for None."""
    if moment is None:
        return "-"
    delta = (moment - datetime.now(UTC)).total_seconds()
    span = abs(delta)
    if span < 2:
        rel = "now"
    else:
        if span < 90:
            amount = f"{span:.0f} s"
        elif span < 90 * 60:
            amount = f"{span / 60:.0f} min"
        else:
            amount = f"{span / 3600:.1f} h"
        rel = f"in {amount}" if delta > 0 else f"{amount} ago"
    if short:
        return f"{moment.strftime('%H:%M:%S')} ({rel})"
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S')} UTC ({rel})"


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (no python-multipart needed)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[0] for key, values in parse_qs(body).items() if values}


def _store(request: Request) -> AsyncSessionStore:
    store = request.scope["stickless.store"]
    assert isinstance(store, AsyncSessionStore)
    return store


def _back(note: str | None = None) -> RedirectResponse:
    """The redirect of POST-redirect-GET (303: the browser follows with a GET)."""
    target = "/" if note is None else f"/?note={note}"
    return RedirectResponse(target, status_code=303)


async def _devices(request: Request, session: Session) -> list[SessionInfo] | None:
    """The logged-in user's live sessions; None when anonymous or the listing failed."""
    user = session.user_id
    if user is None:
        return None
    try:
        return await _store(request).sessions_for(user)
    except StoreUnavailable:
        return None


# ------------------------------------------------------------------------- the app
def create_app(settings: DemoSettings | None = None) -> Starlette:
    """The demo app for ``settings`` (default: read from the environment)."""
    cfg = settings or DemoSettings.from_env()
    store = AsyncSessionStore.from_url(cfg.url, cfg.session_config())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Warm up: connect before the first request.
        with contextlib.suppress(StoreUnavailable):
            await store.sessions_for("stickless-demo-warm-up")
        try:
            yield
        finally:
            await store.aclose()

    def server_of(request: Request) -> dict[str, Any]:
        server = request.scope.get("server") or ("127.0.0.1", None)
        return {"name": cfg.name, "port": server[1], "pid": os.getpid()}

    async def page(request: Request) -> Response:
        session = session_of(request.scope)
        session.incr(HITS_PREFIX + cfg.name)
        flash = session.pop("flash", None)
        devices = await _devices(request, session)
        note = _query_note(request)
        panel = ""
        if cfg.failover_enabled:
            csrf = demo_failover.csrf_token(session)
            primary = await asyncio.to_thread(
                demo_failover.current_primary, cfg.url, _family(session)
            )
            panel = demo_failover.panel_html(
                topology=demo_failover.topology_of(cfg.url),
                csrf=csrf,
                enabled=True,
                primary=primary,
            )
        body = render_page(
            cfg,
            server_of(request),
            session=session,
            devices=devices,
            flash=flash,
            note=note,
            failover_panel=panel,
        )
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        session = session_of(request.scope)
        devices = await _devices(request, session)
        current = token_id(session.raw_token).session_id if session.meta else None
        return JSONResponse(
            {
                "server": server_of(request),
                "session_id": session_short_id(session),
                "status": session.status.value,
                "user": session.user_id,
                "cart": cart_of(session),
                "hits": hits_of(session),
                "note": session.get("note"),
                "created": _iso(session.created_at),
                "last_access": _iso(session.last_access),
                "expires": _iso(session.expires_at),
                "absolute_expiry": _iso(session.absolute_expires_at),
                "seconds_left": session.seconds_left,
                "idle_timeout": session.meta.idle_ms / 1000 if session.meta else None,
                "device_name": session.device_name,
                "max_devices": MAX_DEVICES,
                "devices": None
                if devices is None
                else [
                    {
                        "id": info.session_id,
                        "session_id": info.session_id,  # a digest: cannot be used as a cookie
                        "current": info.session_id == current,
                        "created": _iso(info.created_at),
                        "last_access": _iso(info.last_access),
                        "label": info.device.label if info.device else None,
                        "name": info.device.name if info.device else None,
                    }
                    for info in devices
                ],
            },
            headers={"Cache-Control": "no-store"},
        )

    async def add(request: Request) -> Response:
        session = session_of(request.scope)
        item = (await _form(request)).get("item", "").strip().lower()
        if not _ITEM_RE.fullmatch(item):
            session["flash"] = "Item names: 1 to 32 letters, digits, spaces, '.', '-' or '_'."
            return _back()
        if item not in cart_of(session) and len(cart_of(session)) >= MAX_ITEMS:
            session["flash"] = f"The demo cart holds at most {MAX_ITEMS} different items."
            return _back()
        session.incr(CART_PREFIX + item)
        return _back()

    async def clear(request: Request) -> Response:
        session = session_of(request.scope)
        for key in [k for k in dict.keys(session) if k.startswith(CART_PREFIX)]:
            del session[key]
        return _back()

    async def burst(request: Request) -> Response:
        session = session_of(request.scope)
        if session.meta is None:
            session["flash"] = "Add something to the cart first, so there is a session to share."
            return _back()
        before = cart_of(session)
        # Only the configured peers are ever sent the visitor's cookie; never the host a
        # request names (Host header): without peers the adds run in this process.
        servers = [base for _, base in cfg.peers] or [IN_PROCESS]
        in_process = request.app if not cfg.peers else None
        report = await _burst(servers, request.headers.get("cookie", ""), app=in_process)
        after = await _store(request).load(session.token)
        now = cart_of(after) if after is not None else {}
        lost = [
            item
            for item in BURST_ITEMS
            if now.get(item, 0) - before.get(item, 0) != report.added.get(item, 0)
        ]
        verdict = (
            "every count went up by exactly its number of successful adds: no lost update."
            if not lost
            else f"counts differ from the successful adds for {', '.join(lost)} (another "
            "request changed the cart meanwhile?)."
        )
        session["flash"] = (
            f"{report.sent} add requests sent at once to "
            + (f"{len(servers)} servers " if cfg.peers else "this server, in process ")
            + f"({report.ok} succeeded, {report.sent - report.ok} failed) in "
            f"{report.seconds:.2f} s; " + verdict
        )
        return _back()

    async def login(request: Request) -> Response:
        session = session_of(request.scope)
        form = await _form(request)
        username = form.get("username", "").strip()
        if not _USER_RE.fullmatch(username):
            session["flash"] = "User names: 1 to 32 letters, digits, '.', '@', '-' or '_'."
            return _back()
        try:
            device = check_device_name(form.get("device", ""))
        except ValueError:
            session["flash"] = "Device names: printable text, at most 64 bytes."
            return _back()
        remember = form.get("remember") == "on"
        before = session_short_id(session)
        session.login(username)
        if remember:  # "remember me": this session's own, longer lifetime (within the maxima)
            session.set_lifetime(idle=REMEMBER_IDLE, absolute=REMEMBER_ABSOLUTE)
        if device is not None:
            session.device_name = device  # shown in the user's device list
        # Saved here rather than by the middleware, to tell which devices the cap ended (the
        # device, user agent and network, is recorded all the same).
        result = await _store(request).save(session)
        if before is None:
            renewed = "A new session was created with a fresh token."
        else:
            renewed = (
                f"Token renewed (session fixation protection): the session was {before}; "
                "the old cookie no longer loads it, and its data came along."
            )
        kept = (
            "Remembered: this session lasts 7 days without use (30 days at most)."
            if remember
            else "Not remembered: this session ends after 30 min without use (24 h at most)."
        )
        evicted = (
            f" At most {MAX_DEVICES} devices per user: the oldest "
            f"{'login was' if len(result.evicted) == 1 else f'{len(result.evicted)} logins were'}"
            " signed out."
            if result.evicted
            else ""
        )
        session["flash"] = f"Logged in as {username} on {cfg.name}. {renewed} {kept}{evicted}"
        return _back()

    async def logout(request: Request) -> Response:
        session_of(request.scope).logout()
        return _back("logged-out")

    async def logout_everywhere(request: Request) -> Response:
        session = session_of(request.scope)
        user = session.user_id
        if user is None:
            session["flash"] = "You are not logged in."
            return _back()
        count = await _store(request).revoke_user(user, keep=None)
        session.logout()
        return RedirectResponse(f"/?note=revoked&n={count}", status_code=303)

    async def revoke_device(request: Request) -> Response:
        """Sign out one of the user's other devices (``store.destroy_id``, owner-checked in
        the destroy script itself)."""
        session = session_of(request.scope)
        target = (await _form(request)).get("session_id", "")
        user = session.user_id
        if user is not None and await _destroy_owned(request, target, user):
            session["flash"] = "That device was signed out."
        else:
            session["flash"] = "No such device among your sessions."
        return _back()

    async def _destroy_owned(request: Request, target: str, user: str) -> bool:
        try:
            return await _store(request).destroy_id(target, user_id=user)
        except ValueError:  # not a session id
            return False

    async def set_note(request: Request) -> Response:
        session = session_of(request.scope)
        text = (await _form(request)).get("note", "").strip()[:_NOTE_MAX]
        if text:
            session["note"] = text
        elif "note" in session:
            del session["note"]
        return _back()

    # The demo's own pages, as a browser names their origin (never derived from the
    # request's Host header); a request without Origin relies on the CSRF token alone.
    origins = {base for _, base in cfg.peers}
    origins |= {base.replace("//127.0.0.1:", "//localhost:") for base in origins}

    def _refused(request: Request, presented: str | None) -> Response | None:
        """403 unless the failover panel is on, the request comes from one of the demo's
        own pages (Origin) and carries the session's CSRF token."""
        if not cfg.failover_enabled:
            return JSONResponse({"ok": False, "message": "No failover here."}, status_code=404)
        session = session_of(request.scope)
        origin = request.headers.get("origin")
        if not demo_failover.same_origin(origin, origins) or not (
            demo_failover.csrf_ok(session, presented)
        ):
            return JSONResponse(
                {"ok": False, "message": "Refused: reload the page and try again (CSRF check)."},
                status_code=403,
            )
        return None

    async def fail_over(request: Request) -> Response:
        """POST /failover: a planned failover of the demo's own topology. The session is
        not changed (no save while the primary changes): the answer is JSON for the page's
        script, else a redirect with a fixed note."""
        refused = _refused(request, (await _form(request)).get("csrf"))
        wants_json = "application/json" in request.headers.get("accept", "")
        if refused is not None:
            return (
                refused
                if wants_json
                else PlainTextResponse(
                    "Refused (CSRF check): reload the page and try again.\n",
                    status_code=refused.status_code,
                )
            )
        family = _family(session_of(request.scope))
        try:
            started = await asyncio.to_thread(demo_failover.request_failover, cfg.url, family)
        except demo_failover.FailoverError as exc:
            message, status = f"No failover: {exc}", 409
        else:
            message, status = (
                f"{started.command} sent to {started.target}: the primary "
                f"{started.old_primary} is being replaced. Watch the counts.",
                200,
            )
            log.warning("demo failover requested: %s", message)
        if wants_json:
            return JSONResponse({"ok": status == 200, "message": message}, status_code=status)
        return _back("failover" if status == 200 else "no-failover")

    async def watch(request: Request) -> Response:
        """GET /api/watch: what the store holds of the live counter, and the primary."""
        session = session_of(request.scope)
        state = demo_failover.watch_state(session)
        if cfg.failover_enabled:
            state["primary"] = await asyncio.to_thread(
                demo_failover.current_primary, cfg.url, _family(session)
            )
        return JSONResponse(state, headers={"Cache-Control": "no-store"})

    async def watch_start(request: Request) -> Response:
        refused = _refused(request, request.headers.get("x-csrf-token"))
        if refused is not None:
            return refused
        return JSONResponse({"run": demo_failover.start_run(session_of(request.scope))})

    async def watch_write(request: Request) -> Response:
        refused = _refused(request, request.headers.get("x-csrf-token"))
        if refused is not None:
            return refused
        run = request.query_params.get("run", "")
        seq_text = request.query_params.get("seq", "")
        if not seq_text.isdigit() or len(seq_text) > 9:
            return JSONResponse({"ok": False, "message": "seq: a number"}, status_code=400)
        count = demo_failover.record_write(session_of(request.scope), run, int(seq_text))
        if count is None:
            return JSONResponse(
                {"ok": False, "message": "not the current run, or the run is full"},
                status_code=409,
            )
        return JSONResponse({"ok": True, "n": count})

    async def health(request: Request) -> Response:
        return PlainTextResponse(f"ok {cfg.name}\n")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", state),
            Route("/cart/add", add, methods=["POST"]),
            Route("/cart/clear", clear, methods=["POST"]),
            Route("/cart/burst", burst, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/logout-everywhere", logout_everywhere, methods=["POST"]),
            Route("/devices/revoke", revoke_device, methods=["POST"]),
            Route("/note", set_note, methods=["POST"]),
            Route("/failover", fail_over, methods=["POST"]),
            Route("/api/watch", watch),
            Route("/api/watch/start", watch_start, methods=["POST"]),
            Route("/api/watch/write", watch_write, methods=["POST"]),
            Route("/healthz", health),
            Mount("/account/devices", devices_app()),  # the ready-made devices page
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                session_cookie=COOKIE_NAME,
                exclude_paths=["/healthz"],
            ),
        ],
        lifespan=lifespan,
    )


# -------------------------------------------------------------------- concurrent adds
@dataclass(frozen=True, slots=True)
class BurstReport:
    sent: int
    added: dict[str, int]
    """Per item: how many of its add requests succeeded (answered 303)."""
    seconds: float

    @property
    def ok(self) -> int:
        return sum(self.added.values())


IN_PROCESS = "http://in-process"
"""Base URL of the burst's requests when no peers are configured: they go to the app
itself through :class:`httpx.ASGITransport`, never over the network."""


async def _burst(servers: list[str], cookie: str, *, app: Any = None) -> BurstReport:
    """Each of :data:`BURST_ITEMS` added once on every server, all requests at once, with the
    visitor's own cookie. ``servers`` are the configured peers' base URLs (the only hosts
    that ever receive the cookie); with ``app`` (an ASGI app) the requests are handled in
    this process instead, with no network at all."""
    jobs = [(base, item) for base in servers for item in BURST_ITEMS]
    transport = None if app is None else httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def one(client: httpx.AsyncClient, base: str, item: str) -> bool:
        try:
            response = await client.post(
                f"{base}/cart/add", data={"item": item}, headers={"cookie": cookie}
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 303

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10.0, transport=transport) as client:
        results = await asyncio.gather(*(one(client, b, i) for b, i in jobs))
    added: dict[str, int] = {}
    for (_, item), ok in zip(jobs, results, strict=True):
        added[item] = added.get(item, 0) + int(ok)
    return BurstReport(len(jobs), added, time.perf_counter() - started)


# ----------------------------------------------------------------------------- the page
_NOTES = {
    "logged-out": (
        "Logged out: the session was destroyed in Valkey (this page starts a new, empty one)."
    ),
    "failover": (
        "Failover requested: a replica is being promoted to primary. Reload in a few seconds "
        "to see the new primary; the cart and everything acknowledged are still there."
    ),
    "no-failover": "The failover could not be requested right now (is one already under way?).",
}


def _query_note(request: Request) -> str | None:
    """A fixed message chosen by ``?note=`` (never echoes the query string itself)."""
    note = request.query_params.get("note")
    if note == "revoked":
        raw = request.query_params.get("n", "0")
        count = int(raw) if raw.isdigit() else 0
        return (
            f"Logged out everywhere: {count} session(s) of this user destroyed, on every "
            "device, whichever server they were using."
        )
    return _NOTES.get(note or "")


_CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f4f5f7;color:#1f2937}
header{background:var(--c);color:#fff;padding:18px 28px}
header h1{margin:0;font-size:26px}
header .sub{opacity:.9;margin-top:4px}
header .port{font-size:17px;font-weight:600;margin-left:10px;padding:2px 10px;
 border-radius:999px;background:#fff3;vertical-align:middle}
nav{padding:10px 28px;background:#fff;border-bottom:1px solid #e5e7eb}
nav a,nav span{display:inline-block;margin-right:10px;padding:5px 12px;border-radius:999px;
 text-decoration:none;font-weight:600;border:2px solid var(--p);color:var(--p)}
nav span{background:var(--p);color:#fff}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:18px;
 padding:18px 28px}
section{background:#fff;border-radius:10px;padding:16px 20px;box-shadow:0 1px 3px #0001}
h2{margin:0 0 10px;font-size:18px}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:4px 8px 4px 0;border-bottom:1px solid #f0f0f0;vertical-align:top}
th{font-weight:600;color:#4b5563;width:38%}
.flash{margin:16px 28px 0;padding:10px 14px;border-radius:8px;background:#fef9c3;
 border:1px solid #facc15}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;background:#e5e7eb;
 font-size:13px}
.mine{background:#dcfce7}
form{margin:8px 0}
input[type=text]{padding:6px 8px;border:1px solid #cbd5e1;border-radius:6px;width:190px}
button{padding:6px 12px;border:0;border-radius:6px;background:#374151;color:#fff;
 cursor:pointer}
button.warn{background:#b91c1c}
pre{background:#f8fafc;border:1px solid #e5e7eb;border-radius:6px;padding:8px;
 overflow:auto;max-height:240px;margin:0}
.muted{color:#6b7280}
code{font-size:13px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _form_html(action: str, label: str, field: str | None = None, *, warn: bool = False) -> str:
    name = action.strip("/").replace("/", "-")
    box = ""
    if field is not None:
        box = (
            f'<input type="text" name="{field}" id="{name}-{field}" required '
            f'placeholder="{field}" autocomplete="off"> '
        )
    cls = ' class="warn"' if warn else ""
    return (
        f'<form method="post" action="{action}">{box}'
        f'<button type="submit" id="{name}-button"{cls}>{_e(label)}</button></form>'
    )


_LOGIN_FORM = (
    '<form method="post" action="/login">'
    '<input type="text" name="username" id="login-username" required placeholder="username" '
    'autocomplete="off"> '
    '<input type="text" name="device" id="login-device" maxlength="64" '
    'placeholder="device name (optional)" autocomplete="off"> '
    '<label><input type="checkbox" name="remember" id="login-remember"> Remember me '
    "(7 days)</label> "
    '<button type="submit" id="login-button">Log in</button></form>'
)


def _duration(seconds: float) -> str:
    """``7 days``, ``30 min``, ``45 s``."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _lifetime(session: Session) -> str:
    """The session's own idle timeout, said for a person: ``30 min`` or ``7 days
    (remember me)``; ``-`` while new."""
    if session.meta is None:
        return "-"
    idle = session.meta.idle_ms / 1000
    return _duration(idle) + (" (remember me)" if idle >= REMEMBER_IDLE else "")


def _ends(session: Session) -> str:
    """``This session ends after 30 min without use.`` (``remembered`` when it is)."""
    if session.meta is None:
        return ""
    idle = session.meta.idle_ms / 1000
    kept = " (remember me)" if idle >= REMEMBER_IDLE else ""
    return f"This session ends after {_duration(idle)} without use{kept}."


def _device_cell(info: SessionInfo) -> str:
    """The device's name (when the user gave one) and its browser, escaped."""
    device = info.device
    if device is None:
        return "-"
    label = f"<span class='label'>{_e(device.label)}</span>"
    if device.name:
        return f"<b class='device-name'>{_e(device.name)}</b><br>{label}"
    return label


def render_page(
    cfg: DemoSettings,
    server: dict[str, Any],
    *,
    session: Session,
    devices: list[SessionInfo] | None,
    flash: object,
    note: str | None,
    failover_panel: str = "",
) -> str:
    """The whole HTML page (every dynamic value escaped; ``failover_panel`` is the
    ready-made HTML of :func:`stickless.demo.failover.panel_html`)."""
    name = cfg.name
    colour = cfg.colour(name)
    nav = []
    for peer, base in cfg.peers:
        style = f'style="--p:{cfg.colour(peer)}"'
        if peer == name:
            nav.append(f'<span {style} id="current-server">{_e(peer)} (you are here)</span>')
        else:
            nav.append(f'<a {style} href="{_e(base)}/" id="go-{_e(peer)}">go to {_e(peer)}</a>')
    messages = [str(m) for m in (flash, note) if m]
    flash_html = "".join(f'<div class="flash" id="flash">{_e(m)}</div>' for m in messages)

    user = session.user_id
    current = token_id(session.raw_token).session_id if session.meta else None
    status = session.status.value if session.meta else "new (saved at the end of this request)"
    meta_rows = [
        ("server that answered", f'<b style="color:{colour}">{_e(name)}</b>'),
        ("session id", f"<code id='session-id'>{_e(current or '-')}</code>"),  # for the CLI
        ("status", _e(status)),
        ("user", f"<b id='user'>{_e(user)}</b>" if user else "<span id='user'>anonymous</span>"),
        ("created", _e(_when(session.created_at))),
        ("last access", _e(_when(session.last_access))),
        ("idle timeout", f"<span id='lifetime'>{_e(_lifetime(session))}</span>"),
        ("expires (idle)", _e(_when(session.expires_at))),
        ("absolute expiry", _e(_when(session.absolute_expires_at))),
        ("page views per server", _e(", ".join(f"{k}: {v}" for k, v in hits_of(session).items()))),
    ]
    meta_html = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in meta_rows)
    shown = dict(session)
    if demo_failover.CSRF_KEY in shown:
        shown[demo_failover.CSRF_KEY] = "(hidden)"
    seqs = shown.get(demo_failover.WATCH_SEQS)
    if isinstance(seqs, list) and len(seqs) > 8:
        shown[demo_failover.WATCH_SEQS] = f"[{len(seqs)} numbers: {seqs[0]} ... {seqs[-1]}]"
    contents = json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False)
    panel_css = demo_failover.PANEL_CSS if failover_panel else ""

    cart = cart_of(session)
    if cart:
        rows = "".join(
            f"<tr><td class='item'>{_e(item)}</td><td class='qty'>{qty}</td></tr>"
            for item, qty in cart.items()
        )
        cart_html = (
            f"<table id='cart'><tr><th>item</th><th>quantity</th></tr>{rows}</table>"
            f"<p class='muted'>{sum(cart.values())} item(s) in total</p>"
        )
    else:
        cart_html = "<p id='cart' class='muted'>The cart is empty.</p>"
    burst_html = (
        _form_html("/cart/burst", f"Concurrent adds: {len(BURST_ITEMS)} fruits on every server")
        + "<p class='muted'>This server sends all those add requests at the same moment, with "
        "your cookie, to every demo server. Each one changes the session; none is lost.</p>"
        if session.meta is not None
        else ""
    )

    if user is None:
        account_html = (
            "<p>You are anonymous. Log in with any name (no password: it is a demo). "
            "The token is renewed at login, the cart stays. Name this device if you like; "
            "<i>remember me</i> keeps the session for 7 days without use (30 days at most) "
            "instead of 30 min.</p>" + _LOGIN_FORM
        )
    else:
        named = session.device_name
        account_html = (
            f"<p>Logged in as <b>{_e(user)}</b>"
            + (f" on <b id='this-device'>{_e(named)}</b>" if named else "")
            + f". {_e(_ends(session))}</p>"
            + _form_html("/logout", "Log out (this device)")
            + _form_html("/logout-everywhere", "Log out everywhere", warn=True)
        )
    if devices is None:
        devices_html = "<p class='muted'>Log in to see this user's sessions (devices).</p>"
    else:
        rows = "".join(
            "<tr class='{cls}'><td><code>{id}</code>{mine}</td><td>{device}</td>"
            "<td>{created}</td><td>{seen}</td><td>{action}</td></tr>".format(
                cls="mine" if info.session_id == current else "",
                id=_e(info.session_id),
                device=_device_cell(info),
                mine=" <span class='badge'>this browser</span>"
                if info.session_id == current
                else "",
                created=_e(info.created_at.strftime("%H:%M:%S")),
                seen=_e(_when(info.last_access, short=True)),
                action=""
                if info.session_id == current
                else "<form method='post' action='/devices/revoke'>"
                f"<input type='hidden' name='session_id' value='{_e(info.session_id)}'>"
                "<button type='submit' class='warn'>Sign out</button></form>",
            )
            for info in devices
        )
        devices_html = (
            f"<p><b id='device-count'>{len(devices)} of {MAX_DEVICES} devices</b> of "
            f"<b>{_e(user)}</b> (<code>store.sessions_for</code>; "
            "<code>max_sessions_per_user</code>: the next login past the cap signs the "
            "oldest out):</p>"
            f"<table id='devices'><tr><th>session</th><th>device</th><th>created (UTC)</th>"
            f"<th>last access</th><th></th></tr>{rows}</table>"
            "<p class='muted'>Log in with the same name in another browser (or a private "
            "window) to add a device. <a href='/account/devices/'>Your devices</a>: names, "
            "browsers, sign out (<code>stickless.web.devices</code>).</p>"
        )
    saved_note = session.get("note")
    note_html = (
        f"<p>Note: <i id='note'>{_e(saved_note)}</i></p>" if saved_note else ""
    ) + _form_html("/note", "Save note", "note")

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stickless demo: {_e(name)}</title><style>{_CSS}{panel_css}</style></head>
<body style="--c:{colour}">
<header><h1><span id="server">Answered by {_e(name)}</span>
<span class="port">port {_e(server["port"])}</span></h1>
<div class="sub">http://127.0.0.1:{_e(server["port"])} &middot; process {_e(server["pid"])}
 &middot; store: {_e(_topology_label(cfg.url))}, durability {_e(cfg.durability)}</div></header>
<nav>{"".join(nav)}
<span class="muted" style="border:0;color:#6b7280;background:none">one cookie, one session,
any server: no sticky sessions</span></nav>
{flash_html}
<main>
{failover_panel}
<section><h2>Cart</h2>{cart_html}
{_form_html("/cart/add", "Add to cart", "item")}
{_form_html("/cart/clear", "Empty the cart") if cart else ""}
{burst_html}</section>
<section><h2>You</h2>{account_html}{note_html}
<h2 style="margin-top:14px">Devices</h2>{devices_html}</section>
<section><h2>Session</h2><table id="meta">{meta_html}</table>
<h2 style="margin-top:14px">Contents</h2><pre id="contents">{_e(contents)}</pre></section>
</main>
<p class="muted" style="padding:0 28px 20px">Try it: add an item here, go to another server,
add another, log in, open a private window and log in with the same name, then log out
everywhere. The session lives in Valkey, not in any one server.</p>
{"<script>" + demo_failover.PANEL_JS + "</script>" if failover_panel else ""}
</body></html>
"""


def _topology_label(url: str) -> str:
    scheme = url.partition("://")[0]
    return {
        "redis+sentinel": "Valkey with Sentinel",
        "redis+cluster": "Valkey Cluster",
    }.get(scheme, "Valkey standalone")


def __getattr__(name: str) -> Any:
    """``app`` is built on first access, from the environment (``uvicorn
    stickless.demo.app:app``), so importing this module needs no configuration."""
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
