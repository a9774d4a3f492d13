"""Memory per session: ``MEMORY USAGE`` of what each variant stores for each shape."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import bench_apps as apps
import redis

SAMPLES = 3
"""New sessions per shape; the median is kept (a hash caught mid-rehash looks bigger)."""


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


def measure(
    client: redis.Redis, prefix: str, make: Callable[[str], None], samples: int = SAMPLES
) -> dict[str, Any]:
    """For each shape: bytes of the new session key(s), of the user index (created by the
    first login only), of the rest; the median over ``samples`` new sessions."""
    out: dict[str, Any] = {}
    for shape in apps.SHAPES:
        rows = []
        for _ in range(samples):
            before = _keys(client, prefix)
            make(shape)
            new = sorted(_keys(client, prefix) - before)
            row = {"session": 0, "index": 0, "other": 0, "keys": len(new)}
            for key in new:
                used = client.memory_usage(key, samples=0) or 0
                row[_kind(key, prefix)] += int(used)
            rows.append(row)
        out[shape] = {
            "session": int(statistics.median(r["session"] for r in rows)),
            "index": max(r["index"] for r in rows),
            "other": int(statistics.median(r["other"] for r in rows)),
            "keys": max(r["keys"] for r in rows),
            "samples": [r["session"] for r in rows],
        }
    return out
