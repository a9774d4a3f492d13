"""The server's clock, as this process estimates it (for decisions that only throttle).

Expiry is the server's alone: every TTL and deadline stickless sets comes from ``TIME``
inside a script, and the server expires the key. A load, though, is a plain ``HGETALL``:
it does not ask the server what time it is. The two things a load decides from the time,
whether the last refresh of the idle TTL is older than ``touch_interval`` and
``Session.seconds_left``, take it from here instead: the local wall clock, shifted by the
offset to the server's clock that the last script reply showed (every script that writes a
session answers the server's time). So an app server whose clock is off still decides by
the server's clock, from its first save or touch on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SKEW_TOLERANCE_MS = 1000
"""A last refresh that this estimate puts more than this far in the future means the
estimate is wrong (no reply seen yet and this host's clock is behind, or a clock stepped):
the load then refreshes, and the reply corrects the estimate."""


class ServerClock:
    """The server's time in ms since the epoch: the local wall clock plus the offset of the
    last server stamp seen (0 until one is seen). Thread-safe enough: the offset is one float,
    replaced whole."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._offset_ms = 0.0

    def observe(self, server_ms: int) -> None:
        """A script reply said the server's time was ``server_ms`` (it was, a moment ago:
        the estimate then runs behind by that latency, which only delays a refresh by it)."""
        self._offset_ms = server_ms - self._wall() * 1000

    def now_ms(self) -> int:
        """The server's time as estimated now."""
        return int(self._wall() * 1000 + self._offset_ms)
