"""stickless.wsgi.SessionMiddleware around plain WSGI apps, on real Valkey.

Requests go through werkzeug's test client with the app wrapped in ``wsgiref.validate``
(so every response is checked against PEP 3333), and one test through a real wsgiref server.
Round trips are counted by wrapping the store's ``send`` (one call = one pipeline).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.validate import validator

import httpx
import pytest
import redis
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from stickless import SessionConfig, SessionStore
from stickless.embedded import start_standalone
from stickless.errors import ConfigurationError
from stickless.wsgi import LazySession, SessionMiddleware, get_session

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

# ---------------------------------------------------------------------------------- the app


def respond(start_response: StartResponse, body: Any, status: str = "200 OK") -> list[bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json")])
    return [data]


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    lazy: LazySession = environ["stickless.session"] if "stickless.session" in environ else None  # type: ignore[assignment]
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    if path == "/untouched":
        return respond(start_response, b"ok")
    if path == "/read":
        return respond(start_response, dict(lazy))
    if path == "/set":
        lazy.update(query)
        return respond(start_response, get_session(environ))  # the real Session is a dict
    if path == "/incr":
        return respond(start_response, lazy.incr("n"))
    if path == "/ops":
        lazy |= {"a": 1, "b": 2}
        lazy.setdefault("c", [])
        lazy["c"].append(1)
        popped = lazy.pop("a")
        del lazy["b"]
        return respond(start_response, {"popped": popped, "now": dict(lazy), "len": len(lazy)})
    if path.startswith("/login/"):
        lazy.login(path.rsplit("/", 1)[1])
        return respond(start_response, b"in")
    if path == "/logout":
        lazy.logout()
        return respond(start_response, b"out")
    if path == "/logout-everywhere":
        store: SessionStore = environ["stickless.store"]
        assert lazy.user_id is not None
        return respond(start_response, store.revoke_user(lazy.user_id, keep=lazy.load()))
    if path == "/whoami":
        return respond(start_response, lazy.user_id)
    if path == "/generator":
        return generator_app(environ, start_response)
    if path == "/late":
        return late_app(environ, start_response)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        lazy["written"] = True  # after start_response, before the first write
        write(b"via ")
        write(b"write")
        return []
    if path == "/empty":
        start_response("200 OK", [("Content-Type", "text/plain")])
        lazy["empty"] = True
        return []
    if path == "/error":
        lazy["lost"] = True
        raise RuntimeError("app failure")
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        lazy["x"] = 1
        try:
            raise ValueError("late problem")
        except ValueError:
            import sys

            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"error page"]
    if path.startswith("/static/"):
        return respond(start_response, "stickless.session" in environ)
    return respond(start_response, b"not found", "404 Not Found")


def generator_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """Calls start_response first, changes the session, then yields."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    environ["stickless.session"]["from_generator"] = True
    yield b"one "
    yield b"two"


def late_app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """Changes the session after the first chunk (headers already out)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first "
    environ["stickless.session"]["late"] = True
    yield b"second"


def make_app(inner: Any = app, **options: Any) -> Any:
    # arg-type: stickless' StartResponse takes exc_info with a None traceback, typeshed's does
    # not, so mypy sees no WSGIApplication in SessionMiddleware (werkzeug and wsgiref run it)
    return validator(SessionMiddleware(inner, **options))


class Counter:
    def __init__(self, store: SessionStore) -> None:
        self.batches = 0
        original = store.send

        def counting(batch: Any) -> Any:
            self.batches += 1
            return original(batch)

        store.send = counting  # type: ignore[method-assign]

    def take(self) -> int:
        n, self.batches = self.batches, 0
        return n


@pytest.fixture
def store(stickless_url: str) -> Iterator[SessionStore]:
    # warm the script cache: a first use costs a NOSCRIPT retry we do not want to count
    with SessionStore.from_url(stickless_url, SessionConfig(key_prefix="warmup")) as warm:
        s = warm.new()
        s["w"] = 1
        warm.save(s)
        warm.load(s.token)
        warm.destroy(s)
    with SessionStore.from_url(stickless_url) as store:
        yield store


@pytest.fixture
def counter(store: SessionStore) -> Counter:
    return Counter(store)


@pytest.fixture
def client(store: SessionStore) -> Client:
    return Client(make_app(store=store))


def get(client: Client, path: str, token: str | None = None, **kw: Any) -> Any:
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Cookie"] = f"session={token}"
    # not buffered: werkzeug's buffered mode drops what the app passed to write()
    response = client.get(path, headers=headers, **kw)
    response.get_data()
    response.close()  # as a server does: runs the middleware's late save
    return response


def set_cookies(response: Any) -> list[str]:
    return response.headers.getlist("Set-Cookie")  # type: ignore[no-any-return]


def token_of(client: Client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def session_keys(url: str) -> list[str]:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(r.scan_iter("stickless:s:*"))
    finally:
        r.close()


# ----------------------------------------------------------------------------- behaviour


def test_untouched_costs_nothing_even_with_a_cookie(client: Client, counter: Counter) -> None:
    r = get(client, "/set", query_string={"a": "1"})
    assert counter.take() == 1  # new session: no load, one save
    assert len(set_cookies(r)) == 1
    r = get(client, "/untouched")  # the cookie is sent, the app never looks: lazy
    assert r.data == b"ok" and set_cookies(r) == [] and "Vary" not in r.headers
    assert counter.take() == 0


def cacheable_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Routes answered ``Cache-Control: public`` that use the session in various ways."""
    path = environ["PATH_INFO"]
    lazy: LazySession = environ["stickless.session"]
    if path == "/loaded-only":
        get_session(environ)  # loaded, but nothing read or written
    elif path == "/public-read":
        lazy.get("name")
    elif path == "/public-contains":
        assert "name" not in lazy  # a membership test is a read too
    elif path == "/public-login":
        lazy.login("carol")  # nothing read: the session is not "accessed"
    elif path == "/public-logout":
        lazy.logout()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "public")])
    return [b"ok"]


