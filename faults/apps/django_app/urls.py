"""The two views of the fault suite's Django project."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def write(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405)
    seq = int(request.GET["i"])
    count = request.session.stickless.incr("n")
    cart: list[Any] = request.session.get("cart", [])
    request.session["cart"] = [*cart, seq]
    return JsonResponse({"n": count})


urlpatterns = [path("health", health), path("w", write)]
