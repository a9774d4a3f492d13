"""The Flask app served by tests/test_multiprocess_flask.py: several real WSGI server
processes (gunicorn, 1 worker each) share one Valkey.

Environment: ``STICKLESS_URL`` (required), ``STICKLESS_KEY_PREFIX`` (default "stickless").
Every answer is JSON and names the process that served it (``pid``).
"""

from __future__ import annotations

import os
import time

import flask

from stickless import SessionConfig
from stickless.flask import Stickless, current_session

app = flask.Flask(__name__)
app.config.update(
    STICKLESS_URL=os.environ["STICKLESS_URL"],
    STICKLESS_CONFIG=SessionConfig(key_prefix=os.environ.get("STICKLESS_KEY_PREFIX", "stickless")),
)
Stickless(app)
session = flask.session


def answer(**fields: object) -> flask.Response:
    return flask.jsonify(pid=os.getpid(), **fields)


@app.get("/health")
def health() -> flask.Response:
    return answer()


@app.get("/state")
def state() -> flask.Response:
    return answer(data=dict(session), user=current_session().user_id)


@app.post("/set/<key>/<value>")
def set_value(key: str, value: str) -> flask.Response:
    session[key] = value
    return answer()


@app.post("/incr")
def incr() -> flask.Response:
    return answer(n=current_session().incr("n"))


@app.post("/login/<user>")
def login(user: str) -> flask.Response:
    current_session().login(user)
    return answer()


@app.post("/logout")
def logout() -> flask.Response:
    current_session().logout()
    return answer()


@app.post("/slow-set/<key>")
def slow_set(key: str) -> flask.Response:
    """Load the session, wait, then write: races a logout served elsewhere meanwhile."""
    user_at_start = current_session().user_id
    time.sleep(float(flask.request.args.get("delay", "0.5")))
    session[key] = "late write"
    return answer(user_at_start=user_at_start)
