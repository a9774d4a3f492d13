"""Review of 4a48a12 (a token verified once, the presented value kept, 128-bit digests):
key rotation through the store and the adapters, removed keys, other salts, hostile
signatures, the unsigned configuration, and what someone reading Redis can present."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from itsdangerous import Signer

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import flask  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from stickless import SessionConfig, SessionStore  # noqa: E402
from stickless.asgi import SessionMiddleware  # noqa: E402
from stickless.flask import Stickless  # noqa: E402
from stickless.tokens import TokenCodec, new_raw_token  # noqa: E402


@pytest.fixture
def stores(stickless_url: str) -> Iterator[Any]:
    made: list[SessionStore] = []

    def build(secret_key: Any) -> SessionStore:
        store = SessionStore.from_url(stickless_url, SessionConfig(secret_key=secret_key))
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


def saved_with(store: SessionStore, **data: Any) -> str:
    session = store.new()
    session.update(data)
    store.save(session)
    return session.token


# ------------------------------------------------------------------------------ the store
def test_an_old_key_loads_and_is_signed_again_with_the_newest(stores: Any) -> None:
    token = saved_with(stores("k-old"), a=1)
    rotated = stores(["k-old", "k-new"])
    session = rotated.load(token)
    assert session is not None and dict(session) == {"a": 1}
    assert session.token != token
    assert session.token == TokenCodec("k-new").dump(session.raw_token)
    session["b"] = 2
    rotated.save(session)  # a save that does not renew keeps the newest-key value
    assert session.token == TokenCodec("k-new").dump(session.raw_token)
    retired = stores("k-new")  # the old key removed
    assert retired.load(token) is None
    reloaded = retired.load(session.token)
    assert reloaded is not None and dict(reloaded) == {"a": 1, "b": 2}


def test_the_newest_key_keeps_the_presented_value(stores: Any) -> None:
    rotated = stores(["k-old", "k-new"])
    token = saved_with(rotated, a=1)
    session = rotated.load(token)
    assert session is not None and session.token == token


def test_a_token_signed_for_another_salt_or_key_is_refused(stores: Any) -> None:
    store = stores(["k-old", "k-new"])
    token = saved_with(store, a=1)
    raw = token.rsplit(".", 1)[0]
    other_salt = Signer("k-new", salt="itsdangerous.Signer", digest_method=hashlib.sha256)
    assert store.load(other_salt.sign(raw).decode()) is None
    sha1 = Signer("k-new", salt="stickless.token", sep=".")  # itsdangerous's default digest
    assert store.load(sha1.sign(raw).decode()) is None
    assert store.load(TokenCodec("k-other").dump(raw)) is None
    assert store.load(raw) is None  # unsigned under a signed configuration


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sig: sig[:-1],
        lambda sig: sig[:-4],
        lambda sig: sig + "A",
        lambda sig: sig + "AAAA",
        lambda sig: "",
        lambda sig: "=",
        lambda sig: sig[1:],
        lambda sig: sig[::-1],
        lambda sig: sig[:20] + "!" + sig[21:],
        lambda sig: sig + "\r\nSet-Cookie: x=y",
        lambda sig: sig + "\x00",
        lambda sig: sig + "." + sig,
        lambda sig: "A" * 43,
        lambda sig: "A" * 200,
    ],
)
def test_hostile_signatures_are_refused(stores: Any, mangle: Any) -> None:
    store = stores(["k-old", "k-new"])
    token = saved_with(store, a=1)
    raw, _, signature = token.rpartition(".")
    assert store.load(f"{raw}.{mangle(signature)}") is None


def test_the_unsigned_configuration_takes_the_raw_token_only(stores: Any) -> None:
    store = stores(None)
    token = saved_with(store, a=1)
    assert token.count(".") == 1
    session = store.load(token)
    assert session is not None and session.token == token
    for hostile in (token + "=", token + " ", token + ".sig", " " + token, token.upper()):
        assert store.load(hostile) is None
    signed = TokenCodec("k").dump(token)
    assert store.load(signed) is None


@pytest.mark.parametrize("secret_key", [None, "k"])
def test_what_redis_holds_cannot_be_presented(
    stores: Any, stickless_url: str, secret_key: str | None
) -> None:
    store = stores(secret_key)
    token = saved_with(store, a=1)
    family = token.split(".")[0]
    client: Any = redis.Redis.from_url(stickless_url, decode_responses=True)
    try:
        stored: dict[str, str] = client.hgetall(f"stickless:s:{{{family}}}")
        dump = " ".join(
            key + " " + " ".join(f"{f} {v}" for f, v in client.hgetall(key).items())
            for key in client.scan_iter("*")
            if client.type(key) == "hash"
        )
    finally:
        client.close()
    (digest,) = [name[2:] for name in stored if name.startswith("k:")]
    assert len(digest) == 22
    secret = token.split(".")[1]
    assert secret not in dump  # the token's secret is nowhere in Redis
    padded = (digest * 2)[:43]
    for candidate in (
        f"{family}.{digest}",
        f"{family}.{padded}",
        f"{family}.{padded}.{TokenCodec('k').dump(f'{family}.{padded}').rsplit('.', 1)[1]}",
        digest,
        family,
    ):
        assert store.load(candidate) is None


def test_a_fresh_token_of_a_known_family_is_not_the_session(stores: Any) -> None:
    store = stores("k")
    token = saved_with(store, a=1)
    family = token.split(".")[0]
    guess = TokenCodec("k").dump(new_raw_token(family))
    assert store.load(guess) is None


# ---------------------------------------------------------------------------- adapters
async def read(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


def asgi_app(url: str, secret_key: Any, **options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/read", read)],
        middleware=[Middleware(SessionMiddleware, url=url, secret_key=secret_key, **options)],
    )


def test_asgi_read_with_an_old_key_gets_the_newest_signature(
    stores: Any, stickless_url: str
) -> None:
    token = saved_with(stores("k-old"), a=1)
    raw = token.rsplit(".", 1)[0]
    newest = TokenCodec("k-new").dump(raw)
    with TestClient(asgi_app(stickless_url, ["k-old", "k-new"])) as client:
        response = client.get("/read", headers={"cookie": f"session={token}"})
        assert response.json() == {"a": 1}
        (cookie,) = response.headers.get_list("set-cookie")
        assert cookie.startswith(f"session={newest};")
        again = client.get("/read", headers={"cookie": f"session={newest}"})
        assert again.json() == {"a": 1} and again.headers.get_list("set-cookie") == []
    with TestClient(asgi_app(stickless_url, "k-new")) as client:  # the old key removed
        assert client.get("/read", headers={"cookie": f"session={token}"}).json() == {}
        assert client.get("/read", headers={"cookie": f"session={newest}"}).json() == {"a": 1}


def test_asgi_header_transport_with_an_old_key_gets_the_newest_signature(
    stores: Any, stickless_url: str
) -> None:
    token = saved_with(stores("k-old"), a=1)
    newest = TokenCodec("k-new").dump(token.rsplit(".", 1)[0])
    app = asgi_app(stickless_url, ["k-old", "k-new"], header="X-Session-Token")
    with TestClient(app) as client:
        response = client.get("/read", headers={"x-session-token": token})
        assert response.json() == {"a": 1}
        assert response.headers["x-session-token"] == newest


def test_flask_read_with_an_old_key_gets_the_newest_signature(stickless_url: str) -> None:
    made: list[flask.Flask] = []

    def make(**config: Any) -> flask.Flask:
        app = flask.Flask(f"review-{len(made)}")
        made.append(app)
        app.config.update(TESTING=True, STICKLESS_URL=stickless_url, **config)
        Stickless(app)
        app.add_url_rule("/read", "read", lambda: dict(flask.session))

        @app.post("/write")
        def write() -> dict[str, str]:
            flask.session["a"] = "1"
            return {}

        return app

    old = make(SECRET_KEY="old-secret")
    writer = old.test_client()
    writer.post("/write")
    cookie = writer.get_cookie("session")
    assert cookie is not None
    token = cookie.value
    rotated = make(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["old-secret"])
    response = rotated.test_client(use_cookies=False).get(
        "/read", headers={"Cookie": f"session={token}"}
    )
    assert response.json == {"a": "1"}
    (issued,) = response.headers.getlist("Set-Cookie")
    newest = issued.split(";")[0].split("=", 1)[1]
    assert newest != token and newest.rsplit(".", 1)[0] == token.rsplit(".", 1)[0]
    replaced = make(SECRET_KEY="new-secret")
    client = replaced.test_client(use_cookies=False)
    assert client.get("/read", headers={"Cookie": f"session={token}"}).json == {}
    assert client.get("/read", headers={"Cookie": f"session={newest}"}).json == {"a": "1"}
    for app in made:
        app.extensions["stickless"].store.close()
