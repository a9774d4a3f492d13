"""The value codec: session values are stored as JSON (orjson), never pickled.

Each top-level session key is one Redis hash field holding the JSON of its value. A JSON
integer is its decimal string, which is what lets ``incr`` use ``HINCRBY`` on it.

Strictness: values must be JSON types (``dict`` with ``str`` keys, ``list``, ``tuple``
(stored as a list), ``str``, ``int`` within 64 bits, ``float``, ``bool``, ``None``).
``datetime``, dataclasses and other objects raise ``TypeError`` rather than silently
turning into strings; the Flask adapter adds Flask's own tagged types on top.
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(value: object) -> bytes:
    """JSON bytes of ``value``; raises TypeError for anything that is not plain JSON."""
    try:
        return orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from None


def decode(data: bytes) -> Any:
    """The value of stored JSON bytes; raises ValueError when they are not JSON."""
    return orjson.loads(data)
