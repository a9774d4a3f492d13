"""``SESSION_ENGINE = "stickless.django"``: the Django session engine (see
:mod:`stickless.web.django` for the settings and how Django's session API maps onto stickless).

List it in ``INSTALLED_APPS`` too, so that ``manage.py check`` reports a misconfiguration
(:mod:`stickless.web.django_checks`). This module only re-exports; it does not shadow the
``django`` package: absolute imports (``import django``) inside ``stickless`` always mean
the real Django.
"""

import stickless.web.django_checks  # noqa: F401  (registers the `manage.py check` checks)
from stickless.web.django import (
    HIDDEN_PREFIX,
    SessionMiddleware,
    SessionStore,
    get_async_store,
    get_store,
    passive_session,
)

__all__ = [
    "HIDDEN_PREFIX",
    "SessionMiddleware",
    "SessionStore",
    "get_async_store",
    "get_store",
    "passive_session",
]
