"""'Your devices' for Django: views and a URLconf to include.

::

    # urls.py
    urlpatterns = [
        ...,
        path("account/devices/", include("stickless.web.devices.django")),
    ]

Needs ``SESSION_ENGINE = "stickless.django"``. The user is the one the session is bound to
(``django.contrib.auth``'s login binds it). Every view is ``csrf_protect``-ed, whatever
``MIDDLEWARE`` holds: the page's forms carry the token; JSON clients send it in
``X-CSRFToken``. See :mod:`stickless.web.devices` for the routes and the owner checks.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.middleware.csrf import get_token
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from stickless.session import Session
from stickless.web.devices import (
    MESSAGES,
    NAME_FIELD,
    listing,
    render_page,
    session_id_or_none,
    wants_json,
)
from stickless.web.django import SessionStore as DjangoSession
from stickless.web.django import get_store

app_name = "stickless_devices"

__all__ = ["app_name", "index", "name_device", "sign_out", "sign_out_others", "urlpatterns"]


def _session(request: HttpRequest) -> Session | None:
    """The stickless session of a signed-in user, or None."""
    django_session = getattr(request, "session", None)
    if not isinstance(django_session, DjangoSession):
        return None
    session = django_session.stickless
    return session if session.user_id is not None else None


def _json_client(request: HttpRequest) -> bool:
    return (
        "json" in request.headers.get("Content-Type", "")
        or request.method == "DELETE"
        or wants_json(request.headers.get("Accept"), request.GET.get("format"))
    )


def _base(request: HttpRequest) -> str:
    match = request.resolver_match
    namespace = match.namespace if match is not None and match.namespace else app_name
    return str(reverse(f"{namespace}:index"))


def _answer(request: HttpRequest, body: dict[str, Any], done: str) -> HttpResponse:
    if _json_client(request):
        status = 404 if body.get("signed_out") is False else 200
        response: HttpResponse = JsonResponse(body, status=status)
        response["Cache-Control"] = "no-store"
        return response
    return HttpResponseRedirect(f"{_base(request)}?done={done}", status=303)


def _refuse(request: HttpRequest, status: int, why: str) -> HttpResponse:
    if _json_client(request):
        return JsonResponse({"error": why}, status=status)
    return HttpResponse(why + "\n", status=status, content_type="text/plain")


@csrf_protect  # type: ignore[untyped-decorator]
@require_http_methods(["GET", "DELETE"])  # type: ignore[untyped-decorator]
def index(request: HttpRequest) -> HttpResponse:
    """``GET``: the page (or JSON); ``DELETE``: sign out the other devices."""
    if request.method == "DELETE":
        return sign_out_others(request)
    session = _session(request)
    if session is None or session.user_id is None:
        return _refuse(request, 401, "sign in first")
    body = listing(get_store().sessions_for(session.user_id), session.session_id)
    if wants_json(request.headers.get("Accept"), request.GET.get("format")):
        response: HttpResponse = JsonResponse(body)
    else:
        done = MESSAGES.get(request.GET.get("done", ""))
        html = render_page(
            body,
            base=_base(request),
            csrf=("csrfmiddlewaretoken", get_token(request)),
            message=done,
        )
        response = HttpResponse(html, content_type="text/html; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


@csrf_protect  # type: ignore[untyped-decorator]
@require_http_methods(["POST", "DELETE"])  # type: ignore[untyped-decorator]
def sign_out(request: HttpRequest, session_id: str) -> HttpResponse:
    """Sign one of the user's sessions out (owner-checked in Redis: another user's id
    signs nothing out, 404)."""
    session = _session(request)
    if session is None or session.user_id is None:
        return _refuse(request, 401, "sign in first")
    target = session_id_or_none(session_id)
    done = target is not None and get_store().destroy_id(target, user_id=session.user_id)
    return _answer(request, {"signed_out": bool(done)}, "signed-out" if done else "not-found")


@csrf_protect  # type: ignore[untyped-decorator]
@require_http_methods(["POST", "DELETE"])  # type: ignore[untyped-decorator]
def sign_out_others(request: HttpRequest) -> HttpResponse:
    """Sign every other session of the user out (this one is kept)."""
    session = _session(request)
    if session is None or session.user_id is None:
        return _refuse(request, 401, "sign in first")
    count = get_store().revoke_user(session.user_id, keep=session)
    return _answer(request, {"signed_out": count}, "others")


@csrf_protect  # type: ignore[untyped-decorator]
@require_http_methods(["POST"])  # type: ignore[untyped-decorator]
def name_device(request: HttpRequest) -> HttpResponse:
    """Name this device (``name``: form or JSON field); saved with the session."""
    session = _session(request)
    if session is None:
        return _refuse(request, 401, "sign in first")
    given: object = request.POST.get(NAME_FIELD)
    if "json" in request.headers.get("Content-Type", ""):
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            data = {}
        given = data.get(NAME_FIELD) if isinstance(data, dict) else None
    try:
        session.device_name = given if isinstance(given, str) else None
    except (TypeError, ValueError) as exc:
        return _refuse(request, 400, str(exc))
    return _answer(request, {"name": session.device_name}, "named")


urlpatterns = [
    path("", index, name="index"),
    path("sign-out-others", sign_out_others, name="sign_out_others"),
    path("name", name_device, name="name"),
    path("<str:session_id>/sign-out", sign_out, name="sign_out"),
    path("<str:session_id>", sign_out, name="session"),
]
