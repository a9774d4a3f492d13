"""Helpers several test modules share: waiting for a server-side condition, recording a
store's round trips, driving a plan with scripted replies."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from stickless.embedded import ServerBinary
from stickless.store.plan import Op, Pause, Refresh


def takes_hsetex(server: ServerBinary) -> bool:
    """Valkey >= 9 and Redis >= 8 have ``HSETEX`` (Valkey 8 counts as Redis 7.2 otherwise):
    the usual save of keys a session holds is then that one command, not a script."""
    return server.version[0] >= (9 if server.name == "valkey" else 8)


def wait_until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """``check()``'s first truthy result, polled every 50 ms (a Redis or socket error counts
    as not yet); fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (redis.RedisError, OSError):
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@contextlib.contextmanager
def trips(store: Any) -> Iterator[list[Any]]:
    """The batches ``store`` sends inside: one batch is one round trip (a ``SessionStore``,
    an ``AsyncSessionStore`` or conftest's facade over one)."""
    target = getattr(store, "_store", store)  # the AsyncSessionStore behind the facade
    calls: list[Any] = []
    original = target.send

    def recording(batch: Any) -> Any:
        calls.append(batch)
        return original(batch)

    target.send = recording
    try:
        yield calls
    finally:
        target.send = original


def drive(op: Op[Any], replies: Iterable[Any], steps: list[Any]) -> Any:
    """Run the plan ``op`` in memory: each batch gets the next scripted reply (a list, or an
    exception to throw in), pauses and refreshes get None. Every step it yields is appended
    to ``steps``; returns its result (an exception it raises propagates)."""
    scripted = iter(replies)
    try:
        step = next(op)
        while True:
            steps.append(step)
            if isinstance(step, Pause | Refresh):
                step = op.send(None)
                continue
            reply = next(scripted)
            step = op.throw(reply) if isinstance(reply, BaseException) else op.send(reply)
    except StopIteration as stop:
        return stop.value
