"""``from stickless.migrate import ...``: read another library's sessions on first use, so
switching to stickless keeps users logged in (see docs/adapters/flask.md and
docs/adapters/starlette.md, "Migrating").

::

    # Starlette / FastAPI, from starsessions' Redis store or Starlette's cookie sessions
    app.add_middleware(SessionMiddleware, url=REDIS_URL,
                       migrate_from=StarsessionsRedis(prefix="starsessions."))
    app.add_middleware(SessionMiddleware, url=REDIS_URL,
                       migrate_from=StarletteCookie(secret_key=OLD_SECRET))

    # Flask, from Flask-Session: keep its SESSION_* settings, or
    app.config["STICKLESS_MIGRATE_FROM"] = FlaskSessionRedis(client=redis_client)

The implementation lives in :mod:`stickless.web.migrate`. Importing this module imports no
web framework.
"""

from __future__ import annotations

from stickless.web.migrate.adopt import LEGACY_GRACE, AsyncSource, SyncSource
from stickless.web.migrate.flask_session import FlaskSessionRedis
from stickless.web.migrate.starlette_cookie import StarletteCookie
from stickless.web.migrate.starsessions import StarsessionsRedis

__all__ = [
    "LEGACY_GRACE",
    "AsyncSource",
    "FlaskSessionRedis",
    "StarletteCookie",
    "StarsessionsRedis",
    "SyncSource",
]
