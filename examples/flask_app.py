"""A small Flask app on stickless sessions: counter, login / logout, flash messages, the
user's devices and "log out everywhere".

Run it with one command (needs ``pip install 'stickless[flask,embedded]'``)::

    python examples/flask_app.py

With ``STICKLESS_URL`` unset it starts an embedded Valkey (a real ``valkey-server``
process, stopped on exit); set ``STICKLESS_URL=redis://...`` to use your own server.
``PORT`` picks the HTTP port (default 5000). Start it twice on two ports with the same
``STICKLESS_URL`` and the session follows you from one to the other.

(A demo: forms here have no CSRF protection; use Flask-WTF or similar in a real app.)
"""

from __future__ import annotations

import contextlib
import os

import flask
from flask import flash, redirect, render_template_string, request, url_for
from werkzeug.wrappers import Response

from stickless.embedded import start_standalone
from stickless.flask import Stickless, current_session, current_store

PAGE = """<!doctype html>
<title>stickless + Flask</title>
<h1>stickless + Flask (served by pid {{ pid }})</h1>
{% for category, message in get_flashed_messages(with_categories=true) %}
  <p class="{{ category }}">{{ message }}</p>
{% endfor %}
<p>You have seen this page {{ visits }} time(s) in this session.</p>
{% if user %}
  <p>Logged in as <b>{{ user }}</b>, on {{ devices|length }} device(s):</p>
  <ul>{% for d in devices %}
    <li>since {{ d.created_at.strftime("%H:%M:%S") }}, last seen
        {{ d.last_access.strftime("%H:%M:%S") }}</li>{% endfor %}</ul>
  <form method="post" action="{{ url_for('logout') }}"><button>Log out</button></form>
  <form method="post" action="{{ url_for('logout_everywhere') }}">
    <button>Log out my other devices</button></form>
{% else %}
  <form method="post" action="{{ url_for('login') }}">
    <input name="user" placeholder="user name" required> <button>Log in</button></form>
{% endif %}
"""


def create_app(url: str) -> flask.Flask:
    """The app, on the store at ``url``."""
    app = flask.Flask(__name__)
    app.config.update(
        STICKLESS_URL=url,
        # Optional: signs tokens (derived key). Set a real secret in production.
        SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-secret"),
    )
    Stickless(app)

    @app.get("/")
    def index() -> str:
        visits = current_session().incr("visits")  # atomic: no lost counts
        user = current_session().user_id
        devices = current_store().sessions_for(user) if user else []
        return render_template_string(
            PAGE, pid=os.getpid(), visits=visits, user=user, devices=devices
        )

    @app.post("/login")
    def login() -> Response:
        name = request.form["user"].strip()[:40] or "anonymous"
        current_session().login(name)  # binds the user, renews the token
        flash(f"Welcome, {name}!")
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> Response:
        current_session().logout()  # destroyed in Redis, cookie deleted
        return redirect(url_for("index"))

    @app.post("/logout-everywhere")
    def logout_everywhere() -> Response:
        user = current_session().user_id
        if user:
            count = current_store().revoke_user(user, keep=current_session().token)
            flash(f"Logged out {count} other device(s).")
        return redirect(url_for("index"))

    return app


def main() -> None:
    port = int(os.environ.get("PORT", "5000"))
    with contextlib.ExitStack() as stack:
        url = os.environ.get("STICKLESS_URL")
        if not url:
            url = stack.enter_context(start_standalone()).url
            print(f"embedded Valkey at {url}")
        print(f"open http://127.0.0.1:{port}/")
        create_app(url).run(host="127.0.0.1", port=port, use_reloader=False)


if __name__ == "__main__":
    main()
