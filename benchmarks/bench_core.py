"""In-process benchmark: the variants, how each is driven, and how Valkey is watched.

Every web variant is driven by a direct WSGI or ASGI call (an environ / scope built here, the
response consumed, the cookie sent back as a browser would): the whole framework path runs,
with no test-client layer on top. Stores and raw redis-py floors are called directly.

Valkey is watched from a separate connection:

* round trips per request: the server's ``total_reads_processed`` delta (one read event per
  request the client sends, a pipeline being one), measured in a counting pass;
* commands per request: MONITOR during the same pass (commands run by scripts are tagged
  ``lua`` and are not round trips);
* Valkey time per request: ``INFO commandstats`` ``usec`` deltas of the commands clients sent
  (a script's usec already includes the commands it ran, so those are not added again);
* Valkey CPU per request: ``used_cpu_sys + used_cpu_user`` deltas of ``INFO cpu`` over the
  timed batches (thousands of requests), so it includes network handling.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import bench_apps as apps
import orjson
import redis
import redis.asyncio

KINDS: Final = ("untouched", "read", "write")
FLOOR_KIND: Final = "request"
ROUTES: Final = {
    "untouched": ("GET", "/untouched"),
    "read": ("GET", "/read"),
    "write": ("POST", "/write"),
}

Runner = Callable[[int], float]
"""Runs n requests of one kind, returns the elapsed seconds (raises on a wrong answer)."""


class BenchError(RuntimeError):
    """A variant answered something other than the expected response."""


# --------------------------------------------------------------------------- variants
@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    family: str
    role: str  # "stickless", "peer", "base" (cookie session / no session) or "floor"
    label: str
    modules: tuple[str, ...] = ()  # importable modules it needs (peers are optional)
    kinds: tuple[str, ...] = KINDS
    stores: bool = True  # keeps its sessions in Valkey (memory is measured)

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


VARIANTS: Final = (
    Variant("flask-cookie", "flask", "base", "Flask cookie session", ("flask",), stores=False),
    Variant("flask-session", "flask", "peer", "Flask-Session (redis)", ("flask", "flask_session")),
    Variant("stickless-flask", "flask", "stickless", "stickless.flask", ("flask",)),
    Variant(
        "starlette-cookie",
        "starlette",
        "base",
        "Starlette cookie session",
        ("starlette", "itsdangerous"),
        stores=False,
    ),
    Variant(
        "starsessions",
        "starlette",
        "peer",
        "starsessions (RedisStore)",
        ("starlette", "starsessions"),
    ),
    Variant("stickless-asgi", "starlette", "stickless", "stickless.asgi", ("starlette",)),
    Variant(
        "stickless-asgi-lazy",
        "starlette",
        "stickless",
        "stickless.asgi, lazy=True (load_session)",
        ("starlette",),
    ),
    Variant("django-cookie", "django", "base", "Django signed_cookies", ("django",), stores=False),
    Variant(
        "django-cache",
        "django",
        "peer",
        "Django cache engine + django-redis",
        ("django", "django_redis"),
    ),
    Variant("stickless-django", "django", "stickless", "stickless.django", ("django",)),
    Variant("wsgi-none", "wsgi", "base", "bare WSGI app, no session", stores=False),
    Variant("wsgi-blob", "wsgi", "peer", "hand-written blob middleware (GET/SET)"),
    Variant("stickless-wsgi", "wsgi", "stickless", "stickless.wsgi"),
    Variant("blob-sync", "store", "peer", "redis-py blob: GET (+ SET EX on write)"),
    Variant("stickless-store", "store", "stickless", "stickless SessionStore"),
    Variant("blob-async", "async-store", "peer", "redis.asyncio blob: GET (+ SET EX)"),
    Variant("stickless-async-store", "async-store", "stickless", "stickless AsyncSessionStore"),
    Variant(
        "redis-1rt",
        "floor",
        "floor",
        "redis-py, 1 round trip (GET)",
        (),
        (FLOOR_KIND,),
        stores=False,
    ),
    Variant(
        "redis-2rt",
        "floor",
        "floor",
        "redis-py, 2 round trips (GET + SET EX)",
        (),
        (FLOOR_KIND,),
        stores=False,
    ),
    Variant(
        "aioredis-1rt",
        "floor",
        "floor",
        "redis.asyncio, 1 round trip",
        (),
        (FLOOR_KIND,),
        stores=False,
    ),
    Variant(
        "aioredis-2rt",
        "floor",
        "floor",
        "redis.asyncio, 2 round trips",
        (),
        (FLOOR_KIND,),
        stores=False,
    ),
)
BY_NAME: Final = {v.name: v for v in VARIANTS}


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    title: str
    stickless: str
    peer: str
    base: str | None  # the framework's cookie session (or no session): the overhead zero
    floor: str  # the 1-round-trip floor for "overhead in round trips"


FAMILIES: Final = (
    Family("flask", "Flask", "stickless-flask", "flask-session", "flask-cookie", "redis-1rt"),
    Family(
        "starlette",
        "Starlette (ASGI)",
        "stickless-asgi",
        "starsessions",
        "starlette-cookie",
        "aioredis-1rt",
    ),
    Family(
        "starlette",
        "Starlette (ASGI), lazy",
        "stickless-asgi-lazy",
        "starsessions",
        "starlette-cookie",
        "aioredis-1rt",
    ),
    Family("django", "Django", "stickless-django", "django-cache", "django-cookie", "redis-1rt"),
    Family("wsgi", "bare WSGI", "stickless-wsgi", "wsgi-blob", "wsgi-none", "redis-1rt"),
    Family("store", "sync store", "stickless-store", "blob-sync", None, "redis-1rt"),
    Family(
        "async-store", "async store", "stickless-async-store", "blob-async", None, "aioredis-1rt"
    ),
)
FAMILY_NAMES: Final = (*dict.fromkeys(f.name for f in FAMILIES), "floor")


def prefix_for(run_id: str, variant: str) -> str:
    """The key namespace of one variant in this run (its keys match ``prefix + ":*"``)."""
    return f"slb{run_id}.{variant}"


@contextmanager
def valkey(url: str | None) -> Iterator[tuple[str, int | None]]:
    """The server to use: ``url``, or an embedded Valkey (then its PID too)."""
    if url:
        yield url, None
        return
    from stickless.embedded import start_standalone

    with start_standalone() as server:
        yield server.url, server.node.pid


# ----------------------------------------------------------------------------- drivers
def _cookie_from(header: str, name: str) -> tuple[bool, str | None]:
    """(is this our cookie, its new value or None when deleted) for one Set-Cookie."""
    header = header.lstrip()  # Django's WSGI handler sends " name=value; ..."
    if not header.startswith(name + "="):
        return False, None
    value, _, attributes = header[len(name) + 1 :].partition(";")
    low = attributes.lower()
    if value in ("", '""', "''") or "max-age=0" in low or "01 jan 1970" in low:
        return True, None
    return True, value


class WsgiClient:
    """Calls a WSGI app directly and keeps its session cookie like a browser."""

    def __init__(self, app: Any, cookie_name: str) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.cookie: str | None = None
        self.deleted = 0
        self._base: dict[str, Any] = {
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "CONTENT_LENGTH": "0",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        environ = self._base.copy()
        environ["REQUEST_METHOD"] = method
        environ["PATH_INFO"] = path
        environ["wsgi.input"] = io.BytesIO()
        if self.cookie is not None:
            environ["HTTP_COOKIE"] = f"{self.cookie_name}={self.cookie}"
        got: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            got[:] = [status, headers]
            return _ignore

        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = got
        for name, value in headers:
            if name.lower() == "set-cookie":
                ours, cookie = _cookie_from(value, self.cookie_name)
                if ours:
                    self.cookie = cookie
                    self.deleted += cookie is None
        return int(status[:3]), body


def _ignore(_: bytes) -> None:
    return None


class AsgiClient:
    """Calls an ASGI app directly (in the running loop) and keeps its session cookie."""

    def __init__(self, app: Any, cookie_name: str) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.cookie: str | None = None
        self.deleted = 0
        self._name = cookie_name.encode()

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        headers = [(b"host", b"127.0.0.1")]
        if self.cookie is not None:
            headers.append((b"cookie", self._name + b"=" + self.cookie.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent_request = False
        status = 0
        body: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"set-cookie":
                        ours, cookie = _cookie_from(value.decode("latin-1"), self.cookie_name)
                        if ours:
                            self.cookie = cookie
                            self.deleted += cookie is None
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(body)


# --------------------------------------------------------------------- building cases
@dataclass
class Built:
    """One variant, ready: a runner per kind, and how to make a session of a shape."""

    runners: dict[str, Runner]
    shape: Callable[[str], None] | None = None
    close: Callable[[], None] = lambda: None


@dataclass
class Context:
    url: str
    run_id: str
    loop: asyncio.AbstractEventLoop
    django_ready: bool = False

    def prefix(self, variant: str) -> str:
        return prefix_for(self.run_id, variant)


def _fail(variant: str, kind: str, status: int, body: bytes) -> None:
    raise BenchError(f"{variant} {kind}: HTTP {status}: {body[:300]!r}")


def _sync_web_runners(name: str, client: WsgiClient, session: bool = True) -> Built:
    status, body = client.request("POST", "/setup")
    if status != 200 or (session and client.cookie is None):
        raise BenchError(f"{name} setup: HTTP {status}, cookie {client.cookie!r}: {body[:300]!r}")
    counter = [0]

    def make(kind: str) -> Runner:
        method, path = ROUTES[kind]
        request = client.request

        def run(n: int) -> float:
            started = time.perf_counter()
            for _ in range(n):
                status, body = request(method, path)
                if status != 200:
                    _fail(name, kind, status, body)
            elapsed = time.perf_counter() - started
            if session:
                _verify(name, kind, body, counter, n, deleted=client.deleted)
            return elapsed

        return run

    def shape(shape_name: str) -> None:
        fresh = WsgiClient(client.app, client.cookie_name)
        status, body = fresh.request("POST", f"/shape/{shape_name}")
        if status != 200:
            _fail(name, f"shape {shape_name}", status, body)

    return Built({kind: make(kind) for kind in KINDS}, shape)


def _async_web_runners(name: str, client: AsgiClient, loop: asyncio.AbstractEventLoop) -> Built:
    status, body = loop.run_until_complete(client.request("POST", "/setup"))
    if status != 200 or client.cookie is None:
        raise BenchError(f"{name} setup: HTTP {status}, cookie {client.cookie!r}: {body[:300]!r}")
    counter = [0]

    def make(kind: str) -> Runner:
        method, path = ROUTES[kind]
        request = client.request

        async def batch(n: int) -> tuple[float, bytes]:
            body = b""
            started = time.perf_counter()
            for _ in range(n):
                status, body = await request(method, path)
                if status != 200:
                    _fail(name, kind, status, body)
            return time.perf_counter() - started, body

        def run(n: int) -> float:
            elapsed, body = loop.run_until_complete(batch(n))
            _verify(name, kind, body, counter, n, deleted=client.deleted)
            return elapsed

        return run

    def shape(shape_name: str) -> None:
        fresh = AsgiClient(client.app, client.cookie_name)
        status, body = loop.run_until_complete(fresh.request("POST", f"/shape/{shape_name}"))
        if status != 200:
            _fail(name, f"shape {shape_name}", status, body)

    return Built({kind: make(kind) for kind in KINDS}, shape)


def _verify(
    name: str, kind: str, body: bytes, counter: list[int], n: int, *, deleted: int = 0
) -> None:
    """The last answer of a batch must be right: the counter went up by exactly n."""
    if deleted:
        raise BenchError(f"{name} {kind}: the session cookie was deleted")
    if kind == "write":
        counter[0] += n
        if body != str(counter[0]).encode():
            raise BenchError(f"{name} write: counter {body!r}, expected {counter[0]}")
    elif kind == "read" and body != str(apps.SETUP_DATA["k1"]).encode():
        raise BenchError(f"{name} read: {body!r}")


def _store_runners(name: str, ctx: Context) -> Built:
    from stickless import SessionConfig, SessionStore

    store = SessionStore.from_url(ctx.url, SessionConfig(key_prefix=ctx.prefix(name)))
    session = store.new()
    session.update(apps.SETUP_DATA)
    store.save(session)
    token = session.token
    counter = [0]

    def untouched(n: int) -> float:  # what an adapter does for a request not using it
        started = time.perf_counter()
        for _ in range(n):
            store.save(store.new())
        return time.perf_counter() - started

    def read(n: int) -> float:
        load, save = store.load, store.save
        value = None
        started = time.perf_counter()
        for _ in range(n):
            s = load(token)
            assert s is not None
            value = s["k1"]
            save(s)
        elapsed = time.perf_counter() - started
        _verify(name, "read", str(value).encode(), counter, n)
        return elapsed

    def write(n: int) -> float:
        load, save = store.load, store.save
        value = None
        started = time.perf_counter()
        for _ in range(n):
            s = load(token)
            assert s is not None
            s["n"] = value = s["n"] + 1
            save(s)
        elapsed = time.perf_counter() - started
        _verify(name, "write", str(value).encode(), counter, n)
        return elapsed

    def shape(shape_name: str) -> None:
        s = store.new()
        if shape_name == "login":
            s.login(apps.USER_ID)
        else:
            s.update(apps.SHAPES[shape_name])
        store.save(s)

    return Built({"untouched": untouched, "read": read, "write": write}, shape, store.close)


def _async_store_runners(name: str, ctx: Context) -> Built:
    from stickless import AsyncSessionStore, SessionConfig

    loop = ctx.loop
    store = AsyncSessionStore.from_url(ctx.url, SessionConfig(key_prefix=ctx.prefix(name)))

    async def setup() -> str:
        session = store.new()
        session.update(apps.SETUP_DATA)
        await store.save(session)
        return session.token

    token = loop.run_until_complete(setup())
    counter = [0]

    async def untouched(n: int) -> tuple[float, object]:
        started = time.perf_counter()
        for _ in range(n):
            await store.save(store.new())
        return time.perf_counter() - started, None

    async def read(n: int) -> tuple[float, object]:
        value = None
        started = time.perf_counter()
        for _ in range(n):
            s = await store.load(token)
            assert s is not None
            value = s["k1"]
            await store.save(s)
        return time.perf_counter() - started, value

    async def write(n: int) -> tuple[float, object]:
        value = None
        started = time.perf_counter()
        for _ in range(n):
            s = await store.load(token)
            assert s is not None
            s["n"] = value = s["n"] + 1
            await store.save(s)
        return time.perf_counter() - started, value

    def wrap(kind: str, fn: Callable[[int], Awaitable[tuple[float, object]]]) -> Runner:
        def run(n: int) -> float:
            elapsed, value = loop.run_until_complete(fn(n))
            if kind != "untouched":
                _verify(name, kind, str(value).encode(), counter, n)
            return elapsed

        return run

    async def make_shape(shape_name: str) -> None:
        s = store.new()
        if shape_name == "login":
            s.login(apps.USER_ID)
        else:
            s.update(apps.SHAPES[shape_name])
        await store.save(s)

    def close() -> None:
        loop.run_until_complete(store.aclose())

    runners = {
        k: wrap(k, f) for k, f in (("untouched", untouched), ("read", read), ("write", write))
    }
    return Built(runners, lambda s: loop.run_until_complete(make_shape(s)), close)


def _blob_runners(name: str, ctx: Context) -> Built:
    client = redis.Redis.from_url(ctx.url)
    prefix = ctx.prefix(name) + ":"
    key = prefix + secrets.token_urlsafe(32)
    client.set(key, orjson.dumps(apps.SETUP_DATA), ex=apps.COOKIE_TTL)
    counter = [0]

    def untouched(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            pass  # a lazy blob session not used: nothing to do
        return time.perf_counter() - started

    get: Callable[[str], bytes] = client.get  # type: ignore[assignment]
    loads, dumps = orjson.loads, orjson.dumps

    def read(n: int) -> float:
        value = None
        started = time.perf_counter()
        for _ in range(n):
            value = loads(get(key))["k1"]
        elapsed = time.perf_counter() - started
        _verify(name, "read", str(value).encode(), counter, n)
        return elapsed

    def write(n: int) -> float:
        put = client.set
        data: dict[str, Any] = {}
        started = time.perf_counter()
        for _ in range(n):
            data = loads(get(key))
            data["n"] += 1
            put(key, dumps(data), ex=apps.COOKIE_TTL)
        elapsed = time.perf_counter() - started
        _verify(name, "write", str(data["n"]).encode(), counter, n)
        return elapsed

    def shape(shape_name: str) -> None:
        client.set(
            prefix + secrets.token_urlsafe(32),
            orjson.dumps(apps.SHAPES[shape_name]),
            ex=apps.COOKIE_TTL,
        )

    return Built({"untouched": untouched, "read": read, "write": write}, shape, client.close)


def _async_blob_runners(name: str, ctx: Context) -> Built:
    loop = ctx.loop
    client = redis.asyncio.Redis.from_url(ctx.url)
    key = ctx.prefix(name) + ":" + secrets.token_urlsafe(32)
    loop.run_until_complete(client.set(key, orjson.dumps(apps.SETUP_DATA), ex=apps.COOKIE_TTL))
    counter = [0]

    async def untouched(n: int) -> tuple[float, object]:
        started = time.perf_counter()
        for _ in range(n):
            pass
        return time.perf_counter() - started, None

    aget: Callable[[str], Awaitable[bytes]] = client.get  # type: ignore[assignment]

    async def read(n: int) -> tuple[float, object]:
        value = None
        started = time.perf_counter()
        for _ in range(n):
            value = orjson.loads(await aget(key))["k1"]
        return time.perf_counter() - started, value

    async def write(n: int) -> tuple[float, object]:
        data: dict[str, Any] = {}
        started = time.perf_counter()
        for _ in range(n):
            data = orjson.loads(await aget(key))
            data["n"] += 1
            await client.set(key, orjson.dumps(data), ex=apps.COOKIE_TTL)
        return time.perf_counter() - started, data["n"]

    def wrap(kind: str, fn: Callable[[int], Awaitable[tuple[float, object]]]) -> Runner:
        def run(n: int) -> float:
            elapsed, value = loop.run_until_complete(fn(n))
            if kind != "untouched":
                _verify(name, kind, str(value).encode(), counter, n)
            return elapsed

        return run

    runners = {
        k: wrap(k, f) for k, f in (("untouched", untouched), ("read", read), ("write", write))
    }
    return Built(runners, None, lambda: loop.run_until_complete(client.aclose()))


def _floor_runners(name: str, ctx: Context) -> Built:
    value = orjson.dumps(apps.SETUP_DATA)
    key = ctx.prefix(name) + ":" + secrets.token_urlsafe(32)
    two = name.endswith("2rt")
    if name.startswith("aioredis"):
        loop = ctx.loop
        aclient = redis.asyncio.Redis.from_url(ctx.url)
        loop.run_until_complete(aclient.set(key, value, ex=apps.COOKIE_TTL))

        async def abatch(n: int) -> float:
            get, put = aclient.get, aclient.set
            started = time.perf_counter()
            for _ in range(n):
                await get(key)
                if two:
                    await put(key, value, ex=apps.COOKIE_TTL)
            return time.perf_counter() - started

        return Built(
            {FLOOR_KIND: lambda n: loop.run_until_complete(abatch(n))},
            None,
            lambda: loop.run_until_complete(aclient.aclose()),
        )
    client = redis.Redis.from_url(ctx.url)
    client.set(key, value, ex=apps.COOKIE_TTL)

    def batch(n: int) -> float:
        get, put = client.get, client.set
        started = time.perf_counter()
        for _ in range(n):
            get(key)
            if two:
                put(key, value, ex=apps.COOKIE_TTL)
        return time.perf_counter() - started

    return Built({FLOOR_KIND: batch}, None, client.close)


def build(variant: Variant, ctx: Context) -> Built:
    """Build ``variant`` against ``ctx.url`` and create its existing 10-key session."""
    name, prefix = variant.name, ctx.prefix(variant.name)
    cookie = apps.COOKIE_NAMES.get(name, "session")
    if variant.family == "flask":
        peer_prefix = prefix if name.startswith("stickless") else prefix + ":"
        return _sync_web_runners(
            name, WsgiClient(apps.flask_app(name, ctx.url, peer_prefix), cookie)
        )
    if variant.family == "starlette":
        peer_prefix = prefix if name.startswith("stickless") else prefix + ":"
        app = apps.starlette_app(name, ctx.url, peer_prefix)
        return _async_web_runners(name, AsgiClient(app, cookie), ctx.loop)
    if variant.family == "django":
        apps.configure_django(
            ctx.url, ctx.prefix("django-cache"), ctx.prefix("stickless-django"), name
        )
        return _sync_web_runners(name, WsgiClient(apps.django_app(name), cookie))
    if variant.family == "wsgi":
        peer_prefix = prefix if name.startswith("stickless") else prefix + ":"
        app = apps.wsgi_app(name, ctx.url, peer_prefix)
        return _sync_web_runners(name, WsgiClient(app, cookie), session=name != "wsgi-none")
    builders = {
        "stickless-store": _store_runners,
        "stickless-async-store": _async_store_runners,
        "blob-sync": _blob_runners,
        "blob-async": _async_blob_runners,
    }
    if name in builders:
        return builders[name](name, ctx)
    return _floor_runners(name, ctx)


# ------------------------------------------------------------------------------ probe
@dataclass(frozen=True, slots=True)
class Snapshot:
    calls: dict[str, int]
    usec: dict[str, int]
    reads: int
    cpu: float  # seconds, user + sys

    def minus(self, before: Snapshot) -> Snapshot:
        return Snapshot(
            {k: v - before.calls.get(k, 0) for k, v in self.calls.items()},
            {k: v - before.usec.get(k, 0) for k, v in self.usec.items()},
            self.reads - before.reads,
            self.cpu - before.cpu,
        )


@dataclass
class Counted:
    """A counting pass over ``n`` requests."""

    n: int
    reads: int  # server read events (round trips), without the probe's own
    top: Counter[str] = field(default_factory=Counter)  # commands clients sent
    lua: Counter[str] = field(default_factory=Counter)  # commands scripts ran

    @property
    def round_trips(self) -> float:
        return self.reads / self.n

    @property
    def commands(self) -> float:
        return sum(self.top.values()) / self.n

    def share(self, command: str) -> float:
        """Fraction of ``command``'s calls that clients sent (the rest ran inside scripts)."""
        total = self.top[command] + self.lua[command]
        return self.top[command] / total if total else 0.0


