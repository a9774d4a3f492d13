"""The identical apps every variant of the benchmark runs (in-process and over HTTP).

Each app has the same routes, whatever the session library behind it:

    POST /setup          writes the 10-key session the benchmark starts from (SETUP_DATA)
    GET  /untouched      never touches the session
    GET  /read           reads one key (k1)
    POST /write          bumps one counter (n) with plain mapping code: s["n"] = s["n"] + 1
    POST /shape/<name>   writes one of the memory shapes (SHAPES) into a new session

Only the session line differs: stickless's ``login(user_id)`` where the peers store a
``user_id`` key for the "login" shape, and starsessions' explicit ``await load_session()``
(its lazy default; its autoload middleware would load on every route).

Over HTTP, gunicorn and uvicorn build the app from the environment (``BENCH_VARIANT``,
``BENCH_URL``, ``BENCH_PREFIX``) through the factories :func:`flask_app_from_env`,
:func:`asgi_app_from_env`, :func:`django_app_from_env` and :func:`wsgi_app_from_env`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, Final

import orjson

SECRET: Final = "benchmark-secret-key-benchmark-secret-key"
COOKIE_TTL: Final = 14 * 24 * 3600
USER_ID: Final = "user-000042"

SETUP_DATA: Final[dict[str, Any]] = {
    **{f"k{i}": f"value-{i}-abcdefgh" for i in range(9)},
    "n": 0,
}
"""The existing session: 10 keys (nine short strings and the counter)."""

_CART: Final = [f"sku-{i:04d}" for i in range(18)]
_CART[-1] += "x" * (200 - len(orjson.dumps(_CART)))  # exactly 200 bytes of JSON
SHAPES: Final[dict[str, dict[str, Any]]] = {
    "login": {"user_id": USER_ID},
    "small5": {"theme": "dark", "lang": "en", "visits": 42, "csrf": "0" * 32, "beta": True},
    "cart200": {"cart": _CART},
    "keys20": {f"key{i:02d}": f"v{i}" for i in range(20)},
}
"""Memory shapes. "login" is ``login(USER_ID)`` for stickless, a ``user_id`` key for peers;
"cart200" is one value whose JSON is 200 bytes."""
assert len(orjson.dumps(_CART)) == 200, len(orjson.dumps(_CART))

SHAPE_LABELS: Final = {
    "login": "login only",
    "small5": "5 small keys",
    "cart200": "cart (one 200-byte value)",
    "keys20": "20 keys",
}

FLASK_VARIANTS: Final = ("flask-cookie", "flask-session", "stickless-flask")
STARLETTE_VARIANTS: Final = (
    "starlette-cookie",
    "starsessions",
    "stickless-asgi",
    "stickless-asgi-lazy",
)
DJANGO_VARIANTS: Final = ("django-cookie", "django-cache", "stickless-django")
WSGI_VARIANTS: Final = ("wsgi-none", "wsgi-blob", "stickless-wsgi")

COOKIE_NAMES: Final = {
    **dict.fromkeys(FLASK_VARIANTS, "session"),
    **dict.fromkeys(STARLETTE_VARIANTS, "session"),
    **dict.fromkeys(DJANGO_VARIANTS, "sessionid"),
    **dict.fromkeys(WSGI_VARIANTS, "session"),
}

DJANGO_ENGINES: Final = {
    "django-cookie": "django.contrib.sessions.backends.signed_cookies",
    "django-cache": "django.contrib.sessions.backends.cache",
    "stickless-django": "stickless.django",
}
DJANGO_MIDDLEWARE: Final = {
    "django-cookie": "django.contrib.sessions.middleware.SessionMiddleware",
    "django-cache": "django.contrib.sessions.middleware.SessionMiddleware",
    "stickless-django": "stickless.django.SessionMiddleware",
}


def _stickless_config(prefix: str, **options: Any) -> Any:
    from stickless import SessionConfig

    return SessionConfig(key_prefix=prefix, **options)


def apply_shape(session: MutableMapping[str, Any], name: str, stickless: bool) -> None:
    """Write shape ``name`` into ``session`` (``login()`` for stickless's login shape)."""
    if name == "login" and stickless:
        session.login(USER_ID)  # type: ignore[attr-defined]
        return
    for key, value in SHAPES[name].items():
        session[key] = value


# ------------------------------------------------------------------------------- Flask
def flask_app(variant: str, url: str, prefix: str) -> Any:
    """A Flask app whose session is ``variant``: Flask's signed cookie, Flask-Session's
    redis backend (its defaults: msgpack, refresh on each request) or stickless.flask."""
    import redis
    from flask import Flask, request, session

    app = Flask(f"bench_{variant.replace('-', '_')}")
    app.config["SECRET_KEY"] = SECRET  # every real Flask app has one
    if variant == "flask-session":
        from flask_session import Session  # type: ignore[import-untyped]

        app.config.update(
            SESSION_TYPE="redis", SESSION_REDIS=redis.Redis.from_url(url), SESSION_KEY_PREFIX=prefix
        )
        Session(app)
    elif variant == "stickless-flask":
        from stickless.flask import Stickless

        app.config.update(STICKLESS_URL=url, STICKLESS_CONFIG=_stickless_config(prefix))
        Stickless(app)
    elif variant != "flask-cookie":
        raise ValueError(variant)
    is_stickless = variant.startswith("stickless")

    @app.post("/setup")
    def setup() -> str:
        for key, value in SETUP_DATA.items():
            session[key] = value
        return "ok"

    @app.get("/untouched")
    def untouched() -> str:
        return f"ok {request.path}"

    @app.get("/read")
    def read() -> str:
        return str(session["k1"])

    @app.post("/write")
    def write() -> str:
        session["n"] = session["n"] + 1
        return str(session["n"])

    @app.post("/shape/<name>")
    def shape(name: str) -> str:
        apply_shape(session, name, is_stickless)
        return "ok"

    return app


def flask_app_from_env() -> Any:
    return flask_app(*_from_env())


# ------------------------------------------------------------------ Starlette / ASGI
def starlette_app(variant: str, url: str, prefix: str) -> Any:
    """A Starlette app whose session is ``variant``: Starlette's signed cookie,
    starsessions' RedisStore (rolling 14-day lifetime, lazy loading) or stickless.asgi
    (eager, or lazy: routes that use the session await ``load_session``)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    load: Callable[[Request], Any] | None = None
    if variant == "starlette-cookie":
        from starlette.middleware.sessions import SessionMiddleware

        middleware = Middleware(SessionMiddleware, secret_key=SECRET, max_age=COOKIE_TTL)
    elif variant == "starsessions":
        import redis.asyncio
        from starsessions import SessionMiddleware as StarMiddleware
        from starsessions import load_session
        from starsessions.stores.redis import RedisStore

        store = RedisStore(connection=redis.asyncio.Redis.from_url(url), prefix=prefix)
        middleware = Middleware(
            StarMiddleware,
            store=store,
            lifetime=COOKIE_TTL,
            rolling=True,
            cookie_https_only=False,
        )
        load = load_session
    elif variant in ("stickless-asgi", "stickless-asgi-lazy"):
        from stickless.asgi import SessionMiddleware as SticklessMiddleware
        from stickless.asgi import load_session as stickless_load

        lazy = variant == "stickless-asgi-lazy"  # routes await load_session(request)
        middleware = Middleware(
            SticklessMiddleware, url=url, config=_stickless_config(prefix), lazy=lazy
        )
        load = stickless_load if lazy else None
    else:
        raise ValueError(variant)
    is_stickless = variant.startswith("stickless")

    async def session_of(request: Request) -> Any:
        if load is not None:
            await load(request)
        return request.session

    async def setup(request: Request) -> PlainTextResponse:
        session = await session_of(request)
        for key, value in SETUP_DATA.items():
            session[key] = value
        return PlainTextResponse("ok")

    async def untouched(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"ok {request.url.path}")

    async def read(request: Request) -> PlainTextResponse:
        session = await session_of(request)
        return PlainTextResponse(str(session["k1"]))

    async def write(request: Request) -> PlainTextResponse:
        session = await session_of(request)
        session["n"] = session["n"] + 1
        return PlainTextResponse(str(session["n"]))

    async def shape(request: Request) -> PlainTextResponse:
        session = await session_of(request)
        apply_shape(session, request.path_params["name"], is_stickless)
        return PlainTextResponse("ok")

    routes = [
        Route("/setup", setup, methods=["POST"]),
        Route("/untouched", untouched),
        Route("/read", read),
        Route("/write", write, methods=["POST"]),
        Route("/shape/{name}", shape, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[middleware])


def asgi_app_from_env() -> Any:
    return starlette_app(*_from_env())


# ------------------------------------------------------------------------------ Django
def configure_django(url: str, cache_prefix: str, stickless_prefix: str, variant: str) -> None:
    """Configure Django once per process: one settings object serves all three variants
    (only SESSION_ENGINE and the session middleware differ; see :func:`django_app`)."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY=SECRET,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="bench_django_urls",
        INSTALLED_APPS=[],
        MIDDLEWARE=[DJANGO_MIDDLEWARE[variant]],
        SESSION_ENGINE=DJANGO_ENGINES[variant],
        SESSION_CACHE_ALIAS="sessions",
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "sessions": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": cache_prefix,
            },
        },
        STICKLESS_URL=url,
        STICKLESS_CONFIG=_stickless_config(
            stickless_prefix, idle_timeout=COOKIE_TTL, absolute_timeout=COOKIE_TTL
        ),
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()


