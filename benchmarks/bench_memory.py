"""Memory per session: ``MEMORY USAGE`` of what each variant stores for each shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bench_apps as apps
import redis


def _keys(client: redis.Redis, prefix: str) -> set[str]:
    return {str(k) for k in client.scan_iter(match=prefix + ":*", count=1000)}


def _kind(key: str, prefix: str) -> str:
    """Which kind of key: "session", "index" (stickless's per-user index) or "other"."""
    rest = key[len(prefix) + 1 :]
    if rest.startswith("u:{"):
        return "index"
    if rest.startswith(("f:{", "t:{")):
        return "other"
    return "session"


def measure(client: redis.Redis, prefix: str, make: Callable[[str], None]) -> dict[str, Any]:
    """For each shape: bytes of the new session key(s), of the user index, of the rest."""
    out: dict[str, Any] = {}
    for shape in apps.SHAPES:
        before = _keys(client, prefix)
        make(shape)
        new = sorted(_keys(client, prefix) - before)
        row = {"session": 0, "index": 0, "other": 0, "keys": len(new)}
        for key in new:
            used = client.memory_usage(key, samples=0) or 0
            row[_kind(key, prefix)] += int(used)
        out[shape] = row
    return out
