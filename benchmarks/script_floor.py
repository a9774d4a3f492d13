"""What a guarded delta save costs the server, against the SET of a blob: one command.

    .venv/bin/python benchmarks/script_floor.py [--url redis://...] [--rounds 7] [--calls 2000]

The write targets of docs/benchmarks.md compare stickless's save (a Lua script: the session
must still exist under the presented token, the TTL follows the server's clock and never
outlives the absolute deadline) with a peer's blind ``SET``. This measures, as the server's
own ``INFO commandstats`` counts it, per call, each sent on its own as a web request sends
it (a pipeline of thousands would warm the server's caches and understate every figure):

* ``SET``: the peers' write of a 300-byte blob (after a ``GET``, as theirs is);
* ``EVALSHA return 1``: a script that does nothing, the price of running one at all;
* ``EVALSHA 4 calls``: the fewest commands a guarded save can run (``TIME``, ``HMGET`` of
  the token digest and deadline, ``HSET`` of the change and last access, ``PEXPIRE``);
* ``HSETEX``: stickless's usual save (one changed key of a loaded 10-key session), through
  ``SessionStore`` (load, change, save): on Valkey >= 9 / Redis >= 8, a save of keys the
  session holds is ``HSETEX ... FXX`` naming the token's field, no script;
* ``update.lua``: the same save by a store told the server has no ``HSETEX`` (older
  servers, an ACL without it, a new key or a delete, a due idle refresh);
* ``save.lua``: the same change made with ``incr``, which ``save.lua`` takes, as it takes
  every save that renews, logs in or sets a lifetime (an increment runs two commands more
  than a plain set: ``HMGET`` of the old value, to undo a refused save, and ``HINCRBY``).

Medians over ``--rounds`` interleaved rounds of ``--calls`` calls each. Without ``--url`` it
starts an embedded Valkey; with it, use a quiet server (the counters are server-wide): the
URL's database gets the keys ``slfloor:*``, ``slfloor.copy`` and ``slfloor.blob``, deleted at
the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_apps as apps  # noqa: E402
import bench_core as core  # noqa: E402

from stickless import SessionConfig, SessionStore  # noqa: E402

PREFIX = "slfloor"
NOTHING = "#!lua\nreturn 1"
FOUR_CALLS = """#!lua
local t = redis.call('TIME')
local meta = redis.call('HMGET', KEYS[1], 'k:x', 'm:x')
redis.call('HSET', KEYS[1], 'm:a', t[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], 1800000)
return 1
"""


def _per_call(client: redis.Redis, command: str, run: Callable[[], None], calls: int) -> float:
    """µs of server time per call of ``command`` (commandstats) over ``calls`` runs."""
    client.config_resetstat()
    for _ in range(calls):
        run()
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return float(stats.get("usec", 0)) / max(1, int(stats.get("calls", 0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a quiet standalone Redis/Valkey (default: embedded)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    with core.valkey(args.url) as (url, _):
        client = redis.Redis.from_url(url)
        store = SessionStore.from_url(url, SessionConfig(key_prefix=PREFIX))
        scripted = SessionStore.from_url(url, SessionConfig(key_prefix=PREFIX))
        scripted.plan.hsetex = False  # as on a server without HSETEX: update.lua
        try:
            session = store.new()
            session.update(apps.SETUP_DATA)
            store.save(session)
            token, key = session.token, store.plan.layout.data(session.token_id.family)
            copy = PREFIX + ".copy"  # what the bare scripts write: a copy of the session
            client.copy(key, copy, replace=True)
            nothing, four = client.script_load(NOTHING), client.script_load(FOUR_CALLS)
            blob = PREFIX + ".blob"
            client.set(blob, b"x" * 300)

            def peer() -> None:
                client.get(blob)
                client.set(blob, b"x" * 300, ex=3600)

            def script(sha: str) -> Callable[[], None]:
                def run() -> None:
                    client.hgetall(copy)
                    client.evalsha(sha, 1, copy, "d:n", "1")

                return run

            def save(store: SessionStore, increment: bool) -> Callable[[], None]:
                def run() -> None:
                    loaded = store.load(token)
                    assert loaded is not None
                    if increment:
                        loaded.incr("n")  # not the usual save: save.lua
                    else:
                        loaded["n"] = loaded["n"] + 1
                    store.save(loaded)

                return run

            variants = {
                "SET (the peers' write)": ("set", peer),
                "EVALSHA return 1": ("evalsha", script(nothing)),
                "EVALSHA 4 calls (a guarded save's minimum)": ("evalsha", script(four)),
                "HSETEX (stickless's usual save)": ("hsetex", save(store, increment=False)),
                "update.lua (the same, without HSETEX)": ("evalsha", save(scripted, False)),
                "save.lua (the same change as an incr)": ("evalsha", save(scripted, True)),
            }
            results: dict[str, list[float]] = {name: [] for name in variants}
            for r in range(args.rounds):
                names = list(variants)
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    command, run = variants[name]
                    results[name].append(_per_call(client, command, run, args.calls))
        finally:
            for stale in client.scan_iter(match=PREFIX + ":*"):
                client.delete(stale)
            client.delete(PREFIX + ".copy", PREFIX + ".blob")
            store.close()
            scripted.close()
            client.close()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"server time per call, median of {args.rounds} rounds x {args.calls} ({when})")
    for name, values in results.items():
        print(f"  {name:45} {statistics.median(values):6.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