def test_unused_session_leaves_the_cookie_alone_and_cookie_changes_carry_vary(
    store: SessionStore,
) -> None:
    """The cookie is touched only when the request used the session, and every response
    that sets or deletes it carries ``Vary: Cookie`` (a login or logout that reads nothing
    used to send ``Set-Cookie`` without it, on a ``Cache-Control: public`` response)."""
    wsgi = make_app(cacheable_app, store=store)
    client, probe = Client(wsgi), Client(wsgi, use_cookies=False)
    unknown = "AAAAAAAAAAA." + "B" * 43  # well formed, never issued
    r = get(probe, "/loaded-only", token=unknown)
    assert set_cookies(r) == [] and "Vary" not in r.headers

    for read in ("/public-read", "/public-contains"):  # used: the dead cookie goes
        r = get(probe, read, token=unknown)
        (deletion,) = set_cookies(r)
        assert "Max-Age=0" in deletion and r.headers.getlist("Vary") == ["Cookie"]

    r = get(client, "/public-login")
    (issued,) = set_cookies(r)
    assert "Max-Age=0" not in issued and r.headers.getlist("Vary") == ["Cookie"]
    r = get(client, "/public-logout")
    (deletion,) = set_cookies(r)
    assert "Max-Age=0" in deletion and r.headers.getlist("Vary") == ["Cookie"]


def test_read_and_write_round_trips(client: Client, counter: Counter) -> None:
    get(client, "/set", query_string={"a": "1"})
    counter.take()
    r = get(client, "/read")
    assert r.json == {"a": "1"} and set_cookies(r) == []
    assert r.headers["Vary"] == "Cookie"
    assert counter.take() == 1
    r = get(client, "/set", query_string={"b": "2"})
    assert r.json == {"a": "1", "b": "2"} and set_cookies(r) == []
    assert counter.take() == 2


def test_read_without_cookie_costs_nothing(client: Client, counter: Counter) -> None:
    r = get(client, "/read")
    assert r.json == {} and set_cookies(r) == []
    assert counter.take() == 0


def test_new_session_cookie(stickless_url: str) -> None:
    client = Client(make_app(url=stickless_url))
    (cookie,) = set_cookies(get(client, "/set", query_string={"a": "1"}))
    assert cookie.startswith("session=")
    for part in ("path=/", "httponly", "samesite=lax"):
        assert part in cookie
    assert "secure" not in cookie
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 14 * 24 * 3600 - 5 <= max_age <= 14 * 24 * 3600
    https = Client(make_app(url=stickless_url, max_age=None))
    (cookie,) = set_cookies(
        get(https, "/set", query_string={"a": "1"}, base_url="https://localhost")
    )
    assert "secure" in cookie and "Max-Age" not in cookie


def test_dict_operations(client: Client) -> None:
    r = get(client, "/ops")
    assert r.json == {"popped": 1, "now": {"c": [1]}, "len": 1}
    assert get(client, "/read").json == {"c": [1]}


def test_incr(client: Client) -> None:
    assert [get(client, "/incr").json for _ in range(3)] == [1, 2, 3]


def test_generator_app_changes_before_first_chunk(client: Client) -> None:
    r = get(client, "/generator")  # start_response came first, then the change: held back
    assert r.data == b"one two"
    assert len(set_cookies(r)) == 1
    assert get(client, "/read").json == {"from_generator": True}


def test_legacy_write_callable(client: Client) -> None:
    r = get(client, "/write")
    assert r.data == b"via write" and len(set_cookies(r)) == 1
    assert get(client, "/read").json == {"written": True}


