"""Migration from Starlette's signed-cookie ``SessionMiddleware`` to stickless's.

The old cookies are written by the real ``starlette.middleware.sessions.SessionMiddleware``
through Starlette's test client; then the same routes run behind stickless's middleware with
``migrate_from=StarletteCookie(secret_key=...)``, on real Valkey. Proved here: data and
login survive; the cookie can be migrated again only within the grace (its mark in Redis),
so a copy replayed later, or after a logout, is worthless; forged, expired and planted
(pickle) cookies give a fresh session and leave no mark; nothing secret is logged.
"""

from __future__ import annotations

import base64
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import redis
from itsdangerous import TimestampSigner

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from starlette.applications import Starlette  # noqa: E402
from starlette.datastructures import Secret  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.sessions import SessionMiddleware as StarletteSessions  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from migrate_helpers import (  # noqa: E402
    PROTOCOLS,
    assert_live,
    assert_nothing_secret_logged,
    planted,
)
from stickless.asgi import SessionMiddleware  # noqa: E402
from stickless.errors import ConfigurationError  # noqa: E402
from stickless.migrate import StarletteCookie  # noqa: E402
from test_migrate_starsessions import PROFILE, ROUTES, client_with  # noqa: E402

OLD_SECRET = "the secret Starlette signed with"


def old_cookie(**options: Any) -> tuple[str, dict[str, object]]:
    """alice logged in on Starlette's own middleware: (her cookie, what the app saw)."""
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(StarletteSessions, secret_key=OLD_SECRET, **options)],
    )
    with TestClient(app) as client:
        assert client.post("/login").status_code == 200
        assert client.get("/whoami").json() == {"user": "alice"}
        return client.cookies["session"], client.get("/data").json()


def new_app(url: str, source: StarletteCookie, **options: Any) -> Starlette:
    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(SessionMiddleware, url=url, migrate_from=source, **options)],
    )


def marks(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        return {key.decode(): client.pttl(key) for key in client.scan_iter("stickless:migrated:*")}
    finally:
        client.close()


def signed(payload: bytes, secret: str = OLD_SECRET) -> str:
    """A cookie as Starlette makes it, around any payload."""
    return TimestampSigner(secret).sign(base64.b64encode(payload)).decode()


# ---------------------------------------------------------------------------- tests
def test_users_stay_logged_in_across_the_switch(
    stickless_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    cookie, view = old_cookie(max_age=3600)
    assert view == {"user": "alice", "cart": ["apple", "pear"], "profile": PROFILE}
    caplog.set_level(logging.INFO, logger="stickless")
    app = new_app(stickless_url, StarletteCookie(secret_key=Secret(OLD_SECRET), max_age=3600))
    with client_with(app, cookie) as client:
        assert client.get("/whoami").json() == {"user": "alice"}
        token = client.cookies["session"]
        assert token != cookie and len(token) < 100  # a stickless token, not the data
        assert client.get("/data").json() == view
    (ttl,) = marks(stickless_url).values()  # the mark lives as long as the signature would
    assert 3590_000 < ttl <= 3661_000  # (+ the grace, for clock skew)
    with client_with(app, cookie) as parallel:  # sent with the old cookie meanwhile
        assert parallel.get("/whoami").json() == {"user": "alice"}
    assert any("migrated from Starlette's cookie" in r.getMessage() for r in caplog.records)
    assert_nothing_secret_logged(caplog, cookie, token, "apple", OLD_SECRET)


def test_a_migrated_cookie_is_worthless_after_the_grace(stickless_url: str) -> None:
    cookie, _ = old_cookie()
    app = new_app(stickless_url, StarletteCookie(secret_key=OLD_SECRET, grace=1))
    with client_with(app, cookie) as client:
        assert client.get("/whoami").json() == {"user": "alice"}
        client.post("/logout")  # stickless's logout: server side
        assert client.get("/whoami").json() == {"user": None}
    time.sleep(1.2)
    with client_with(app, cookie) as replay:  # a copy of the old cookie cannot log back in
        assert replay.get("/whoami").json() == {"user": None}
        assert replay.get("/data").json() == {}
    assert len(marks(stickless_url)) == 1


def test_key_rotation_and_max_age(stickless_url: str) -> None:
    cookie, _ = old_cookie(max_age=1)
    rotated = StarletteCookie(secret_key=["a newer secret", OLD_SECRET], max_age=1)
    with client_with(new_app(stickless_url, rotated), cookie) as client:
        assert client.get("/whoami").json() == {"user": "alice"}  # any of the keys
    cookie, _ = old_cookie(max_age=1)
    time.sleep(2.1)  # older than max_age: Starlette would refuse it too
    with client_with(new_app(stickless_url, rotated), cookie) as client:
        assert client.get("/whoami").json() == {"user": None}
    assert len(marks(stickless_url)) == 1  # only the valid one left a mark


def test_forged_cookies_read_nothing_and_leave_no_mark(stickless_url: str) -> None:
    cookie, _ = old_cookie()
    app = new_app(stickless_url, StarletteCookie(secret_key=OLD_SECRET))
    data, _, _ = cookie.rpartition(".")
    forged = [
        signed(b'{"user": "mallory"}', secret="not the secret"),
        data + ".AAAAAAAAAAAAAAAAAAAAAAAAAAA",
        cookie.replace(cookie[2], "A" if cookie[2] != "A" else "B", 1),
        "x" * 9000,
    ]
    for value in forged:
        with client_with(app, value) as client:
            assert client.get("/whoami").json() == {"user": None}
    assert marks(stickless_url) == {}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_planted_pickle_is_never_executed(
    stickless_url: str, tmp_path: Path, protocol: int
) -> None:
    """Even correctly signed (someone who has the secret): JSON only, never unpickled."""
    marker = tmp_path / "pwned"
    app = new_app(stickless_url, StarletteCookie(secret_key=OLD_SECRET))
    with client_with(app, signed(planted(marker, protocol))) as client:
        assert client.get("/whoami").json() == {"user": None}
        assert client.get("/data").json() == {}
    assert not marker.exists()
    assert marks(stickless_url) == {}
    assert_live(tmp_path, protocol)


@pytest.mark.parametrize("payload", [b"[1, 2]", b"null", b"not json", b"\xff\xfe"])
def test_payloads_that_are_no_session(stickless_url: str, payload: bytes) -> None:
    app = new_app(stickless_url, StarletteCookie(secret_key=OLD_SECRET))
    with client_with(app, signed(payload)) as client:
        assert client.get("/whoami").json() == {"user": None}
    assert marks(stickless_url) == {}


def test_the_mark_store_down_is_a_503(stickless_url: str) -> None:
    cookie, _ = old_cookie()
    app = new_app("redis://127.0.0.1:1/0", StarletteCookie(secret_key=OLD_SECRET))
    with client_with(app, cookie) as client:
        response = client.get("/whoami")
        assert response.status_code == 503
        assert "set-cookie" not in response.headers


def test_options_are_checked() -> None:
    for bad in (None, "", [], ["ok", ""]):
        with pytest.raises(ConfigurationError, match="secret_key"):
            StarletteCookie(secret_key=bad)
    with pytest.raises(ConfigurationError, match="max_age"):
        StarletteCookie(secret_key="s", max_age=0)
    assert OLD_SECRET not in repr(StarletteCookie(secret_key=OLD_SECRET))
