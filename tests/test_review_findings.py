"""The review's findings, as regression tests: only the canonical signed token is accepted
(no padding, junk or twin of its last character kept as the client's value, nothing
injected into Set-Cookie, Django can always encode its cookie); Django re-signs an old-key
cookie on a read-only request; a refused login leaves no device for the next plain save."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import redis

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
sys.path.insert(0, str(Path(__file__).parent / "apps"))

from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from stickless import SessionConfig, SessionStore, TooManySessions  # noqa: E402
from stickless.asgi import SessionMiddleware  # noqa: E402
from stickless.tokens import TokenCodec, new_raw_token  # noqa: E402


# ------------------------------------------------------------- F1: lax signature decoding
@pytest.mark.parametrize("suffix", ["=", "==", "=x", "= junk", "\u00e9", "\u20ac", "   "])
def test_f1_only_the_canonical_signature_is_accepted(suffix: str) -> None:
    codec = TokenCodec(["k-old", "k-new"])
    token = codec.dump(new_raw_token())
    assert codec.open(token + suffix) is None


def test_f1_the_low_bits_of_the_last_character_are_not_a_second_signature() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    codec = TokenCodec("k")
    token = codec.dump(new_raw_token())
    last = token[-1]
    twin = token[:-1] + alphabet[alphabet.index(last) ^ 1]
    assert codec.open(twin) is None


async def remember(request: Request) -> JSONResponse:
    request.session.set_lifetime(idle=3600, absolute=7200)  # type: ignore[attr-defined]
    return JSONResponse({})


def test_f1_the_presented_value_is_never_written_into_set_cookie(stickless_url: str) -> None:
    store = SessionStore.from_url(stickless_url, SessionConfig(secret_key="k"))
    session = store.new()
    session["a"] = 1
    store.save(session)
    app = Starlette(
        routes=[Route("/remember", remember)],
        middleware=[
            Middleware(
                SessionMiddleware, url=stickless_url, secret_key="k", header="X-Session-Token"
            )
        ],
    )
    with TestClient(app) as client:
        evil = session.token + "=; Domain=localhost; SameSite=None"
        response = client.get("/remember", headers={"x-session-token": evil})
        (cookie,) = response.headers.get_list("set-cookie")
        assert "Domain=" not in cookie and "SameSite=None" not in cookie
        assert "Domain" not in response.headers["x-session-token"]
        assert response.headers["x-session-token"] != session.token  # not canonical: refused
    store.close()


def test_f1_django_can_always_encode_the_cookie_it_sets(stickless_url: str) -> None:
    from django_project.testing import configure

    configure()
    from django.test import Client, override_settings

    config = SessionConfig(secret_key="k")
    with override_settings(STICKLESS_URL=stickless_url, STICKLESS_CONFIG=config):
        client = Client()
        client.get("/set", {"key": "a", "value": "1"})
        token = client.cookies["sessionid"].value
        # a WSGI server hands UTF-8 cookie bytes as latin-1 text; Django decodes them
        junk = token + "\u20ac".encode().decode("latin-1")
        response = Client().get("/set", {"key": "b", "value": "2"}, HTTP_COOKIE=f"sessionid={junk}")
        header = response.cookies["sessionid"].output(header="")
        header.encode("latin-1")


# ------------------------------------- F2: Django never re-issues an old-key cookie on reads
def test_f2_django_read_with_an_old_key_gets_the_newest_signature(stickless_url: str) -> None:
    from django_project.testing import configure

    configure()
    from django.test import Client, override_settings

    with override_settings(
        STICKLESS_URL=stickless_url, STICKLESS_CONFIG=SessionConfig(secret_key="k-old")
    ):
        writer = Client()
        writer.get("/set", {"key": "a", "value": "1"})
        old = writer.cookies["sessionid"].value
    rotated = SessionConfig(secret_key=["k-old", "k-new"])
    with override_settings(STICKLESS_URL=stickless_url, STICKLESS_CONFIG=rotated):
        response = Client().get("/read", HTTP_COOKIE=f"sessionid={old}")
        assert response.json() == {"a": "1"}
        assert "sessionid" in response.cookies


# ------------------------------- F3: a device recorded by a save that is no creation or login
def test_f3_a_refused_login_leaves_no_device_for_the_next_plain_save(stickless_url: str) -> None:
    config = SessionConfig(max_sessions_per_user=1, on_limit="refuse", device_ip="full")
    store = SessionStore.from_url(stickless_url, config)
    other = store.new()
    other.login("alice")
    store.save(other)
    anonymous = store.new()
    anonymous["cart"] = [1]
    store.save(anonymous)  # no device noted: none recorded
    session = store.load(anonymous.token)
    assert session is not None
    session.note_device(
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", address="203.0.113.9"
    )
    session.user_id = "alice"
    with pytest.raises(TooManySessions):
        store.save(session)
    session.user_id = None  # the app gives the login up and keeps the anonymous session
    session["flash"] = "too many devices"
    store.save(session)  # a plain data save
    client: Any = redis.Redis.from_url(stickless_url, decode_responses=True)
    fields = client.hgetall(f"stickless:s:{{{session.token_id.family}}}")
    client.close()
    store.close()
    assert "m:ua" not in fields and "m:ip" not in fields