def test_empty_body(client: Client) -> None:
    r = get(client, "/empty")
    assert r.data == b"" and len(set_cookies(r)) == 1
    assert get(client, "/read").json == {"empty": True}


def test_late_change_saved_for_an_existing_session(client: Client, stickless_url: str) -> None:
    r = get(client, "/late")  # new session, changed after the headers: not saved
    assert r.data == b"first second" and set_cookies(r) == []
    assert session_keys(stickless_url) == []
    get(client, "/set", query_string={"a": "1"})
    get(client, "/late")  # existing session: saved when the server closes the response
    assert get(client, "/read").json == {"a": "1", "late": True}


def test_exc_info_replaces_the_held_back_response(client: Client) -> None:
    r = get(client, "/exc-info")
    assert r.status_code == 500 and r.data == b"error page"
    assert get(client, "/read").json == {"x": 1}  # the response went out: session saved


def test_failing_app_saves_nothing(client: Client) -> None:
    get(client, "/set", query_string={"a": "1"})
    with pytest.raises(RuntimeError):
        get(client, "/error")
    assert get(client, "/read").json == {"a": "1"}


def test_login_logout_and_logout_everywhere(stickless_url: str) -> None:
    wsgi = make_app(url=stickless_url)
    laptop, phone = Client(wsgi), Client(wsgi)
    get(laptop, "/set", query_string={"cart": "apple"})
    anonymous = token_of(laptop)
    r = get(laptop, "/login/alice")
    assert len(set_cookies(r)) == 1 and token_of(laptop) != anonymous
    assert get(laptop, "/read").json == {"cart": "apple"}
    probe = Client(wsgi, use_cookies=False)
    assert get(probe, "/read", token=anonymous).json == {}  # fixation: old token dead
    get(phone, "/login/alice")
    assert get(laptop, "/logout-everywhere").json == 1
    assert get(phone, "/whoami").json is None
    assert get(laptop, "/whoami").json == "alice"
    token = token_of(laptop)
    (cookie,) = set_cookies(get(laptop, "/logout"))
    assert "Max-Age=0" in cookie
    assert get(probe, "/whoami", token=token).json is None
    assert session_keys(stickless_url) == []


def test_an_empty_loaded_session_is_still_the_session(client: Client) -> None:
    get(client, "/login/erin")  # a user, no data: the loaded session is an empty dict
    r = get(client, "/whoami")
    assert r.json == "erin" and set_cookies(r) == []
    r = get(client, "/set", query_string={"a": "1"})
    assert set_cookies(r) == [] and get(client, "/whoami").json == "erin"


def test_header_transport(stickless_url: str) -> None:
    client = Client(
        make_app(url=stickless_url, header="X-Session-Token", cookie=False), use_cookies=False
    )
    r = get(client, "/set", query_string={"a": "1"})
    token = r.headers["X-Session-Token"]
    assert set_cookies(r) == []
    r = get(client, "/read", headers={"X-Session-Token": token})
    assert r.json == {"a": "1"}
    assert r.headers.getlist("Vary") == ["X-Session-Token"]


def test_exclude_paths(store: SessionStore, counter: Counter) -> None:
    client = Client(make_app(store=store, exclude_paths=["/static/"]))
    get(client, "/set", query_string={"a": "1"})
    counter.take()
    assert get(client, "/static/x").json is False
    assert counter.take() == 0


def test_options_are_checked(stickless_url: str) -> None:
    with pytest.raises(ConfigurationError):
        SessionMiddleware(app, url=stickless_url, cookie=False)
    with pytest.raises(ConfigurationError):
        SessionMiddleware(app, url=stickless_url, exclude_paths="/static")
    with pytest.raises(ConfigurationError):
        SessionMiddleware(app, store=SessionStore.from_url(stickless_url), config=SessionConfig())
    mw = SessionMiddleware(app, stickless_url, max_age=600, secret_key="k")
    assert mw.store.config.idle_timeout == 600 and mw.store.config.secret_key == "k"


def test_lazy_session_repr_never_shows_values(store: SessionStore) -> None:
    seen: list[str] = []

    def peek(environ: Environ, start_response: StartResponse) -> list[bytes]:
        lazy = environ["stickless.session"]
        seen.append(repr(lazy))
        lazy["secret"] = "hunter2"
        seen.append(repr(lazy))
        return respond(start_response, b"ok")

    get(Client(make_app(peek, store=store)), "/")
    assert seen[0] == "<LazySession (not loaded)>"
    assert "hunter2" not in seen[1] and "secret" in seen[1]


HOSTILE = [
    "session=" + "A" * 100_000,
    "session=" + bytes(range(1, 256)).replace(b";", b"").decode("latin-1"),
    "session=é☃".encode().decode("latin-1"),
    "session=a;b=c",
    "session=a; session=b",
    'session="q"',
    "session=" + "A" * 11 + "." + "B" * 43 + "\x00",
    "session={x}:*",
    "session",
    "=;;=",
    "; ".join(f"c{i}={i}" for i in range(2000)),
]


