"""'Your devices' for Flask: a blueprint to register.

::

    from stickless.web.devices.flask import devices_blueprint

    app.register_blueprint(devices_blueprint(), url_prefix="/account/devices")
    # needs Stickless(app)

See :mod:`stickless.web.devices` for the routes, the owner checks and the same-origin check
(``trusted_origins``: other origins allowed to post). ``request.host`` is the host compared:
behind a proxy, Werkzeug's ``ProxyFix(x_host=1)`` makes it the public one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, request, url_for

from stickless.web.devices import (
    MESSAGES,
    NAME_FIELD,
    listing,
    render_page,
    same_origin,
    session_id_or_none,
    wants_json,
)
from stickless.web.flask import FlaskSession, current_session, current_store

__all__ = ["devices_blueprint"]


def devices_blueprint(
    name: str = "stickless_devices", *, trusted_origins: Sequence[str] = ()
) -> Blueprint:
    """The devices pages as a blueprint (register it with a ``url_prefix``)."""
    trusted = tuple(trusted_origins)
    bp = Blueprint(name, __name__)

    @bp.before_request
    def guard() -> Any:
        headers = request.headers
        if not same_origin(
            request.method,
            host=request.host,
            origin=headers.get("Origin"),
            referer=headers.get("Referer"),
            fetch_site=headers.get("Sec-Fetch-Site"),
            trusted_origins=trusted,
        ):
            return _refuse(403, "cross-site request refused")
        if current_session().user_id is None:
            return _refuse(401, "sign in first")
        return None

    @bp.get("/")
    def page() -> Any:
        session = current_session()
        user = _user(session)
        current = session.session_id if session.meta is not None else None
        body = listing(current_store().sessions_for(user), current)
        if wants_json(request.headers.get("Accept"), request.args.get("format")):
            response = jsonify(body)
        else:
            done = MESSAGES.get(request.args.get("done", ""))
            response = Response(render_page(body, base=_base(), message=done), mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.post("/<session_id>/sign-out")
    @bp.delete("/<session_id>")
    def sign_out(session_id: str) -> Any:
        target = session_id_or_none(session_id)
        user = _user(current_session())
        done = target is not None and current_store().destroy_id(target, user_id=user)
        return _answer({"signed_out": bool(done)}, "signed-out" if done else "not-found")

    @bp.post("/sign-out-others")
    @bp.delete("/")
    def sign_out_others() -> Any:
        session = current_session()
        count = current_store().revoke_user(_user(session), keep=session.load())
        return _answer({"signed_out": count}, "others")

    @bp.post("/name")
    def name_device() -> Any:
        if request.is_json:
            data = request.get_json(silent=True)
            given = data.get(NAME_FIELD) if isinstance(data, dict) else None
        else:
            given = request.form.get(NAME_FIELD)
        session = current_session()
        try:
            session.device_name = given if isinstance(given, str) else None
        except (TypeError, ValueError) as exc:
            return _refuse(400, str(exc))
        return _answer({"name": session.device_name}, "named")

    return bp


def _user(session: FlaskSession) -> str:
    user = session.user_id
    assert user is not None  # the guard answered 401 otherwise
    return user


def _base() -> str:
    return url_for(".page")


def _json_client() -> bool:
    return (
        request.is_json
        or request.method == "DELETE"
        or wants_json(request.headers.get("Accept"), request.args.get("format"))
    )


def _answer(body: dict[str, Any], done: str) -> Any:
    if _json_client():
        response = jsonify(body)
        response.status_code = 404 if body.get("signed_out") is False else 200
        response.headers["Cache-Control"] = "no-store"
        return response
    return redirect(f"{_base()}?done={done}", code=303)


def _refuse(status: int, why: str) -> Any:
    if _json_client():
        response = jsonify(error=why)
        response.status_code = status
        return response
    return Response(why + "\n", status=status, mimetype="text/plain")
