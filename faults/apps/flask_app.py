"""The Flask app of the fault suite, served by gunicorn. See :mod:`faults.apps`."""

from __future__ import annotations

import flask

from faults.apps import COOKIE, session_config, store_url
from stickless.flask import Stickless, current_session

app = flask.Flask(__name__)
app.config.update(
    STICKLESS_URL=store_url(), STICKLESS_CONFIG=session_config(), SESSION_COOKIE_NAME=COOKIE
)
Stickless(app)


@app.get("/health")
def health() -> str:
    return "ok"


@app.post("/w")
def write() -> flask.Response:
    seq = int(flask.request.args["i"])
    count = current_session().incr("n")
    flask.session["cart"] = [*flask.session.get("cart", []), seq]
    return flask.jsonify(n=count)
