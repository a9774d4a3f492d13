"""Review of 66ba810 (the Django engine compares against ``Session.stored_json``): changes
made in place to nested values, after a save inside the request, to an identity key, and
the fixation protection of ``auth.login``, all through Django's test Client on real Valkey."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from django_project.testing import configure

configure()

from django.contrib import auth  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402

COOKIE = "sessionid"


def seed(request: HttpRequest) -> JsonResponse:
    request.session["cart"] = ["apple"]
    request.session["user"] = {"name": "guest", "role": "viewer"}
    request.session["deep"] = {"a": {"b": [1]}}
    return JsonResponse({"ok": True})


def read(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(request.session.items()))


def append_deep(request: HttpRequest) -> JsonResponse:
    """In place, two levels down, without ``modified = True``."""
    request.session["deep"]["a"]["b"].append(2)
    return JsonResponse({"ok": True})


def save_then_append(request: HttpRequest) -> JsonResponse:
    """A save inside the view, then an in-place change the middleware's save must write."""
    request.session["cart"].append("pear")
    request.session.save()
    request.session["cart"].append("plum")
    return JsonResponse({"ok": True})


def promote(request: HttpRequest) -> JsonResponse:
    """An identity key (``"user"``, SessionConfig's default identity_keys) changed in place."""
    request.session["user"]["role"] = "admin"
    return JsonResponse({"ok": True})


def save_then_promote(request: HttpRequest) -> JsonResponse:
    request.session["cart"].append("kiwi")
    request.session.save()
    request.session["user"]["role"] = "admin"  # after the save: the final save renews
    return JsonResponse({"ok": True})


def same_again(request: HttpRequest) -> JsonResponse:
    """The identity key written again with an equal value: no renewal."""
    request.session["user"] = {"name": "guest", "role": "viewer"}
    return JsonResponse({"ok": True})


def login(request: HttpRequest) -> JsonResponse:
    user = auth.authenticate(request, username="bob", password="builder")
    assert user is not None
    request.session["cart"].append("after-login")  # in place, in the login request
    auth.login(request, user)
    return JsonResponse({"ok": True})


def whoami(request: HttpRequest) -> JsonResponse:
    user = request.user
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


urlpatterns = [
    path("seed", seed),
    path("read", read),
    path("append-deep", append_deep),
    path("save-then-append", save_then_append),
    path("promote", promote),
    path("save-then-promote", save_then_promote),
    path("same-again", same_again),
    path("login", login),
    path("whoami", whoami),
]


@pytest.fixture
def url(stickless_url: str) -> Iterator[str]:
    call_command("migrate", run_syncdb=True, verbosity=0)
    user, _ = User.objects.get_or_create(username="bob")
    user.set_password("builder")
    user.save()
    with override_settings(STICKLESS_URL=stickless_url, ROOT_URLCONF=__name__):
        yield stickless_url


def seeded() -> tuple[Client, str]:
    client = Client()
    assert client.get("/seed").status_code == 200
    return client, client.cookies[COOKIE].value


def presenting(token: str) -> Client:
    other = Client()
    other.cookies[COOKIE] = token
    return other


def test_deep_in_place_change_is_saved(url: str) -> None:
    client, _ = seeded()
    client.get("/append-deep")
    assert Client().get("/read", HTTP_COOKIE=f"{COOKIE}={client.cookies[COOKIE].value}").json()[
        "deep"
    ] == {"a": {"b": [1, 2]}}


def test_in_place_change_after_a_save_inside_the_request_is_saved(url: str) -> None:
    client, _ = seeded()
    client.get("/save-then-append")
    fresh = presenting(client.cookies[COOKIE].value)
    assert fresh.get("/read").json()["cart"] == ["apple", "pear", "plum"]


@pytest.mark.parametrize("view", ["/promote", "/save-then-promote"])
def test_identity_key_changed_in_place_renews_the_token(url: str, view: str) -> None:
    client, before = seeded()
    client.get(view)
    after = client.cookies[COOKIE].value
    assert after != before  # fixation protection: a new token
    assert presenting(after).get("/read").json()["user"] == {"name": "guest", "role": "admin"}
    assert presenting(before).get("/read").json() == {}  # the old token has no power


def test_identity_key_written_again_unchanged_does_not_renew(url: str) -> None:
    client, before = seeded()
    client.get("/same-again")
    assert client.cookies[COOKIE].value == before
    assert presenting(before).get("/read").json()["user"]["role"] == "viewer"


def test_login_renews_and_keeps_an_in_place_change(url: str) -> None:
    client, before = seeded()
    client.get("/login")
    after = client.cookies[COOKIE].value
    assert after != before
    assert client.get("/whoami").json() == {"user": "bob"}
    assert client.get("/read").json()["cart"] == ["apple", "after-login"]
    assert presenting(before).get("/whoami").json() == {"user": None}
