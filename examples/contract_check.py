"""Check the core promises against any server, using only the public contract.

    python examples/contract_check.py                       # starts an embedded Valkey
    python examples/contract_check.py redis://127.0.0.1:6379/0
    python examples/contract_check.py redis+sentinel://127.0.0.1:26379/mymaster
    python examples/contract_check.py redis+cluster://127.0.0.1:7000

Prints one line per promise and exits non-zero if any is broken.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import uuid
from collections.abc import Callable, Iterator

from stickless import Session, SessionConfig, SessionStore


def hammer(store: SessionStore, token: str, change: Callable[[Session, int], object]) -> None:
    """50 threads load the same session, each changes it, all save at once."""
    barrier = threading.Barrier(50)

    def worker(i: int) -> None:
        session = store.load(token)
        assert session is not None
        barrier.wait()
        change(session, i)
        store.save(session)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def check(url: str) -> bool:
    store = SessionStore.from_url(url, SessionConfig(key_prefix=f"check-{uuid.uuid4().hex[:6]}"))
    results: list[tuple[str, bool, str]] = []

    s = store.new()
    s["start"] = True
    store.save(s)
    hammer(store, s.token, lambda x, i: x.__setitem__(f"key{i}", i))
    loaded = store.load(s.token)
    kept = sum(1 for k in (loaded or {}) if k.startswith("key"))
    results.append(("50 concurrent distinct-key updates kept", kept == 50, f"{kept}/50"))

    hammer(store, s.token, lambda x, i: x.incr("counter"))
    counter = (store.load(s.token) or {}).get("counter")
    results.append(("50 concurrent increments", counter == 50, f"counter={counter}"))

    stale = store.load(s.token)
    assert stale is not None
    store.destroy(s.token)
    stale["late"] = "write"
    outcome = store.save(stale).outcome
    gone = store.load(s.token) is None
    results.append(("no resurrection after destroy", gone, f"late save -> {outcome}"))

    batches: list[object] = []
    original = store.send
    store.send = lambda batch: (batches.append(batch), original(batch))[1]  # type: ignore[method-assign]
    fresh = store.new()
    fresh["a"] = 1
    store.save(fresh)
    batches.clear()
    again = store.load(fresh.token)
    loads = len(batches)
    assert again is not None
    again["b"] = 2
    batches.clear()
    store.save(again)
    saves = len(batches)
    batches.clear()
    store.save(again)
    unchanged = len(batches)
    store.send = original  # type: ignore[method-assign]
    results.append(
        (
            "round trips: load 1, save 1, unchanged 0",
            (loads, saves, unchanged) == (1, 1, 0),
            f"load {loads}, save {saves}, unchanged {unchanged}",
        )
    )
    store.close()
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name:45} {detail}")
    return all(ok for _, ok, _ in results)


@contextlib.contextmanager
def server(argv: list[str]) -> Iterator[str]:
    if argv:
        yield argv[0]
        return
    from stickless.embedded import start_standalone

    with start_standalone() as embedded:
        yield embedded.url


if __name__ == "__main__":
    with server(sys.argv[1:]) as url:
        print(f"checking {url}")
        sys.exit(0 if check(url) else 1)
