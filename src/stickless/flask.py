"""``from stickless.flask import Stickless``: Flask sessions in Redis / Valkey.

The implementation lives in :mod:`stickless.web.flask`; see docs/adapters/flask.md.
(This module is named like the ``flask`` package; imports are absolute, so ``flask``
below and in :mod:`stickless.web.flask` is always the real Flask.)
"""

from __future__ import annotations

from stickless.web.flask import (
    FlaskSession,
    Stickless,
    SticklessState,
    current_session,
    current_store,
    passive,
)

__all__ = [
    "FlaskSession",
    "Stickless",
    "SticklessState",
    "current_session",
    "current_store",
    "passive",
]
