"""Migrations that keep users logged in: another library's session, read on first use,
moves into a new stickless session; the old one expires after a short grace. No value is
ever unpickled.

Public face: :mod:`stickless.migrate`. One module per source, sharing
:mod:`~stickless.web.migrate.adopt`:

* :class:`~stickless.web.migrate.flask_session.FlaskSessionRedis`: Flask-Session >= 0.7's
  Redis backend (msgpack or JSON; signed or unsigned ids), for ``Stickless(app)``;
* :class:`~stickless.web.migrate.starsessions.StarsessionsRedis`: starsessions' Redis store,
  for the ASGI middleware;
* :class:`~stickless.web.migrate.starlette_cookie.StarletteCookie`: Starlette's signed-cookie
  ``SessionMiddleware``, for the ASGI middleware.

Django's engines migrate through :mod:`stickless.web.django_migrate`.
"""