class Probe:
    """The benchmark's own connection to the server: INFO snapshots and MONITOR."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(
            url, single_connection_client=True, decode_responses=True
        )
        self.port = str(self.client.client_info()["addr"]).rsplit(":", 1)[1]
        self.info_cpu = 0.0  # Valkey CPU seconds of one snapshot (see calibrate)
        self.idle_cpu_per_s = 0.0

    def snapshot(self) -> Snapshot:
        info = self.client.info("commandstats", "stats", "cpu")
        calls: dict[str, int] = {}
        usec: dict[str, int] = {}
        for key, value in info.items():
            if key.startswith("cmdstat_") and isinstance(value, dict):
                name = key.removeprefix("cmdstat_").upper()
                if name != "INFO":
                    calls[name] = int(value["calls"])
                    usec[name] = int(value["usec"])
        cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return Snapshot(calls, usec, int(info["total_reads_processed"]), cpu)

    def calibrate(self, idle_seconds: float = 1.0, pairs: int = 30) -> None:
        """Measure what the probe itself and the idle server cost in Valkey CPU, so that
        :meth:`net_cpu` can take it out of a batch's delta: one INFO, and the background
        work (serverCron...) per second of wall time."""
        first = last = self.snapshot()
        for _ in range(pairs):
            last = self.snapshot()
        self.info_cpu = max(0.0, (last.cpu - first.cpu) / pairs)
        before = self.snapshot()
        started = time.perf_counter()
        time.sleep(idle_seconds)
        after = self.snapshot()
        idle = after.cpu - before.cpu - self.info_cpu
        self.idle_cpu_per_s = max(0.0, idle / (time.perf_counter() - started))

    def net_cpu(self, delta: Snapshot, wall_s: float) -> float:
        """Valkey CPU seconds of a batch, without the probe's INFO and the idle server."""
        return max(0.0, delta.cpu - self.info_cpu - self.idle_cpu_per_s * wall_s)

    def server_info(self) -> dict[str, Any]:
        info = self.client.info("server")
        config = self.client.config_get("hash-max-listpack-*")
        version = info.get("valkey_version") or info.get("redis_version")
        return {
            "server": "valkey" if "valkey_version" in info else "redis",
            "version": version,
            "io_threads": self.client.config_get("io-threads").get("io-threads"),
            **{str(k): v for k, v in config.items()},
        }

    @contextmanager
    def monitor(self) -> Iterator[Callable[[Runner, int], Counted]]:
        """A MONITOR session; yields ``count(run, n)`` for one counting pass each."""
        watcher = redis.Redis.from_url(self.url, decode_responses=True)
        with watcher.monitor() as mon:  # type: ignore[no-untyped-call]

            def count(run: Runner, n: int) -> Counted:
                before = self.snapshot()
                run(n)
                delta = self.snapshot().minus(before)
                marker = f"slbench-{uuid.uuid4().hex}"
                self.client.echo(marker)
                counted = Counted(n, delta.reads - 1)  # minus the second INFO
                while True:
                    line = mon.next_command()
                    if line["client_port"] == self.port:
                        if line["command"] == f"ECHO {marker}":
                            break
                        continue
                    name = line["command"].split(" ", 1)[0].upper()
                    (counted.lua if line["client_type"] == "lua" else counted.top)[name] += 1
                return counted

            yield count
        watcher.close()


