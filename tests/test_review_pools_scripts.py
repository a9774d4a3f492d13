"""Review of the lean connection pools (store/pools.py, packed()) and of the scripts'
``#!lua`` form with its SCRIPT LOAD probe (store/plan.py), against real servers.

Found and fixed: a logout (destroy) and pop_once on a full server (the ``#!lua`` form is
refused as a whole when out of memory, unless ``flags=allow-oom``); the asyncio pool handing
out a connection the server closed (redis-py skips its check while maintenance notifications
are "auto": the next save answered 503); the sync pool connecting twice when a connect
failed (a wrong password tried twice per checkout).

Held up: exhausted pools (threads / tasks > max_connections), cancellation mid-request,
fork, CLIENT KILL / restart, SCRIPT FLUSH, the probe with WAIT and a NOSCRIPT resend after a
failed probe, Redis 6.2 and a downgrade on the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from conftest import make_store
from stickless import AsyncSessionStore, SessionConfig, SessionStore, StoreUnavailable
from stickless.embedded import Standalone, server_binary, start_standalone
from stickless.store.plan import SAVE

CONFIG = SessionConfig(secret_key="k" * 32)


@pytest.fixture(scope="module")
def server() -> Iterator[Standalone]:
    with start_standalone() as node:
        yield node


@pytest.fixture
def url(server: Standalone) -> Iterator[str]:
    admin = server.node.client()
    admin.flushall()
    admin.script_flush()
    yield server.url
    admin.config_set("maxmemory", 0)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.close()


def _kill_clients(url: str) -> None:
    admin: Any = redis.Redis.from_url(url)
    admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    admin.close()


def _fill_memory(url: str) -> None:
    """``maxmemory`` below what the server uses, ``noeviction``: every write that may grow
    memory is refused with OOM (what the docs recommend, "a full server refuses saves")."""
    admin = redis.Redis.from_url(url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)
    admin.close()


# ------------------------------------------------- P1: #!lua scripts and a full server
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_p1_logout_works_on_a_full_server(url: str, kind: str) -> None:
    """Logging out frees memory; the legacy script ran on a full server (its first write is
    a DEL, which OOM does not refuse). A ``#!lua`` script without ``flags=allow-oom`` is
    refused as a whole before it runs, on Redis >= 7 / Valkey."""
    store = make_store(kind, url, CONFIG)
    try:
        session = store.new()
        session["a"] = 1
        store.save(session)
        _fill_memory(url)
        assert store.destroy(session.token) is True
        assert store.load(session.token) is None
    finally:
        store.close()


def test_p1_pop_once_works_on_a_full_server(url: str) -> None:
    """pop.lua only reads and HDELs: the legacy form ran on a full server."""
    with SessionStore.from_url(url, CONFIG) as store:
        session = store.new()
        session["flash"] = "hi"
        store.save(session)
        _fill_memory(url)
        loaded = store.load(session.token, touch=False)
        assert loaded is not None
        assert store.pop_once(loaded, "flash") == "hi"


# --------------------------------------- P2: asyncio pool and a connection closed by server
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("how", ["client-kill", "restart"])
def test_p2_first_save_after_the_server_closed_the_connection(kind: str, how: str) -> None:
    """Between two requests the server closed the pooled connection (CLIENT KILL, or it
    restarted): the pool must notice it at checkout and reconnect; a save is never resent,
    so a stale connection means a 503."""
    with start_standalone() as server:
        store = make_store(kind, server.url, CONFIG)
        try:
            session = store.new()
            session["n"] = 1
            store.save(session)
            if how == "client-kill":
                _kill_clients(server.url)
            else:
                server.node.kill()
                server.node.restart()
            time.sleep(0.1)  # idle between two requests: the loop saw the EOF
            if kind == "async":
                store._run(asyncio.sleep(0.05))
            other = store.new()
            other["n"] = 2
            assert store.save(other).written
        finally:
            store.close()


# ------------------------------------------------ P3: sync pool connects twice on failure
def test_p3_a_refused_connect_is_tried_once_per_checkout(server: Standalone) -> None:
    """redis-py's pool connects once per checkout (it reconnects only a connection that
    has unread data); the lean pool retries a failed connect too: a wrong password is sent
    twice per request (twice the ACL LOG entries / brute-force alarms, twice the time)."""
    admin: Any = server.node.client()
    admin.execute_command("ACL", "SETUSER", "review", "on", ">right", "~*", "+@all")
    admin.execute_command("ACL", "LOG", "RESET")
    host, port = server.node.host, server.node.port
    try:
        with SessionStore.from_url(f"redis://review:wrong@{host}:{port}/0", CONFIG) as store:
            with pytest.raises(StoreUnavailable):
                store.load(store.new().token)
        entries = admin.execute_command("ACL", "LOG")
        failures = sum(int(e[b"count"] if b"count" in e else e["count"]) for e in entries)
        assert failures == 1, f"{failures} AUTH attempts for one request"
    finally:
        admin.execute_command("ACL", "DELUSER", "review")
        admin.close()


# ---------------------------------------------------------------- what held up: pools
def test_sync_pool_threads_beyond_max_connections_and_fork(url: str) -> None:
    config = SessionConfig(secret_key="k" * 32, max_connections=2)
    with SessionStore.from_url(url, config) as store:
        keep = store.new()
        keep["a"] = 1
        store.save(keep)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for i in range(15):
                    s = store.new()
                    s["x"] = i
                    store.save(s)
                    loaded = store.load(s.token)
                    assert loaded is not None and loaded["x"] == i
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(store.client.connection_pool._connections) <= 2

        pid = os.fork()
        if pid == 0:  # the child: its own connections, never the parent's sockets
            code = 0
            try:
                for i in range(10):
                    loaded = store.load(keep.token)
                    assert loaded is not None and loaded["a"] == 1
                    s = store.new()
                    s["c"] = i
                    store.save(s)
            except BaseException:
                code = 1
            os._exit(code)
        for _ in range(20):
            loaded = store.load(keep.token)
            assert loaded is not None and loaded["a"] == 1
        assert os.waitpid(pid, 0)[1] == 0
        for _ in range(20):
            loaded = store.load(keep.token)
            assert loaded is not None and loaded["a"] == 1


def test_async_pool_waiters_and_cancellation_leave_no_dirty_connection(url: str) -> None:
    config = SessionConfig(secret_key="k" * 32, max_connections=2, connect_timeout=2)

    async def scenario() -> None:
        store = AsyncSessionStore.from_url(url, config)
        sessions = []
        for i in range(10):
            s = store.new()
            s["i"] = i
            await store.save(s)
            sessions.append(s)

        async def reader() -> None:
            for _ in range(10):
                s = random.choice(sessions)
                loaded = await store.load(s.token)
                assert loaded is not None and loaded["i"] == s["i"]

        await asyncio.gather(*(reader() for _ in range(25)))  # 25 tasks, 2 connections
        pool = store.client.connection_pool
        assert len(pool._available_connections) == 2 and not pool._in_use_connections

        for n in range(200):  # cancelled at every point of a round trip
            task = asyncio.ensure_future(store.load(sessions[n % 10].token))
            for _ in range(n % 7):
                await asyncio.sleep(0)
            task.cancel()  # a no-op when the load already finished
            with contextlib.suppress(asyncio.CancelledError):
                await task
            other = sessions[(n + 3) % 10]
            loaded = await store.load(other.token)
            assert loaded is not None and loaded["i"] == other["i"]
        # cancelled waiters of an exhausted pool: the others are still served
        tasks = [asyncio.ensure_future(store.load(s.token)) for s in sessions]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        done: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) or r is not None for r in done[::2])
        assert [r["i"] for r in done[1::2]] == [s["i"] for s in sessions[1::2]]
        assert not pool._in_use_connections and not pool._condition._waiters
        await store.aclose()

    asyncio.run(scenario())


# -------------------------------------------------------------- what held up: the probe
def test_script_flush_in_modern_mode_and_a_failed_probe_resent(
    server: Standalone, url: str
) -> None:
    config = SessionConfig(secret_key="k" * 32, socket_timeout=0.3, connect_timeout=0.3)
    with SessionStore.from_url(url, config) as store:
        store.sessions_for("nobody")  # a pooled connection
        admin = redis.Redis.from_url(url)
        node = server.node
        node.pause()  # the probe save times out
        try:
            s = store.new()
            s["a"] = 1
            with pytest.raises(StoreUnavailable):
                store.save(s)
        finally:
            node.resume()
        time.sleep(0.2)
        admin.script_flush()  # the legacy SHA counts as sent: NOSCRIPT, then by source
        assert store.plan._modern_scripts is None
        s = store.new()
        s["a"] = 2
        assert store.save(s).written
        assert store.plan._modern_scripts is server_binary().at_least(7)
        admin.script_flush()
        s["a"] = 3
        assert store.save(s).written
        loaded = store.load(s.token)
        assert loaded is not None and loaded["a"] == 3
        admin.close()


def test_probe_with_wait_and_a_noscript_resend() -> None:
    """durability="replicated": WAIT goes at index 1, the SCRIPT LOAD replies after the
    calls; a first save whose script the server forgot is resent with its WAIT."""
    with start_standalone() as primary, start_standalone() as replica:
        rc: Any = replica.node.client()
        rc.execute_command("REPLICAOF", primary.node.host, primary.node.port)
        pc = primary.node.client()
        deadline = time.monotonic() + 10
        while rc.info("replication")["master_link_status"] != "up":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        config = SessionConfig(
            secret_key="k" * 32, durability="replicated", socket_timeout=0.3, wait_timeout=0.5
        )
        with SessionStore.from_url(primary.url, config) as store:
            s = store.new()
            s["a"] = 1
            assert store.save(s).replicas == 1
            assert store.plan._modern_scripts is server_binary().at_least(7)
        with SessionStore.from_url(primary.url, config) as store:
            store.plan._scripts_sent.add(_legacy_sha())  # as after a failed first save
            pc.script_flush()
            s = store.new()
            s["b"] = 2
            result = store.save(s)
            assert result.written and result.replicas == 1
            loaded = store.load(s.token)
            assert loaded is not None and loaded["b"] == 2
        pc.close()
        rc.close()


def test_redis6_then_valkey_then_redis6_on_one_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis 6.2 cannot parse "#!lua": the probe settles the legacy form; a store that
    settled the modern form on Valkey keeps working when the address is served by a 6.2."""
    try:
        server_binary("redis6")
    except RuntimeError as exc:
        pytest.skip(str(exc))

    def life(store: SessionStore) -> None:
        s = store.new()
        s["a"] = 1
        store.save(s)
        s["a"] = 2
        store.save(s)
        loaded = store.load(s.token)
        assert loaded is not None and loaded["a"] == 2
        assert store.pop_once(loaded, "a") == 2
        assert store.destroy(s.token)

    monkeypatch.setenv("STICKLESS_SERVER", "redis6")
    with start_standalone() as old:
        port = old.node.port
        with SessionStore.from_url(old.url, CONFIG) as store:
            life(store)
            assert store.plan._modern_scripts is False
    monkeypatch.setenv("STICKLESS_SERVER", "valkey")
    with start_standalone(port=port) as new, SessionStore.from_url(new.url, CONFIG) as store:
        life(store)
        assert store.plan._modern_scripts is True
        new.stop()
        monkeypatch.setenv("STICKLESS_SERVER", "redis6")
        with start_standalone(port=port):
            life(store)
            assert store.plan._modern_scripts is False


def _legacy_sha() -> str:
    assert SAVE.legacy is not None
    return SAVE.legacy.sha
