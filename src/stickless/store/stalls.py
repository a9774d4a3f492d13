"""Cluster only: not trusting a node that stalled (see ``SessionConfig.stall_limit``).

A primary frozen long enough (SIGSTOP, a paused VM) is replaced by one of its replicas.
When it wakes up it first serves what its clients sent meanwhile, and whatever arrives in
the next moments, as the primary it still believes it is; only then does it learn of the
promotion, turn replica and drop what it took. Nothing in its answers tells those writes
apart, so the executors judge by time: a batch a node took longer than ``limit`` to answer
makes that node suspect for ``limit`` seconds, and every answer it gives while suspect
(the stalled one included) is treated as "not available right now". No I/O here: the
executors call :meth:`StallGuard.settle` with the monotonic time they sent the batch at.
"""

from __future__ import annotations

import time

from stickless.store.failures import Unavailable


class StallGuard:
    """Which cluster nodes stalled lately, by node name (``host:port``). Thread-safe
    enough: each update is one dict operation."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._suspect: dict[str, tuple[float, float]] = {}
        """node -> (suspect until, how long its stall lasted)."""

    def note(self, node: str, sent_at: float, waits: float = 0.0) -> float:
        """A batch sent to ``node`` at ``sent_at`` (``time.monotonic()``) ended now, answered
        or not (a timeout is a stall too): ``node`` is suspect if it took over ``limit``
        longer than the ``waits`` seconds the batch may block on purpose (a ``WAIT``).
        Returns now."""
        now = time.monotonic()
        stalled = now - sent_at - waits
        if self.limit and stalled > self.limit:
            self._suspect[node] = (now + self.limit, stalled)
        return now

    def settle(self, node: str, sent_at: float, *, writes: bool, waits: float = 0.0) -> None:
        """After ``node`` answered a batch sent at ``sent_at``: raises :class:`Unavailable`
        if the node stalled now or lately. ``writes``: the batch may have written (its
        outcome is then unknown, ``applied=None``)."""
        now = self.note(node, sent_at, waits)
        suspect = self._suspect.get(node)
        if suspect is None:
            return
        until, lasted = suspect
        if now >= until:
            self._suspect.pop(node, None)
            return
        raise Unavailable(
            None,
            f"cluster node {node} took {lasted:.1f} s to answer (stall_limit "
            f"{self.limit:g} s): it may have been frozen while a replica was promoted, so "
            "its answers are not trusted for a moment"
            + ("; the save may have been applied there and be lost" if writes else ""),
            applied=None if writes else False,
        )
