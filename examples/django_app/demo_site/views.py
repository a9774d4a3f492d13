"""Views of the demo. The page is built with ``format_html`` to keep the demo to one file
per concern (no templates)."""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from stickless.django import get_store


def index(request: HttpRequest) -> HttpResponse:
    visits = request.session.stickless.incr("visits")  # atomic, even across servers
    user = request.session.get("user")
    csrf = format_html(
        '<input type="hidden" name="csrfmiddlewaretoken" value="{}">', get_token(request)
    )
    if user:
        devices = get_store().sessions_for(user)
        body = format_html(
            "<p>Logged in as <b>{}</b>, on {} device(s):</p><ul>{}</ul>"
            '<form method="post" action="logout">{}<button>Log out</button></form>'
            '<form method="post" action="logout-everywhere">{}'
            "<button>Log out my other devices</button></form>",
            user,
            len(devices),
            format_html_join(
                "",
                "<li>since {}, last seen {}</li>",
                (
                    (d.created_at.strftime("%H:%M:%S"), d.last_access.strftime("%H:%M:%S"))
                    for d in devices
                ),
            ),
            csrf,
            csrf,
        )
    else:
        body = format_html(
            '<form method="post" action="login">{}<input name="user" placeholder="user name" '
            "required> <button>Log in</button></form>",
            csrf,
        )
    return HttpResponse(
        format_html(
            "<!doctype html><title>stickless + Django</title>"
            "<h1>stickless + Django (served by pid {})</h1>"
            "<p>You have seen this page {} time(s) in this session.</p>{}",
            os.getpid(),
            visits,
            body,
        )
    )


@require_POST
def login(request: HttpRequest) -> HttpResponse:
    name = request.POST.get("user", "").strip()
    if name:
        # With django.contrib.auth you would call auth.login(request, user): it cycles the key,
        # and the engine binds the session to the user. Without auth, the same by hand:
        request.session.cycle_key()  # new token, same data (session fixation protection)
        request.session["user"] = name
        request.session.stickless.user_id = name  # listed by sessions_for / revoke_user
    return HttpResponseRedirect("/")


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()  # destroyed in Redis at once; the cookie is deleted
    return HttpResponseRedirect("/")


@require_POST
def logout_everywhere(request: HttpRequest) -> HttpResponse:
    user = request.session.get("user")
    if user:
        get_store().revoke_user(user, keep=request.session.session_key)
    return HttpResponseRedirect("/")
