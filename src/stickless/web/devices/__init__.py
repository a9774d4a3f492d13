"""'Your devices' endpoints, ready to mount: the shared part (no framework imported here).

Each framework module mounts the same three actions under a prefix of your choosing:

=======================================  ===================================================
``GET  <prefix>/``                        the signed-in user's sessions: a minimal HTML page,
                                          or JSON (``Accept: application/json`` or
                                          ``?format=json``); this device is marked
``POST <prefix>/<session_id>/sign-out``   sign that session out (HTML form), also
``DELETE <prefix>/<session_id>``          (JSON clients)
``POST <prefix>/sign-out-others``         sign every other session of the user out, also
``DELETE <prefix>/``
``POST <prefix>/name``                    name this device (form or JSON field ``name``)
=======================================  ===================================================

* :mod:`stickless.web.devices.starlette`: ``devices_app()``, a Starlette app to mount
  (FastAPI too: ``app.mount("/account/devices", devices_app())``);
* :mod:`stickless.web.devices.flask`: ``devices_blueprint()``;
* :mod:`stickless.web.devices.django`: views and ``urlpatterns``
  (``path("account/devices/", include("stickless.web.devices.django"))``).

The user is the session's bound user (``session.user_id``; for Django the one
``django.contrib.auth`` logged in): without one, 401. Every action is owner-checked in Redis
(``store.destroy_id(session_id, user_id=...)``, ``store.revoke_user(user, keep=session)``),
so another user's session id signs nothing out (404). Changes need ``POST`` / ``DELETE`` and
pass a CSRF check: Django's (the views are ``csrf_protect``-ed; the page carries the token),
and for Flask and Starlette a same-origin check (:func:`same_origin`): the ``Origin`` header,
else the ``Referer``, must name the request's own host (or one of ``trusted_origins``); a
request with neither, or with ``Sec-Fetch-Site: cross-site``, is refused (403). The page
escapes everything it shows (user agents and device names are the client's text).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from stickless.devices import Device
from stickless.store.plan import SessionInfo
from stickless.tokens import parse_session_id

UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NAME_FIELD: Final = "name"
"""The form / JSON field of ``POST <prefix>/name``."""


def entry(info: SessionInfo, current_id: str | None) -> dict[str, Any]:
    """One session of the list, as JSON-ready values (datetimes as ISO 8601 strings)."""
    device = info.device or Device(None, None, None, info.created_at, info.last_access)
    return {
        "session_id": info.session_id,
        "current": info.session_id == current_id,
        "name": device.name,
        "label": device.label,
        "user_agent": device.user_agent,
        "ip": device.ip,
        "created_at": info.created_at.isoformat(),
        "last_seen": info.last_access.isoformat(),
        "expires_at": info.expires_at.isoformat(),
    }


def listing(infos: Iterable[SessionInfo], current_id: str | None) -> dict[str, Any]:
    """The JSON body of ``GET <prefix>/``: this device first, then the others, newest
    first."""
    entries = [entry(info, current_id) for info in infos]
    entries.sort(key=lambda e: (not e["current"], _negated(e["last_seen"])))
    return {"current": current_id, "sessions": entries}


def _negated(stamp: str) -> float:
    return -datetime.fromisoformat(stamp).timestamp()


def session_id_or_none(value: object) -> str | None:
    """A session id from a URL, or None when it cannot be one (answered 404, no I/O)."""
    try:
        return parse_session_id(value)  # type: ignore[arg-type]
    except ValueError:
        return None


def wants_json(accept: str | None, query_format: str | None) -> bool:
    """JSON when ``?format=json`` or when ``Accept`` names JSON and not HTML."""
    if query_format is not None:
        return query_format.lower() == "json"
    accept = (accept or "").lower()
    return "json" in accept and "text/html" not in accept


# ------------------------------------------------------------------ same-origin check
def _origin_of(url: str) -> tuple[str, str] | None:
    """``(scheme, host[:port])`` of a URL, default ports dropped; None when unusable."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    netloc = host.lower() if port in (None, default) else f"{host.lower()}:{port}"
    return parts.scheme.lower(), netloc


