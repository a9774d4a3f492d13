"""The value codec: session values are stored as JSON (orjson), never pickled.

Each top-level session key is one Redis hash field holding the JSON of its value. A JSON
integer is its decimal string, which is what lets ``incr`` use ``HINCRBY`` on it.

Strictness: values must be JSON types (``dict`` with ``str`` keys, ``list``, ``tuple``
(stored as a list), ``str``, ``int`` within 64 bits, finite ``float``, ``bool``, ``None``;
subclasses of ``dict``, ``list``, ``str`` and ``int`` are stored as their base type).
Anything else raises ``TypeError`` rather than being stored as something it is not:

* ``datetime``, ``set``, dataclasses and other objects;
* ``NaN`` and the infinities, at any depth (orjson alone writes them as ``null``);
* strings or keys, at any depth, holding a lone surrogate such as ``"\\ud800"`` (not
  encodable as UTF-8).

orjson's native types are the exception: a ``UUID`` is stored as its string and an
``Enum`` as its value (they come back as ``str`` / the plain value).

The Flask adapter adds Flask's own tagged types on top, stored inside a :class:`Tagged`
envelope: a one-key object whose key, :data:`TAGGED_KEY`, starts with a NUL character.
No other writer can produce that envelope: :func:`encode` refuses that key anywhere except
as the whole value of a :class:`Tagged` instance (which only Python code can build), so
JSON that merely *looks* tagged (``{" m": "<script>"}`` from a form, another service, the
core API) always comes back as the plain data it is.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, Final

import orjson

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


TAGGED_KEY: Final = "\x00stickless:tagged"
"""The one key of a :class:`Tagged` envelope (reserved: refused in any other value)."""

_NUL: Final = b"\\u0000"
"""How orjson writes a NUL character: no reserved key can be present without it."""


class Tagged(dict[str, Any]):
    """A value an adapter tagged itself (Flask's tagged JSON): ``{TAGGED_KEY: form}``.

    A ``dict`` (so other readers of the session, such as an ASGI service on the same store,
    see ordinary JSON data and can pass it on unchanged), but :func:`encode` accepts the
    reserved key only in an instance of this class used as a whole session value, and
    :func:`decode` gives back an instance only for such an envelope. ``form`` is the tagged
    JSON the adapter made; it is checked like any other value and may not nest another
    envelope.
    """

    __slots__ = ()

    def __init__(self, form: Any) -> None:
        super().__init__({TAGGED_KEY: form})

    @property
    def form(self) -> Any:
        """The tagged JSON inside the envelope."""
        return self[TAGGED_KEY]


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def check_text(text: str) -> None:
    """Raise TypeError when ``text`` cannot be stored (a lone surrogate: not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TypeError("str holds a lone surrogate (not encodable as UTF-8)") from None


def _where(path: tuple[object, ...]) -> str:
    return "".join(f"[{step!r}]" for step in path) or "the value"


def _refuse_non_finite(value: object, path: tuple[object, ...]) -> None:
    """Raise TypeError at the first NaN or infinity nested in ``value``, naming where it
    sits (never the value around it: it may be personal data)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{_where(path)}: NaN and infinities are not JSON")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_non_finite(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_non_finite(item, (*path, index))


def _refuse_reserved(value: object, path: tuple[object, ...]) -> None:
    """Raise TypeError when :data:`TAGGED_KEY` is a key anywhere in ``value`` except as the
    whole of a top-level :class:`Tagged` envelope."""
    if not path and type(value) is Tagged and len(value) == 1 and TAGGED_KEY in value:
        _refuse_reserved(value.form, (TAGGED_KEY,))
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == TAGGED_KEY:
                raise TypeError(
                    f"{_where((*path, key))}: this key is reserved for values tagged by an adapter"
                )
            _refuse_reserved(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_reserved(item, (*path, index))


def encode(value: object) -> bytes:
    """JSON bytes of ``value``; raises TypeError for anything that is not plain JSON (see the
    module docstring), nested values included."""
    try:
        data = orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        message = str(exc)
        if "surrogates" in message:
            message = "a str or key holds a lone surrogate (not encodable as UTF-8)"
        raise TypeError(message) from None
    if b"null" in data:  # orjson writes NaN and infinities as null: look only then
        _refuse_non_finite(value, ())
    if _NUL in data:
        _refuse_reserved(value, ())
    return data


def decode(data: bytes) -> Any:
    """The value of stored JSON bytes; raises ValueError when they are not JSON, or hold the
    reserved :data:`TAGGED_KEY` other than as a whole :class:`Tagged` envelope (which comes
    back as a :class:`Tagged`)."""
    value = orjson.loads(data)
    if _NUL in data:
        if type(value) is dict and len(value) == 1 and TAGGED_KEY in value:
            value = Tagged(value[TAGGED_KEY])
        try:
            _refuse_reserved(value, ())
        except TypeError as exc:
            raise ValueError(str(exc)) from None
    return value


def decode_many(values: Collection[bytes]) -> list[Any] | None:
    """The values of several stored JSON values, parsed as one JSON array (one call into
    orjson instead of one per value); None when that is not a plain reading of each: a value
    holds :data:`TAGGED_KEY` (escaped NUL), or the array does not parse or does not hold one
    item per value (a value that is not JSON). The caller then decodes them one by one with
    :func:`decode`, which names the culprit. Each value stickless writes is JSON by itself,
    so the array is exactly its values. Values another program garbled so that they happen
    to parse together into as many items (``1,2``, ``[3``, ``4]``) are read as the array
    says: only a writer with access to Redis can do that, and it could store any JSON."""
    joined = b",".join(values)
    if _NUL in joined:
        return None
    try:
        decoded = orjson.loads(b"[%b]" % joined)
    except orjson.JSONDecodeError:
        return None
    return decoded if len(decoded) == len(values) else None
