"""Views of the test project. Each returns JSON; none renders templates."""

from __future__ import annotations

import datetime
import time
from typing import Any

import redis
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest, HttpResponse, JsonResponse

from stickless import TooManySessions
from stickless.django import passive_session


def plain(request: HttpRequest) -> HttpResponse:
    """Does not touch the session."""
    return HttpResponse("plain")


def read(request: HttpRequest) -> JsonResponse:
    """The whole session (one load)."""
    return JsonResponse(dict(request.session.items()))


def set_value(request: HttpRequest) -> JsonResponse:
    """``?key=K&value=V``: session[K] = V (a string)."""
    request.session[request.GET["key"]] = request.GET.get("value", "")
    return JsonResponse({"ok": True})


def incr(request: HttpRequest) -> JsonResponse:
    """``?key=K``: atomic increment through the stickless Session."""
    value = request.session.stickless.incr(request.GET.get("key", "n"))
    return JsonResponse({"value": value})


def append(request: HttpRequest) -> JsonResponse:
    """In-place change of a nested value, without ``modified = True``."""
    items: list[Any] = request.session.setdefault("cart", [])
    items.append(request.GET["item"])
    return JsonResponse({"cart": items})


def slow_set(request: HttpRequest) -> JsonResponse:
    """Load the session, wait, then set ``?key=``. The wait is ``?delay=`` seconds, or with
    ``?gate=G``: count this request in Redis key ``G:loaded``, then wait (up to 20 s) until
    the test sets ``G:go``, so a test knows every request loaded before it acts."""
    request.session.get("anything")
    _wait(request)
    request.session[request.GET["key"]] = "late"
    return JsonResponse({"ok": True})


def slow_login(request: HttpRequest) -> JsonResponse:
    """A login that takes its time (a slow password check): loads the session, waits as
    :func:`slow_set` does, then ``auth.login`` with ``?username=&password=``."""
    request.session.get("anything")
    _wait(request)
    user = auth.authenticate(
        request, username=request.GET["username"], password=request.GET["password"]
    )
    if user is None:
        return JsonResponse({"ok": False}, status=403)
    auth.login(request, user)
    return JsonResponse({"ok": True})


def _wait(request: HttpRequest) -> None:
    gate = request.GET.get("gate")
    if gate:
        client = redis.Redis.from_url(settings.STICKLESS_URL)
        try:
            client.incr(f"{gate}:loaded")
            deadline = time.monotonic() + 20
            while not client.exists(f"{gate}:go") and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            client.close()
    else:
        time.sleep(float(request.GET.get("delay", "0.5")))


def deleted_meanwhile(request: HttpRequest) -> JsonResponse:
    """Loads the session, which another request then destroys, and writes to it."""
    request.session.get("a")
    type(request.session)(request.session.session_key).delete()
    request.session["b"] = "2"
    return JsonResponse({"ok": True})


def cycle(request: HttpRequest) -> JsonResponse:
    request.session.cycle_key()
    return JsonResponse({"ok": True})


def flush(request: HttpRequest) -> JsonResponse:
    request.session.flush()
    return JsonResponse({"ok": True})


def clear(request: HttpRequest) -> JsonResponse:
    request.session.clear()
    return JsonResponse({"ok": True})


def expire(request: HttpRequest) -> JsonResponse:
    """``?seconds=N`` (int expiry), ``?delta=S`` (timedelta, may be negative) or
    ``?default=1`` (``set_expiry(None)``: the configured lifetime again)."""
    request.session["marker"] = "x"
    if "delta" in request.GET:
        request.session.set_expiry(datetime.timedelta(seconds=float(request.GET["delta"])))
    elif "default" in request.GET:
        request.session.set_expiry(None)
    else:
        request.session.set_expiry(int(request.GET["seconds"]))
    return JsonResponse({"ok": True})


def _time_left(request: HttpRequest) -> JsonResponse:
    session = request.session.stickless
    expires = session.expires_at
    return JsonResponse(
        {
            "seconds_left": session.seconds_left,
            "expires_at": expires.isoformat() if expires else None,
        }
    )


@passive_session
def status(request: HttpRequest) -> JsonResponse:
    """Time left, read passively (the poll does not keep the session alive)."""
    return _time_left(request)


@passive_session
async def async_status(request: HttpRequest) -> JsonResponse:
    """The same, as an async view."""
    session = await request.session.astickless()
    return JsonResponse({"seconds_left": session.seconds_left})


def time_left(request: HttpRequest) -> JsonResponse:
    """Time left, read as any view reads (the load slides the idle timeout)."""
    return _time_left(request)


def login(request: HttpRequest) -> JsonResponse:
    user = auth.authenticate(
        request, username=request.POST["username"], password=request.POST["password"]
    )
    if user is None:
        return JsonResponse({"ok": False}, status=403)
    auth.login(request, user)
    return JsonResponse({"ok": True})


def capped_login(request: HttpRequest) -> JsonResponse:
    """``auth.login`` under ``max_sessions_per_user``, the view handling the cap: it saves
    right after the login, so a refusal (``on_limit="refuse"``) reaches it as
    ``TooManySessions``, and it decides what to show (here: logs the attempt out, 409)."""
    user = auth.authenticate(
        request, username=request.POST["username"], password=request.POST["password"]
    )
    if user is None:
        return JsonResponse({"ok": False}, status=403)
    auth.login(request, user)
    try:
        request.session.save()  # the cap is checked here
    except TooManySessions as refused:
        auth.logout(request)  # give the login up: nothing of it was stored
        return JsonResponse({"ok": False, "limit": refused.limit}, status=409)
    return JsonResponse({"ok": True})


def logout(request: HttpRequest) -> JsonResponse:
    auth.logout(request)
    return JsonResponse({"ok": True})


def whoami(request: HttpRequest) -> JsonResponse:
    user = request.user
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


def bad_value(request: HttpRequest) -> JsonResponse:
    request.session["when"] = datetime.datetime.now(datetime.UTC)  # not JSON
    return JsonResponse({"ok": True})


async def async_incr(request: HttpRequest) -> JsonResponse:
    """The async session API: aget / aset and astickless()."""
    visits = await request.session.aget("visits", 0)
    await request.session.aset("visits", visits + 1)
    session = await request.session.astickless()
    return JsonResponse({"visits": visits + 1, "n": session.incr("n")})
