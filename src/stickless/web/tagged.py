"""Per-key value tagging: Python types that plain JSON cannot carry, stored as tagged JSON.

The core stores each session key as plain JSON and refuses anything else. Flask's own
cookie session goes further: its ``TaggedJSONSerializer`` (``flask.json.tag``) turns
``tuple``, ``bytes``, ``datetime``, ``UUID``, ``Markup`` (and any tag the app registers)
into small single-key objects such as ``{" t": [1, 2]}`` and back. :class:`TaggedValues`
applies such a *tagger* to one session value at a time, so an adapter can offer those types
while the core keeps validating (and rejecting, with ``TypeError`` at the line that set it)
whatever the tagger leaves as non-JSON.

Only values this adapter tagged are ever untagged. A value that needs tags is stored in the
codec's :class:`~stickless.codec.Tagged` envelope (``{"\\u0000stickless:tagged": <Flask's
tagged JSON>}``), which no other writer can produce (the codec refuses that key in any
other value). Everything else is plain JSON and is handed out as it is, even when it looks
like a tag: ``{" m": "<script>"}`` written by another service on the same store stays a
``dict`` and is never turned into ``Markup``. A bad tag inside an envelope (a custom tag
that fails, data written behind the library's back) is served as plain data, with a log
line naming the key and the error type but never the value.

This module imports no framework; the tagger is passed in (anything with ``tag`` and
``untag`` methods shaped like Flask's).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from stickless.codec import Tagged

log = logging.getLogger("stickless.web")


class Tagger(Protocol):
    """What :class:`TaggedValues` needs from a tagger (``flask.json.tag.TaggedJSONSerializer``
    fits): ``tag`` turns a value into its JSON-ready tagged form (returning plain JSON values
    unchanged), ``untag`` turns one single-key ``dict`` back into the tagged type (returning
    the dict itself when its key is not a tag)."""

    def tag(self, value: Any) -> Any: ...

    def untag(self, value: dict[str, Any]) -> Any: ...


class TaggedValues:
    """Encodes and decodes one session value with a :class:`Tagger`.

    Both directions keep the *identity* of values that need no tagging: ``encode`` returns
    the very object it was given when nothing in it needs a tag, and ``decode`` the very
    object it was given unless it is a :class:`~stickless.codec.Tagged` envelope. Adapters
    rely on that: a plain ``list`` handed to the application is the same object the core
    holds, so an in-place change (``session["cart"].append(x)``) is seen by the core's
    change detection without any ``modified = True``.
    """

    __slots__ = ("tagger",)

    def __init__(self, tagger: Tagger) -> None:
        self.tagger = tagger

    def encode(self, value: Any) -> Any:
        """The form to store: ``value`` itself when tagging changes nothing in it, else its
        tagged copy in a :class:`~stickless.codec.Tagged` envelope. Never raises for a
        value the tagger does not know: that value is returned as is, and the core's JSON
        check rejects it (``TypeError``)."""
        tagged = self.tagger.tag(value)
        if tagged is value:
            return value
        try:
            unchanged = bool(tagged == value)
        except Exception:  # an exotic __eq__: treat as changed, the core decides
            unchanged = False
        return value if unchanged else Tagged(tagged)

    def decode(self, stored: Any, *, key: str = "?") -> Any:
        """The Python value of a stored (JSON-decoded) value. Only a
        :class:`~stickless.codec.Tagged` envelope is untagged (tags resolved innermost
        first, as ``TaggedJSONSerializer.loads`` does); anything else is returned as the very
        object it is, tag-like or not. A tag that fails to decode leaves the envelope's
        content as plain data (logged with ``key``, never with the value)."""
        if not isinstance(stored, Tagged):
            return stored
        form = stored.form
        try:
            return self._untag(form)
        except Exception as exc:  # a custom tag's to_python, junk behind our back: never a 500
            log.warning(
                "session[%r]: tagged value cannot be decoded (%s); served as plain data",
                key,
                type(exc).__name__,
            )
            return form

    def _untag(self, stored: Any) -> Any:
        """``stored`` with its tags resolved, innermost first (``stored`` itself when no
        part of it changes)."""
        if type(stored) is dict:
            items: dict[str, Any] | None = None
            for key, item in stored.items():
                decoded = self._untag(item)
                if decoded is not item and items is None:
                    items = dict(stored)
                if items is not None:
                    items[key] = decoded
            base = stored if items is None else items
            return self.tagger.untag(base) if len(base) == 1 else base
        if type(stored) is list:
            result: list[Any] | None = None
            for index, item in enumerate(stored):
                decoded = self._untag(item)
                if decoded is not item and result is None:
                    result = list(stored)
                if result is not None:
                    result[index] = decoded
            return stored if result is None else result
        return stored
