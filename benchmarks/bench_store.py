"""Side-by-side benchmark: stickless vs the whole-blob approach of its peers.

    python benchmarks/bench_store.py [--requests 3000] [--url redis://...]

The baseline does what Flask-Session, starsessions and Django's cache backend do per
request: GET the whole session blob, decode it, change it, SET it back with a TTL. Both run
in the same process, against the same server, interleaved in rounds, so machine noise hits
both alike; the report gives ratios (stickless / baseline), not absolute promises.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import orjson
import redis

from stickless import SessionConfig, SessionStore


class BlobBaseline:
    """The peers' model: one JSON blob per session, rewritten at the end of each request."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url)
        self.prefix = f"blob{uuid.uuid4().hex[:6]}:"

    def create(self, data: dict[str, object]) -> str:
        sid = uuid.uuid4().hex
        self.r.set(self.prefix + sid, orjson.dumps(data), ex=1800)
        return sid

    def request(self, sid: str, change: Callable[[dict[str, object]], object] | None) -> None:
        data = orjson.loads(self.r.get(self.prefix + sid) or b"{}")
        if change is not None:
            change(data)
        # peers write back (or at least refresh the TTL) on every request
        self.r.set(self.prefix + sid, orjson.dumps(data), ex=1800)


def timed(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def concurrent_lost_updates(apply: Callable[[int], None], n: int = 50) -> None:
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        barrier.wait()
        apply(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run(url: str, requests: int, rounds: int = 5) -> None:
    store = SessionStore.from_url(url, SessionConfig(key_prefix=f"b{uuid.uuid4().hex[:6]}"))
    base = BlobBaseline(url)
    payload = {"cart": ["apple", "pear"], "user": "alice", "prefs": {"theme": "dark"}, "n": 0}
    s = store.new()
    s.update(payload)
    store.save(s)
    sid = base.create(dict(payload))

    def ours_read() -> None:
        x = store.load(s.token)
        assert x is not None
        _ = x["cart"]
        store.save(x)

    def ours_write() -> None:
        x = store.load(s.token)
        assert x is not None
        x.incr("n")
        store.save(x)

    def base_read() -> None:
        base.request(sid, None)

    def base_write() -> None:
        base.request(sid, lambda d: d.__setitem__("n", int(d["n"]) + 1))  # type: ignore[call-overload]

    per_round = max(1, requests // rounds)
    samples: dict[str, list[float]] = {k: [] for k in ("ours_r", "base_r", "ours_w", "base_w")}
    for _ in range(rounds):  # interleaved: noise hits both sides
        samples["ours_r"].append(timed(ours_read, per_round))
        samples["base_r"].append(timed(base_read, per_round))
        samples["ours_w"].append(timed(ours_write, per_round))
        samples["base_w"].append(timed(base_write, per_round))
    med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}

    # lost updates: 50 overlapping requests, each adding its own key
    t = store.new()
    t["x"] = 0
    store.save(t)

    def ours_apply(i: int) -> None:
        x = store.load(t.token)
        assert x is not None
        x[f"k{i}"] = i
        store.save(x)

    concurrent_lost_updates(ours_apply)
    ours_kept = sum(1 for k in store.load(t.token) or {} if k.startswith("k"))
    bid = base.create({})
    concurrent_lost_updates(lambda i: base.request(bid, lambda d: d.__setitem__(f"k{i}", i)))
    base_kept = len(orjson.loads(base.r.get(base.prefix + bid) or b"{}"))

    # memory per session
    key = next(iter(store.client.scan_iter(f"{store.config.key_prefix}:s:*")))
    ours_mem = store.client.memory_usage(key)
    base_mem = base.r.memory_usage(base.prefix + sid)

    print(f"server {url}; {requests} requests per kind, {rounds} interleaved rounds (median)")
    print(f"{'':34}{'stickless':>12}{'baseline':>12}{'ratio':>8}")
    rows = [
        ("read-only request (us)", med["ours_r"], med["base_r"]),
        ("modifying request (us)", med["ours_w"], med["base_w"]),
        ("memory per session (bytes)", float(ours_mem or 0), float(base_mem or 0)),
        ("50 overlapping updates kept", float(ours_kept), float(base_kept)),
    ]
    for name, ours, theirs in rows:
        print(f"{name:34}{ours:12.1f}{theirs:12.1f}{ours / theirs if theirs else 0:8.2f}")
    print("round trips per request: stickless read 1 / write 2; baseline 2 / 2")
    store.close()


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from stickless.embedded import start_standalone

    with start_standalone() as embedded:
        yield embedded.url


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url")
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with server(args.url) as url:
        run(url, args.requests)
