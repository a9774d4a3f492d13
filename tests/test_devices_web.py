"""Issue 12, item 5: the 'your devices' endpoints of every framework, through its own test
client, against a real Valkey: the list (this device marked, JSON and an escaped HTML page),
sign out one (owner-checked: another user's session id is refused), sign out the others,
name this device; cross-site changes are refused (same-origin check; Django's CSRF)."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path
from typing import Any

import flask
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from django_project.testing import configure

configure()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from stickless import SessionConfig  # noqa: E402
from stickless.asgi import SessionMiddleware, load_session  # noqa: E402
from stickless.django import get_store  # noqa: E402
from stickless.flask import Stickless, current_session  # noqa: E402
from stickless.web.devices import same_origin  # noqa: E402
from stickless.web.devices.flask import devices_blueprint  # noqa: E402
from stickless.web.devices.starlette import devices_app  # noqa: E402

HOSTILE = "<script>alert(1)</script>"
JSON = {"Accept": "application/json"}


def config() -> SessionConfig:
    return SessionConfig(key_prefix=f"dw{uuid.uuid4().hex[:8]}")


# ===================================================================== the guard
@pytest.mark.parametrize(
    ("method", "headers", "allowed"),
    [
        ("GET", {}, True),
        ("POST", {"origin": "http://app.example"}, True),
        ("POST", {"origin": "https://app.example"}, True),  # TLS ended at a proxy
        ("POST", {"origin": "https://app.example:8443"}, False),
        ("DELETE", {"origin": "https://evil.example"}, False),
        ("POST", {"referer": "https://app.example/account/devices/"}, True),
        ("POST", {"origin": "null", "referer": "https://evil.example/"}, False),
        ("POST", {}, False),
        ("POST", {"origin": "http://app.example", "fetch_site": "cross-site"}, False),
        ("POST", {"origin": "https://admin.example"}, True),  # trusted
        ("POST", {"origin": "not a url"}, False),
    ],
)
def test_same_origin(method: str, headers: dict[str, str], allowed: bool) -> None:
    found = same_origin(
        method,
        host="app.example",
        origin=headers.get("origin"),
        referer=headers.get("referer"),
        fetch_site=headers.get("fetch_site"),
        trusted_origins=["https://admin.example"],
    )
    assert found is allowed


# ================================================================ Starlette / FastAPI
ORIGIN = {"Origin": "http://testserver"}


def starlette_app(url: str) -> Starlette:
    async def login(request: Request) -> Response:
        (await load_session(request)).login(request.path_params["user"])
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/login/{user}", login, methods=["POST"]),
            Mount("/account/devices", devices_app()),
        ]
    )
    app.add_middleware(SessionMiddleware, url=url, config=config(), lazy=True)
    return app


def signed_in(app: Any, user: str, agent: str) -> TestClient:
    client = TestClient(app, headers={"User-Agent": agent})
    client.post(f"/login/{user}")
    return client


def test_starlette_devices(stickless_url: str) -> None:
    app = starlette_app(stickless_url)
    phone = signed_in(app, "ann", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Safari/604.1")
    laptop = signed_in(app, "ann", f"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0 {HOSTILE}")
    bob = signed_in(app, "bob", "curl/8.5.0")

    listed = laptop.get("/account/devices/", headers=JSON).json()
    assert [s["current"] for s in listed["sessions"]] == [True, False]  # this device first
    mine, other = listed["sessions"]
    assert mine["label"].startswith("Firefox") and other["label"].endswith("Safari on iOS")
    assert mine["session_id"] == listed["current"]

    named = laptop.post("/account/devices/name", json={"name": HOSTILE}, headers=ORIGIN)
    assert named.json() == {"name": HOSTILE}
    page = laptop.get("/account/devices/")
    assert page.headers["content-type"].startswith("text/html")
    assert HOSTILE not in page.text and "&lt;script&gt;" in page.text  # escaped
    assert f"/account/devices/{other['session_id']}/sign-out" in page.text

    # refused: cross-site, no origin at all, another user's session id, signed out
    assert (
        laptop.post(
            "/account/devices/sign-out-others", headers={"Origin": "https://evil.example"}
        ).status_code
        == 403
    )
    assert laptop.delete(f"/account/devices/{other['session_id']}").status_code == 403
    assert bob.delete(f"/account/devices/{other['session_id']}", headers=ORIGIN).status_code == 404
    assert bob.delete("/account/devices/not-an-id", headers=ORIGIN).status_code == 404
    assert TestClient(app).get("/account/devices/", headers=JSON).status_code == 401
    assert phone.get("/account/devices/", headers=JSON).status_code == 200  # still signed in

    gone = laptop.delete(f"/account/devices/{other['session_id']}", headers=ORIGIN)
    assert gone.json() == {"signed_out": True}
    assert phone.get("/account/devices/", headers=JSON).status_code == 401

    again = signed_in(app, "ann", "Mozilla/5.0 (Windows NT 10.0) Chrome/126.0 Safari/537.36")
    form = laptop.post("/account/devices/sign-out-others", headers=ORIGIN, follow_redirects=False)
    assert form.status_code == 303 and form.headers["location"] == "/account/devices/?done=others"
    assert again.get("/account/devices/", headers=JSON).status_code == 401
    left = laptop.get("/account/devices/", headers=JSON).json()["sessions"]
    assert [(s["current"], s["name"]) for s in left] == [(True, HOSTILE)]
    assert len(bob.get("/account/devices/", headers=JSON).json()["sessions"]) == 1


def test_fastapi_mounts_the_devices_app(stickless_url: str) -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(SessionMiddleware, url=stickless_url, config=config())

    @app.post("/login/{user}")
    async def login(user: str, request: Request) -> dict[str, bool]:
        (await load_session(request)).login(user)
        return {"ok": True}

    app.mount("/me/devices", devices_app())
    client = signed_in(app, "ann", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
    assert (
        client.get("/me/devices/?format=json").json()["sessions"][0]["label"] == "Firefox on Linux"
    )


# ===================================================================== Flask
def flask_app(url: str) -> flask.Flask:
    app = flask.Flask(f"dw{uuid.uuid4().hex[:6]}")
    app.config.update(TESTING=True, STICKLESS_URL=url, STICKLESS_CONFIG=config())
    Stickless(app)
    app.register_blueprint(devices_blueprint(), url_prefix="/account/devices")

    @app.post("/login/<user>")
    def login(user: str) -> str:
        current_session().login(user)
        return "ok"

    return app


def test_flask_devices(stickless_url: str) -> None:
    app = flask_app(stickless_url)
    origin = {"Origin": "http://localhost"}

    def client(user: str, agent: str) -> Any:
        c = app.test_client()
        c.environ_base["HTTP_USER_AGENT"] = agent
        c.post(f"/login/{user}")
        return c

    phone = client("ann", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Safari/604.1")
    laptop = client("ann", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
    bob = client("bob", "curl/8.5.0")
    listed = laptop.get("/account/devices/", headers=JSON).json
    assert [s["current"] for s in listed["sessions"]] == [True, False]
    other = listed["sessions"][1]["session_id"]

    assert (
        laptop.post("/account/devices/name", data={"name": HOSTILE}, headers=origin).status_code
        == 303
    )
    page = laptop.get("/account/devices/?done=named").get_data(as_text=True)
    assert HOSTILE not in page and "&lt;script&gt;" in page and "name is saved" in page

    cross = {"Origin": "https://evil.example"}
    assert laptop.post(f"/account/devices/{other}/sign-out", headers=cross).status_code == 403
    assert laptop.post(f"/account/devices/{other}/sign-out").status_code == 403  # no origin
    assert bob.delete(f"/account/devices/{other}", headers=origin).status_code == 404
    assert app.test_client().get("/account/devices/", headers=JSON).status_code == 401
    assert phone.get("/account/devices/", headers=JSON).status_code == 200

    referer = {"Referer": "http://localhost/account/devices/"}
    done = laptop.post(f"/account/devices/{other}/sign-out", headers=referer)
    assert done.status_code == 303 and done.headers["Location"].endswith("?done=signed-out")
    assert phone.get("/account/devices/", headers=JSON).status_code == 401

    client("ann", "Mozilla/5.0 (Windows NT 10.0) Chrome/126.0 Safari/537.36")
    assert laptop.delete("/account/devices/", headers=origin).json == {"signed_out": 1}
    (left,) = laptop.get("/account/devices/", headers=JSON).json["sessions"]
    assert left["current"] and left["name"] == HOSTILE


# ===================================================================== Django
@pytest.fixture
def users() -> tuple[User, User]:
    call_command("migrate", run_syncdb=True, verbosity=0)
    made = []
    for name in ("alice", "bob"):
        user, _ = User.objects.get_or_create(username=name)
        user.set_password("wonderland")
        user.save()
        made.append(user)
    return made[0], made[1]


def django_client(name: str, agent: str) -> Client:
    client = Client(enforce_csrf_checks=True, HTTP_USER_AGENT=agent)
    client.post("/login", {"username": name, "password": "wonderland"})  # the test view
    return client


def csrf_of(client: Client) -> str:
    page = client.get("/account/devices/").content.decode()
    match = re.search(r"name='csrfmiddlewaretoken' value='([^']+)'", page)
    assert match is not None
    return match.group(1)


def test_django_devices(stickless_url: str, users: tuple[User, User]) -> None:
    with override_settings(STICKLESS_URL=stickless_url, STICKLESS_CONFIG=config()):
        # the test project's /login view is not CSRF-protected; the devices views are
        phone = django_client("alice", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Safari/604.1")
        laptop = django_client("alice", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
        bob = django_client("bob", "curl/8.5.0")
        listed = laptop.get("/account/devices/", HTTP_ACCEPT="application/json").json()
        assert [s["current"] for s in listed["sessions"]] == [True, False]
        other = listed["sessions"][1]["session_id"]

        assert laptop.post(f"/account/devices/{other}/sign-out").status_code == 403  # no token
        token = csrf_of(laptop)
        named = laptop.post(
            "/account/devices/name", {"name": HOSTILE, "csrfmiddlewaretoken": token}
        )
        assert named.status_code == 303
        page = laptop.get("/account/devices/").content.decode()
        assert HOSTILE not in page and "&lt;script&gt;" in page

        bob_token = csrf_of(bob)
        refused = bob.delete(f"/account/devices/{other}", HTTP_X_CSRFTOKEN=bob_token)
        assert refused.status_code == 404  # another user's session
        assert phone.get("/account/devices/", HTTP_ACCEPT="application/json").status_code == 200

        done = laptop.post(f"/account/devices/{other}/sign-out", {"csrfmiddlewaretoken": token})
        assert done.status_code == 303
        assert phone.get("/account/devices/", HTTP_ACCEPT="application/json").status_code == 401

        django_client("alice", "Mozilla/5.0 (Windows NT 10.0) Chrome/126.0 Safari/537.36")
        others = laptop.delete("/account/devices/", HTTP_X_CSRFTOKEN=token)
        assert others.json() == {"signed_out": 1}
        alice = str(users[0].pk)
        (left,) = get_store().sessions_for(alice)
        assert left.device is not None and left.device.name == HOSTILE