def test_hostile_cookies_never_fail(stickless_url: str) -> None:
    wsgi = make_app(url=stickless_url, header="X-Session-Token", secret_key="k")
    for raw in HOSTILE:
        for path in ("/read", "/set"):
            environ = EnvironBuilder(path=path, query_string="x=1").get_environ()
            environ["HTTP_COOKIE"] = raw
            environ["HTTP_X_SESSION_TOKEN"] = raw[8:]
            _, status, headers = run_wsgi_app(wsgi, environ, buffered=True)
            assert status.startswith("200"), raw[:40]
            if path == "/set":
                assert headers["Set-Cookie"].startswith("session=")
                assert "Max-Age=0" not in headers["Set-Cookie"]


def test_concurrent_requests_keep_every_change(stickless_url: str) -> None:
    wsgi = make_app(url=stickless_url)
    first = Client(wsgi)
    get(first, "/set", query_string={"seed": "1"})
    token = token_of(first)

    def one(i: int) -> int:
        c = Client(wsgi, use_cookies=False)
        path, query = ("/set", {f"k{i}": str(i)}) if i % 2 else ("/incr", {})
        return int(get(c, path, token=token, query_string=query).status_code)

    with ThreadPoolExecutor(max_workers=25) as pool:
        assert set(pool.map(one, range(100))) == {200}
    data = get(first, "/read").json
    assert {k for k in data if k.startswith("k")} == {f"k{i}" for i in range(1, 100, 2)}
    assert data["n"] == 50


# ------------------------------------------------------------------------ store failures

FAST = SessionConfig(connect_timeout=0.5, socket_timeout=0.5, retries=1, retry_backoff=0.05)
BOUND = FAST.socket_timeout * (FAST.retries + 1) + FAST.retry_backoff * 2 + 1.0


def test_store_down_503_then_recovery() -> None:
    server = start_standalone()
    port = server.node.port
    try:
        client = Client(make_app(url=server.url, config=FAST))
        get(client, "/set", query_string={"a": "1"})
        server.stop()
        started = time.monotonic()
        r = get(client, "/read")  # the load, at first access, fails
        assert r.status_code == 503 and time.monotonic() - started < BOUND
        assert r.headers["Retry-After"] == "1" and set_cookies(r) == []
        assert get(client, "/untouched").status_code == 200  # lazy: no Redis needed
        fresh = Client(make_app(url=server.url, config=FAST))
        r = get(fresh, "/set", query_string={"b": "2"})  # no token: the save fails
        assert r.status_code == 503 and r.data.startswith(b"Session store unavailable")
        assert get(fresh, "/write").status_code == 503  # save failing inside write()
        assert get(fresh, "/generator").status_code == 503

        server = start_standalone(port=port)
        r = get(fresh, "/set", query_string={"c": "3"})
        assert r.status_code == 200 and len(set_cookies(r)) == 1
        assert get(fresh, "/read").json == {"c": "3"}
    finally:
        server.stop()


def test_hung_store_503_within_timeout() -> None:
    with start_standalone() as server:
        client = Client(make_app(url=server.url, config=FAST))
        get(client, "/set", query_string={"a": "1"})
        os.kill(server.node.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = get(client, "/read")
            elapsed = time.monotonic() - started
        finally:
            os.kill(server.node.pid, signal.SIGCONT)
        assert r.status_code == 503
        assert FAST.socket_timeout <= elapsed < BOUND
        assert get(client, "/read").json == {"a": "1"}


def test_fail_open() -> None:
    with start_standalone() as server:
        client = Client(make_app(url=server.url, config=FAST, fail_open=True))
        get(client, "/set", query_string={"a": "1"})
        server.stop()
        r = get(client, "/read")
        assert r.status_code == 200 and r.json == {} and set_cookies(r) == []
        r = get(client, "/set", query_string={"b": "2"})
        assert r.status_code == 200 and set_cookies(r) == []
        fresh = Client(make_app(url=server.url, config=FAST, fail_open=True))
        r = get(fresh, "/set", query_string={"c": "3"})  # a new session's save fails
        assert r.status_code == 200 and set_cookies(r) == []


# ------------------------------------------------------------------- a real WSGI server


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_under_wsgiref_server(stickless_url: str) -> None:
    server = make_server("127.0.0.1", 0, make_app(url=stickless_url), handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with httpx.Client(base_url=base) as http:
            assert http.get("/generator").text == "one two"
            assert http.get("/write").text == "via write"
            assert http.get("/late").text == "first second"
            assert http.get("/read").json() == {
                "from_generator": True,
                "written": True,
                "late": True,
            }
    finally:
        server.shutdown()
        server.server_close()
