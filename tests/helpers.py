"""Helpers several test modules share: driving a plan with scripted replies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stickless.store.plan import Op, Pause, Refresh


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
