"""``manage.py check`` for the stickless session engine.

Registered when :mod:`stickless.django` is imported. Django runs its checks before it loads
any middleware or session engine, so for ``manage.py check`` (and ``runserver``, which
checks first) to see them, list the engine among the apps::

    INSTALLED_APPS = [..., "stickless.django"]

(it has no models, no migrations and no templates: listing it only imports it early).

==================  =====================================================================
``stickless.E001``  Django's ``SessionMiddleware`` is installed with the stickless engine
``stickless.W001``  the stickless engine, but no session middleware at all
``stickless.E002``  ``stickless.django.SessionMiddleware`` with another ``SESSION_ENGINE``
``stickless.E003``  ``STICKLESS_URL`` missing (neither in settings nor in the environment)
``stickless.E004``  ``STICKLESS_URL`` not a string, or malformed (the reason, never the
                    password)
``stickless.E005``  ``STICKLESS_CONFIG`` neither a ``SessionConfig`` nor a dict of its
                    fields
==================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core import checks

from stickless.config import SessionConfig
from stickless.errors import ConfigurationError
from stickless.store.connect import parse_url
from stickless.web.options import resolve_url

ENGINE = "stickless.django"
OURS = frozenset({"stickless.django.SessionMiddleware", "stickless.web.django.SessionMiddleware"})
DJANGOS = "django.contrib.sessions.middleware.SessionMiddleware"


def check_sessions(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[Any]:
    """The engine's settings, as ``manage.py check`` reports them."""
    engine = getattr(settings, "SESSION_ENGINE", "")
    middleware = [str(m) for m in getattr(settings, "MIDDLEWARE", None) or ()]
    ours = any(m in OURS for m in middleware)
    found: list[Any] = []
    if engine != ENGINE:
        if ours:
            found.append(
                checks.Error(
                    f"stickless.django.SessionMiddleware is installed but SESSION_ENGINE is "
                    f"{engine!r}",
                    hint=f'set SESSION_ENGINE = "{ENGINE}" (and STICKLESS_URL)',
                    id="stickless.E002",
                )
            )
        return found
    if DJANGOS in middleware:
        twice = " as well: sessions would be loaded and saved twice" if ours else ""
        found.append(
            checks.Error(
                f'SESSION_ENGINE = "{ENGINE}" with Django\'s own SessionMiddleware in '
                f"MIDDLEWARE{twice}",
                hint=(
                    f"replace {DJANGOS!r} with 'stickless.django.SessionMiddleware' at the same "
                    "place (with Django's, a store outage is a 500 instead of the failure "
                    "policy's 503, and STICKLESS_HEADER is ignored)"
                ),
                id="stickless.E001",
            )
        )
    elif not ours:
        found.append(
            checks.Warning(
                f'SESSION_ENGINE = "{ENGINE}" but no session middleware in MIDDLEWARE: '
                "request.session is never set",
                hint="add 'stickless.django.SessionMiddleware' to MIDDLEWARE",
                id="stickless.W001",
            )
        )
    found += _url_errors()
    found += _config_errors()
    return found


def _url_errors() -> list[Any]:
    url = getattr(settings, "STICKLESS_URL", None)
    if url is not None and not isinstance(url, str):
        return [
            checks.Error(
                f"STICKLESS_URL must be a str, not {type(url).__name__}",
                hint='e.g. STICKLESS_URL = os.environ["STICKLESS_URL"]',
                id="stickless.E004",
            )
        ]
    try:
        resolved = resolve_url(url or None, needs="set STICKLESS_URL in settings")
    except ConfigurationError:
        return [
            checks.Error(
                "STICKLESS_URL is not set (neither in settings nor in the environment)",
                hint='e.g. STICKLESS_URL = "redis://127.0.0.1:6379/0", or export STICKLESS_URL',
                id="stickless.E003",
            )
        ]
    try:
        parse_url(resolved)
    except ConfigurationError as exc:  # its message never holds the password
        return [
            checks.Error(
                f"STICKLESS_URL is malformed: {exc}",
                hint="URL forms: docs/topologies.md; passwords: docs/production.md",
                id="stickless.E004",
            )
        ]
    return []


def _config_errors() -> list[Any]:
    value = getattr(settings, "STICKLESS_CONFIG", None)
    if value is None or isinstance(value, SessionConfig):
        return []
    problem = "must be a stickless.SessionConfig or a dict of its fields"
    if isinstance(value, Mapping):
        try:
            SessionConfig(**value)
            return []
        except (TypeError, ValueError) as exc:
            problem = f"is not a valid SessionConfig: {exc}"
    return [checks.Error(f"STICKLESS_CONFIG {problem}", id="stickless.E005")]


checks.register(check_sessions, "stickless")
