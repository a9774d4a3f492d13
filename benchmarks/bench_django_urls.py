"""URLconf of the benchmark's Django app (the same views for every session engine)."""

from __future__ import annotations

from typing import Any

from bench_apps import SETUP_DATA, USER_ID, apply_shape
from django.http import HttpRequest, HttpResponse
from django.urls import path


def setup(request: HttpRequest) -> HttpResponse:
    for key, value in SETUP_DATA.items():
        request.session[key] = value
    return HttpResponse("ok")


def untouched(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"ok {request.path}")


def read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session["k1"]))


def write(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session["n"] + 1
    return HttpResponse(str(request.session["n"]))


def shape(request: HttpRequest, name: str) -> HttpResponse:
    session: Any = request.session
    core = getattr(session, "stickless", None)  # stickless's engine: the core Session
    if name == "login" and core is not None:
        core.login(USER_ID)
    else:
        apply_shape(session, name, stickless=False)
    return HttpResponse("ok")


urlpatterns = [
    path("setup", setup),
    path("untouched", untouched),
    path("read", read),
    path("write", write),
    path("shape/<str:name>", shape),
]
