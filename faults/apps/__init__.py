"""The three web apps the fault-injection suite serves, one per framework, all with the same
behaviour so a round-robin client can hop between them with one session cookie.

``POST /w?i=<seq>``: ``session.incr("n")`` (an atomic counter) and ``cart`` gets ``seq``
appended (a list value rewritten by the request); the answer is ``{"n": <count>}``.
``GET /health``: no session at all.

Configuration comes from the environment (set by :mod:`faults.farm`):

``STICKLESS_URL``
    the store URL (any topology).
``FAULTS_PREFIX``
    the key prefix (default ``faults``).
``FAULTS_DURABILITY``
    ``none`` (default) or ``replicated``.
``FAULTS_MIN_REPLICAS``
    ``min_replicas`` for ``replicated`` (default 1).

Everything else is the library's default (timeouts, retries, fail closed with 503).
"""

from __future__ import annotations

import os

from stickless import SessionConfig

COOKIE = "fsid"
"""The session cookie, the same name in all three frameworks."""


def session_config() -> SessionConfig:
    """The store configuration every app process uses (from the environment)."""
    durability = os.environ.get("FAULTS_DURABILITY", "none")
    if durability not in ("none", "replicated"):
        raise RuntimeError("FAULTS_DURABILITY must be 'none' or 'replicated'")
    return SessionConfig(
        key_prefix=os.environ.get("FAULTS_PREFIX", "faults"),
        durability="replicated" if durability == "replicated" else "none",
        min_replicas=int(os.environ.get("FAULTS_MIN_REPLICAS", "1")),
    )


def store_url() -> str:
    url = os.environ.get("STICKLESS_URL", "")
    if not url:
        raise RuntimeError("the fault-suite apps need STICKLESS_URL")
    return url