def same_origin(
    method: str,
    *,
    host: str | None,
    origin: str | None,
    referer: str | None,
    fetch_site: str | None = None,
    trusted_origins: Sequence[str] = (),
) -> bool:
    """True when a request may change something: a safe method, or one whose ``Origin``
    (else ``Referer``) names ``host`` (the request's ``Host``, as the framework sees it:
    behind a proxy, its proxy settings) or one of ``trusted_origins``
    (``"https://app.example.com"``). Schemes are not compared (a TLS-terminating proxy
    makes the app see ``http``); ``Sec-Fetch-Site: cross-site`` always refuses; a request
    with neither header is refused (every browser sends ``Origin`` on a cross-site POST)."""
    if method.upper() not in UNSAFE_METHODS:
        return True
    if (fetch_site or "").lower() == "cross-site":
        return False
    claimed = origin if origin and origin.lower() != "null" else referer
    if not claimed:
        return False
    found = _origin_of(claimed)
    if found is None:
        return False
    allowed = {o[1] for o in (_origin_of(t) for t in trusted_origins) if o is not None}
    if host:
        own = _origin_of(f"http://{host}")
        own_tls = _origin_of(f"https://{host}")
        allowed |= {o[1] for o in (own, own_tls) if o is not None}
    return found[1] in allowed


# ----------------------------------------------------------------------- the page
def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(stamp: str) -> str:
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M UTC")


def render_page(
    body: dict[str, Any],
    *,
    base: str,
    csrf: tuple[str, str] | None = None,
    message: str | None = None,
) -> str:
    """The minimal HTML page of :func:`listing`'s ``body``; forms post to ``base``
    (the mount point, ending in ``/``); ``csrf``: a hidden ``(field, token)`` for each form
    (Django's). Everything shown is escaped."""
    hidden = f"<input type='hidden' name='{_e(csrf[0])}' value='{_e(csrf[1])}'>" if csrf else ""
    rows = []
    for item in body["sessions"]:
        title = _e(item["name"] or item["label"])
        if item["current"]:
            action = "<b>this device</b>"
        else:
            target = _e(f"{base}{item['session_id']}/sign-out")
            action = (
                f"<form method='post' action='{target}'>{hidden}"
                "<button type='submit'>Sign out</button></form>"
            )
        detail = _e(item["label"]) if item["name"] else ""
        rows.append(
            f"<tr{' class=current' if item['current'] else ''}><td>{title}"
            f"<br><small>{detail}</small></td><td>{_e(item['ip'] or '')}</td>"
            f"<td>{_e(_when(item['created_at']))}</td><td>{_e(_when(item['last_seen']))}</td>"
            f"<td>{action}</td></tr>"
        )
    others = len(body["sessions"]) - (1 if body["current"] else 0)
    sign_out_others = (
        f"<form method='post' action='{_e(base + 'sign-out-others')}'>{hidden}"
        f"<button type='submit'>Sign out all other devices ({others})</button></form>"
        if others > 0
        else ""
    )
    name_form = (
        f"<form method='post' action='{_e(base + 'name')}'>{hidden}"
        f"<label>Name this device <input name='{NAME_FIELD}' maxlength='64'></label> "
        "<button type='submit'>Save</button></form>"
    )
    note = f"<p role='status'>{_e(message)}</p>" if message else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'><title>Your devices</title>"
        "<style>body{font:15px system-ui,sans-serif;margin:2em}td,th{padding:.3em .8em;"
        "text-align:left;vertical-align:top}.current{background:#eef6ee}"
        "form{display:inline}</style></head><body><h1>Your devices</h1>"
        f"{note}<table><tr><th>Device</th><th>Network</th><th>Signed in</th>"
        f"<th>Last seen</th><th></th></tr>{''.join(rows)}</table>"
        f"<p>{sign_out_others}</p><p>{name_form}</p></body></html>"
    )


MESSAGES: Final = {
    "signed-out": "That device is signed out.",
    "not-found": "No such device (it may have signed out already).",
    "others": "All other devices are signed out.",
    "named": "This device's name is saved.",
}
"""The page's notes after a form post (``?done=<key>``)."""