def django_app(variant: str) -> Any:
    """A Django WSGI handler whose session engine is ``variant`` (signed cookies, the cache
    engine on django-redis, stickless). Django reads SESSION_ENGINE when the middleware
    chain is built, so several handlers with different engines coexist in one process."""
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    settings.SESSION_ENGINE = DJANGO_ENGINES[variant]
    settings.MIDDLEWARE = [DJANGO_MIDDLEWARE[variant]]
    return WSGIHandler()


def django_app_from_env() -> Any:
    variant, url, prefix = _from_env()
    configure_django(url, prefix, prefix, variant)
    return django_app(variant)


# -------------------------------------------------------------------------------- WSGI
Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class _LazyBlob(MutableMapping[str, Any]):
    """The hand-written baseline's session: one JSON blob, loaded on first access."""

    def __init__(self, load: Callable[[], dict[str, Any]]) -> None:
        self._load = load
        self._data: dict[str, Any] | None = None
        self.modified = False

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._load()
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class BlobMiddleware:
    """The leanest whole-blob session one could write by hand (what the peers do, without
    their extras): a random id in the cookie, ``GET`` the JSON blob on first access, ``SET
    ... EX`` the whole blob back only when it changed. 0 / 1 / 2 round trips, like stickless,
    with none of its guarantees (lost updates, resurrection)."""

    def __init__(
        self, app: Callable[[Environ, StartResponse], Iterable[bytes]], url: str, prefix: str
    ) -> None:
        import redis

        self.app = app
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        sid = _cookie(environ.get("HTTP_COOKIE", ""), "session")

        def load() -> dict[str, Any]:
            raw = self.client.get(self.prefix + sid) if sid else None
            return orjson.loads(raw) if raw else {}

        session = _LazyBlob(load)
        environ["bench.session"] = session

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal sid
            if session.modified:
                if sid is None:
                    sid = secrets.token_urlsafe(32)
                    headers = [*headers, ("Set-Cookie", f"session={sid}; Path=/; HttpOnly")]
                self.client.set(self.prefix + sid, orjson.dumps(session.data), ex=COOKIE_TTL)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value or None
    return None


