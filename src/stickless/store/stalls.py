"""Cluster only: not trusting a node that stalled (see ``SessionConfig.stall_limit``).

A primary frozen long enough (SIGSTOP, a paused VM) is replaced by one of its replicas.
When it wakes up it first serves what its clients sent meanwhile, and whatever arrives in
the next moments, as the primary it still believes it is: its writes are then dropped, and
its reads may miss what the new primary took meanwhile (a save built on such a read
overwrites newer values). Nothing in its answers tells them apart, so the executors judge
by time. A node is *suspect*:

* while a batch sent to it alone more than ``limit`` ago is still unanswered (the answers
  of a wake-up arrive all at once, in no particular order: a quick one must not pass just
  because it is checked before the slow ones), and
* for ``limit`` seconds after a batch took it longer than ``limit`` to answer or to fail,
  or timed out (a batch spread over several nodes makes each of them suspect).

Every answer a suspect node gives is treated as "not available right now". What this
process never sent to the frozen node it cannot know about: a process whose first request
after the wake-up reads from it is not protected (see docs/reliability.md). No I/O here.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from stickless.store.failures import Unavailable


@dataclass(frozen=True, slots=True)
class InFlight:
    """A cluster batch sent: the nodes owning its calls' keys, when, how long it may block
    on purpose (its ``WAIT``'s timeout), and its number in :class:`StallGuard`."""

    nodes: tuple[str, ...]
    at: float
    waits: float
    number: int


@dataclass
class _Node:
    in_flight: dict[int, float] = field(default_factory=dict)
    """Batch number -> when it was sent, plus how long it may block on purpose."""
    until: float = 0.0
    """Suspect until then (monotonic), after a stall."""
    lasted: float = 0.0
    """How long that stall lasted."""


class StallGuard:
    """Which cluster nodes stalled lately, by node name (``host:port``); thread-safe."""

    def __init__(self, limit: float, horizon: float) -> None:
        """``horizon``: no batch waits for an answer longer than that (the socket timeout,
        plus the limit): one the executor never reported ended (a cancelled task) is
        forgotten then."""
        self.limit = limit
        self.horizon = horizon
        self._nodes: dict[str, _Node] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count()

    def sent(self, nodes: tuple[str, ...], waits: float) -> InFlight:
        """A batch is about to be sent to ``nodes``. Only a batch to one node counts as that
        node's request in flight: which node holds up a batch spread over several (a
        login's save and user index) is not known, and a healthy one is not to be blamed
        while it waits."""
        now = time.monotonic()
        with self._lock:
            number = next(self._numbers)
            if len(nodes) == 1:
                self._nodes.setdefault(nodes[0], _Node()).in_flight[number] = now + waits
        return InFlight(nodes, now, waits, number)

    def ended(self, batch: InFlight, *, timed_out: bool = False) -> float:
        """The batch was answered, or failed. One that took over ``limit`` longer than it
        may block on purpose, or ``timed_out`` (even with a socket timeout shorter than the
        limit), makes each of its nodes suspect (of a batch spread over several, the one
        that stalled is not known). Returns now."""
        now = time.monotonic()
        stalled = now - batch.at - batch.waits
        with self._lock:
            for name in batch.nodes:
                node = self._nodes.setdefault(name, _Node())
                node.in_flight.pop(batch.number, None)
                if timed_out or stalled > self.limit:
                    node.until = max(node.until, now + self.limit)
                    node.lasted = stalled
        return now

    def forget(self, batch: InFlight) -> None:
        """The batch was abandoned (a cancelled task, an interrupt): it waits no more, and
        blames nobody."""
        with self._lock:
            for name in batch.nodes:
                node = self._nodes.get(name)
                if node is not None:
                    node.in_flight.pop(batch.number, None)

    def settle(self, batch: InFlight, *, writes: bool) -> None:
        """After the batch was answered: raises :class:`Unavailable` if one of its nodes is
        suspect. ``writes``: the batch may have written (its outcome is then unknown,
        ``applied=None``)."""
        now = self.ended(batch)
        with self._lock:
            for name in batch.nodes:
                node = self._nodes.setdefault(name, _Node())
                for number in [n for n, at in node.in_flight.items() if now - at > self.horizon]:
                    del node.in_flight[number]
                oldest = min(node.in_flight.values(), default=now)
                waiting = now - oldest
                if now < node.until or waiting > self.limit:
                    lasted = max(node.lasted if now < node.until else 0.0, waiting)
                    break
            else:
                return
        raise Unavailable(
            None,
            f"cluster node {name} stalled for {lasted:.1f} s (stall_limit {self.limit:g} s): "
            "it may have been frozen while a replica was promoted, so its answers are not "
            "trusted for a moment"
            + ("; the save may have been applied there and be lost" if writes else ""),
            applied=None if writes else False,
        )
