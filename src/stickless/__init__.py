"""stickless: distributed HTTP sessions for Python web apps on Redis / Valkey.

>>> from stickless import SessionConfig, SessionStore
>>> store = SessionStore.from_url("redis://127.0.0.1:6379/0", SessionConfig())

See README.md and docs/ for the full tour.
"""

from stickless.config import DEFAULT_IDENTITY_KEYS, SessionConfig
from stickless.errors import (
    ConfigurationError,
    ReplicationTimeout,
    SessionConflict,
    SessionTooLarge,
    SticklessError,
    StoreMisconfigured,
    StoreUnavailable,
    TooManySessions,
)
from stickless.session import Session, SessionMeta, SessionStatus
from stickless.store.aio import AsyncSessionStore
from stickless.store.plan import SaveOutcome, SaveResult, SessionInfo
from stickless.store.sync import SessionStore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_IDENTITY_KEYS",
    "AsyncSessionStore",
    "ConfigurationError",
    "ReplicationTimeout",
    "SaveOutcome",
    "SaveResult",
    "Session",
    "SessionConfig",
    "SessionConflict",
    "SessionInfo",
    "SessionMeta",
    "SessionStatus",
    "SessionStore",
    "SessionTooLarge",
    "SticklessError",
    "StoreMisconfigured",
    "StoreUnavailable",
    "TooManySessions",
    "__version__",
]
