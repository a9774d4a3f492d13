"""``STICKLESS_MIGRATE_FROM``: sessions of the previous Django engine move into stickless.

``STICKLESS_MIGRATE_FROM = "django.contrib.sessions.backends.cache"`` (any engine's module)
names the engine the site used before. A request presenting one of its keys (a stickless
token always has a dot, those keys never do) finds no stickless session; the engine then
asks :func:`take` for the old session's data, which becomes the new stickless session's,
saved under a new key at the end of the request. The old session is retired: it lives
:data:`LEGACY_GRACE` more seconds (for requests the browser sent in parallel with the same
old cookie), then dies, so a replayed old cookie is worthless.

What every migration path shares (the grace, how the data is adopted, the log line) is in
:mod:`stickless.web.migrate.adopt`; this module is the Django engines' way of reading and
retiring the old session.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import ImproperlyConfigured

from stickless.web.migrate import adopt

LEGACY_GRACE = adopt.LEGACY_GRACE
"""Seconds an old-engine session stays readable after it was migrated (60)."""

_RETIRED = "_stickless_migrated"


def legacy_session(presented: str | None, engine: type[SessionBase]) -> SessionBase | None:
    """The session of the engine named by ``STICKLESS_MIGRATE_FROM`` for a key that is not a
    stickless token (those always contain a dot), or None. ``engine``: stickless's own
    engine class, which the setting must not name."""
    name = getattr(settings, "STICKLESS_MIGRATE_FROM", None)
    if not name or not presented or "." in presented:
        return None
    module = import_module(name)
    if issubclass(module.SessionStore, engine):
        raise ImproperlyConfigured("STICKLESS_MIGRATE_FROM must name another session engine")
    session: SessionBase = module.SessionStore(presented)
    return session


def take(presented: str | None, engine: type[SessionBase]) -> dict[str, Any] | None:
    """The data of the old engine's session ``presented`` names (retired now), or None."""
    legacy = legacy_session(presented, engine)
    if legacy is None:
        return None
    moved: dict[str, Any] = legacy.load()
    if moved:
        _retire(legacy, moved)
    return moved


def source_name() -> str:
    """What the logs call the old engine (its module)."""
    return f"Django's {getattr(settings, 'STICKLESS_MIGRATE_FROM', None)}"


async def atake(presented: str | None, engine: type[SessionBase]) -> dict[str, Any] | None:
    """:func:`take` for async code."""
    legacy = legacy_session(presented, engine)
    if legacy is None:
        return None
    moved: dict[str, Any] = await legacy.aload()
    if moved:
        await sync_to_async(_retire)(legacy, moved)
    return moved


def _retire(legacy: SessionBase, moved: dict[str, Any]) -> None:
    """Let a migrated old-engine session live ``LEGACY_GRACE`` more seconds, then die.

    Not deleted at once: requests the browser sent in parallel with the same old cookie
    (a page's XHRs right after the deploy) must still find it, or their responses would
    delete the new cookie and log the user out. A replayed old cookie stops working after
    the grace period (which later uses do not extend)."""
    if moved.pop(_RETIRED, False):
        return
    legacy[_RETIRED] = True
    legacy.set_expiry(LEGACY_GRACE)
    legacy.save()