def wsgi_app(variant: str, url: str, prefix: str) -> Any:
    """A bare WSGI app: no session at all (the floor), the hand-written blob baseline, or
    stickless.wsgi."""
    session_key = "stickless.session" if variant == "stickless-wsgi" else "bench.session"
    is_stickless = variant == "stickless-wsgi"

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ["PATH_INFO"]
        if path == "/untouched" or variant == "wsgi-none":
            body = f"ok {path}".encode()
        else:
            session = environ[session_key]
            if path == "/read":
                body = str(session["k1"]).encode()
            elif path == "/write":
                session["n"] = session["n"] + 1
                body = str(session["n"]).encode()
            elif path == "/setup":
                for key, value in SETUP_DATA.items():
                    session[key] = value
                body = b"ok"
            elif path.startswith("/shape/"):
                apply_shape(session, path.removeprefix("/shape/"), is_stickless)
                body = b"ok"
            else:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found"]
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    if variant == "wsgi-none":
        return app
    if variant == "wsgi-blob":
        return BlobMiddleware(app, url, prefix)
    if variant == "stickless-wsgi":
        from stickless.wsgi import SessionMiddleware

        return SessionMiddleware(app, url=url, config=_stickless_config(prefix))
    raise ValueError(variant)


def wsgi_app_from_env() -> Any:
    return wsgi_app(*_from_env())


def _from_env() -> tuple[str, str, str]:
    return os.environ["BENCH_VARIANT"], os.environ["BENCH_URL"], os.environ["BENCH_PREFIX"]