# ------------------------------------------------------------------------- measuring
@dataclass
class CaseResult:
    """One variant and kind: its timed rounds and its counting pass."""

    variant: str
    kind: str
    n: int = 0  # requests per batch
    us: list[float] = field(default_factory=list)  # per round, µs per request
    valkey_rounds: list[float] = field(default_factory=list)  # per round, Valkey µs/request
    cpu_rounds: list[float] = field(default_factory=list)  # per round, Valkey CPU µs/request
    round_trips: float = 0.0
    commands: float = 0.0
    script_commands: float = 0.0
    requests: int = 0  # total timed requests
    cpu_s: float = 0.0  # Valkey CPU over all timed batches
    valkey_s: float = 0.0
    wall_s: float = 0.0
    top_share: dict[str, float] = field(default_factory=dict)

    def add_round(self, elapsed: float, delta: Snapshot, cpu_s: float) -> None:
        """Record one timed batch of ``n`` requests and the server's deltas over it."""
        valkey_s = sum(us * self.top_share.get(c, 0.0) for c, us in delta.usec.items()) / 1e6
        self.us.append(elapsed / self.n * 1e6)
        self.valkey_rounds.append(valkey_s / self.n * 1e6)
        self.cpu_rounds.append(cpu_s / self.n * 1e6)
        self.requests += self.n
        self.wall_s += elapsed
        self.cpu_s += cpu_s
        self.valkey_s += valkey_s

    def as_dict(self) -> dict[str, Any]:
        def median(values: list[float]) -> float:
            return statistics.median(values) if values else 0.0

        return {
            "variant": self.variant,
            "kind": self.kind,
            "n": self.n,
            "us": self.us,
            "round_trips": self.round_trips,
            "commands": self.commands,
            "script_commands": self.script_commands,
            "requests": self.requests,
            "valkey_us": median(self.valkey_rounds),  # median of the rounds (robust to spikes)
            "cpu_us": median(self.cpu_rounds),
            "valkey_us_rounds": self.valkey_rounds,
            "cpu_us_rounds": self.cpu_rounds,
            "valkey_us_total": self.valkey_s * 1e6 / self.requests if self.requests else 0.0,
            "cpu_us_total": self.cpu_s * 1e6 / self.requests if self.requests else 0.0,
            "wall_s": self.wall_s,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    rounds: int
    target_s: float  # wall time of one batch
    min_n: int
    max_n: int
    count_n: int  # requests in the counting pass


QUICK: Final = Plan(rounds=3, target_s=0.01, min_n=10, max_n=300, count_n=10)
FULL: Final = Plan(rounds=15, target_s=0.15, min_n=300, max_n=20000, count_n=50)
"""15 rounds of about 0.15 s batches (not 9 of 0.25 s): the same time, a median over more
per-round ratios, and each pair of compared batches closer in time (on a shared machine the
noise comes in bursts)."""


def lost_updates(url: str, run_id: str, n: int = 50) -> dict[str, int]:
    """n overlapping requests, each adding its own key to one session: how many survive,
    with the stickless store and with the whole-blob model (GET, change, SET)."""
    from stickless import SessionConfig, SessionStore

    store = SessionStore.from_url(url, SessionConfig(key_prefix=prefix_for(run_id, "lost")))
    client = redis.Redis.from_url(url)
    blob = prefix_for(run_id, "lost-blob") + ":" + secrets.token_urlsafe(16)
    try:
        s = store.new()
        s["x"] = 0
        store.save(s)
        client.set(blob, orjson.dumps({"x": 0}), ex=600)

        def ours(i: int) -> None:
            x = store.load(s.token)
            assert x is not None
            x[f"k{i}"] = i
            store.save(x)

        def theirs(i: int) -> None:
            data = orjson.loads(client.get(blob) or b"{}")
            data[f"k{i}"] = i
            client.set(blob, orjson.dumps(data), ex=600)

        for apply in (ours, theirs):
            barrier = threading.Barrier(n)

            def worker(
                i: int, apply: Callable[[int], None] = apply, barrier: threading.Barrier = barrier
            ) -> None:
                barrier.wait()
                apply(i)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        kept_ours = sum(1 for k in store.load(s.token) or {} if k.startswith("k"))
        kept_blob = sum(1 for k in orjson.loads(client.get(blob) or b"{}") if k.startswith("k"))
        return {"requests": n, "stickless": kept_ours, "blob": kept_blob}
    finally:
        store.close()
        client.close()


def new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop
