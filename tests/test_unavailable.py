"""Every "not available right now" answer becomes StoreUnavailable (a 503), never a 500.

Each failure is injected into real Valkey servers: fencing (NOREPLICAS), a replica (READONLY),
a replica that lost its primary (MASTERDOWN), a replica loading a full sync (LOADING), a
long script (BUSY), CLIENT PAUSE (timeout), a closed port, a cluster with a dead primary
(CLUSTERDOWN), and redis-py failing internally while a cluster client's topology is in
flux. TRYAGAIN (multi-key commands during resharding, which the store never sends) is fed
to the executor as a reply. Both stores, and the WSGI adapter's answer (503, Retry-After).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import flask
import pytest
import redis
from redis._parsers.base import BaseParser
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client

from helpers import wait_until
from stickless import (
    AsyncSessionStore,
    ReplicationTimeout,
    SessionConfig,
    SessionStore,
    StoreUnavailable,
)
from stickless.asgi import SessionMiddleware as AsgiMiddleware
from stickless.embedded import (
    ClusterSetup,
    Standalone,
    server_binary,
    start_cluster,
    start_standalone,
)
from stickless.flask import Stickless
from stickless.store import failures
from stickless.store.base import UNAVAILABLE_TYPES
from stickless.store.plan import Batch, Command
from stickless.wsgi import SessionMiddleware

FAST = dict(connect_timeout=0.5, socket_timeout=0.5, retries=1, retry_backoff=0.02)


def config(**options: Any) -> SessionConfig:
    options = {"key_prefix": f"u{uuid.uuid4().hex[:8]}", **FAST, **options}
    return SessionConfig(**options)


def unavailable(action: Callable[[], Any], code: str | None = None) -> StoreUnavailable:
    """Run ``action``, which must raise StoreUnavailable (with a cause of error ``code``)."""
    with pytest.raises(StoreUnavailable) as info:
        action()
    if code is not None:
        assert failures.error_code(info.value.cause) == code, repr(info.value.cause)
    return info.value


def parse_error(reply: str) -> Exception:
    """The exception redis-py builds from an error reply off the wire."""
    return BaseParser.parse_error(reply)  # type: ignore[no-untyped-call,no-any-return]


def cluster_info(client: redis.Redis) -> str:
    return str(client.execute_command("CLUSTER", "INFO"))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def server() -> Iterator[Standalone]:
    with start_standalone() as valkey:
        yield valkey


# ------------------------------------------------------------------- classification
@pytest.mark.parametrize(
    "reply",
    [
        "CLUSTERDOWN The cluster is down",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "LOADING Valkey is loading the dataset in memory",
        "READONLY You can't write against a read only replica.",
        "NOREPLICAS Not enough good replicas to write. script: on @user_script:1.",
        "BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "MISCONF Errors writing to the AOF file",
        "OOM command not allowed when used memory > 'maxmemory'.",
    ],
)
def test_error_replies_that_mean_unavailable(reply: str) -> None:
    error = parse_error(reply)  # as redis-py builds it from the wire
    verdict = failures.unavailable_reply(error)
    assert verdict is not None and verdict.applied is False
    assert verdict.role == (reply.split(maxsplit=1)[0] in failures.ROLE_CODES)
    assert isinstance(failures.classify_error(error, UNAVAILABLE_TYPES), failures.Unavailable)


@pytest.mark.parametrize(
    "reply", ["ERR hash value is not an integer", "WRONGTYPE Operation against a key", "NOSCRIPT x"]
)
def test_other_error_replies_stay_errors(reply: str) -> None:
    error = parse_error(reply)
    assert failures.unavailable_reply(error) is None
    assert failures.classify_error(error, UNAVAILABLE_TYPES) is error


def test_only_redis_internal_bugs_count_as_outages() -> None:
    def ours() -> None:
        raise AttributeError("a bug of the app")

    try:
        ours()
    except AttributeError as exc:
        assert failures.classify_error(exc, UNAVAILABLE_TYPES) is exc


def test_a_save_is_judged_by_its_own_reply_only() -> None:
    refused = parse_error("NOREPLICAS Not enough good replicas to write.")
    failures.screen_replies([[1, 2, 3, 4], refused], idempotent=False)  # the index update
    with pytest.raises(failures.Unavailable):
        failures.screen_replies([refused, 1], idempotent=False)
    with pytest.raises(failures.Unavailable):
        failures.screen_replies([[], refused], idempotent=True)


# ------------------------------------------------------------------ real servers
def test_noreplicas_fencing(server: Standalone, store_factory: Any) -> None:
    store = store_factory(server.url, config())
    kept = store.new()
    kept["a"] = 1
    store.save(kept)
    admin = server.node.client()
    admin.config_set("min-replicas-to-write", 1)
    try:
        fresh = store.new()
        fresh["b"] = 2
        error = unavailable(lambda: store.save(fresh), "NOREPLICAS")
        assert error.applied is False
        loaded = store.load(kept.token)  # a read (no touch due) is served
        assert loaded == {"a": 1}
        loaded["a"] = 2
        assert unavailable(lambda: store.save(loaded), "NOREPLICAS").applied is False
        unavailable(lambda: store.destroy(kept.token), "NOREPLICAS")
    finally:
        admin.config_set("min-replicas-to-write", 0)
        admin.close()
    assert store.load(kept.token) == {"a": 1}  # nothing of the refused writes
    assert store.load(fresh.token) is None


def test_noreplicas_fencing_an_incr(server: Standalone) -> None:
    store = SessionStore.from_url(server.url, config())
    s = store.new()
    s["n"] = 1
    store.save(s)
    admin = server.node.client()
    admin.config_set("min-replicas-to-write", 1)
    try:
        s.incr("n")
        unavailable(lambda: store.save(s), "NOREPLICAS")
    finally:
        admin.config_set("min-replicas-to-write", 0)
        admin.close()
        store.close()


def test_readonly_then_masterdown_on_a_replica(store_factory: Any) -> None:
    with start_standalone() as primary, start_standalone() as replica:
        cfg = config(touch_interval=3600)
        on_primary = store_factory(primary.url, cfg)
        s = on_primary.new()
        s["a"] = 1
        on_primary.save(s)
        r = replica.node.client()
        r.replicaof(primary.node.host, primary.node.port)
        wait_until(lambda: r.info("replication")["master_link_status"] == "up")
        wait_until(lambda: r.dbsize() > 0)

        on_replica = store_factory(replica.url, cfg)
        assert on_replica.load(s.token) == {"a": 1}  # reads are fine
        fresh = on_replica.new()
        fresh["b"] = 2
        assert unavailable(lambda: on_replica.save(fresh), "READONLY").applied is False
        touching = store_factory(replica.url, cfg.with_options(touch_interval=0))
        unavailable(lambda: touching.load(s.token), "READONLY")  # the touch is a write

        r.config_set("replica-serve-stale-data", "no")
        primary.stop()
        wait_until(lambda: r.info("replication")["master_link_status"] == "down")
        unavailable(lambda: on_replica.load(s.token), "MASTERDOWN")
        r.close()


@pytest.mark.stickless_requires(7, 0, reason="loading-process-events-interval-bytes")
def test_loading(store_factory: Any) -> None:
    slow = [
        "--key-load-delay",
        "100",  # microseconds per key: 20,000 keys take about 2 s to load
        "--repl-diskless-load",
        "disabled",
        "--loading-process-events-interval-bytes",
        "1024",  # answer clients (with LOADING) while loading
    ]
    with start_standalone() as primary, start_standalone(extra_args=slow) as replica:
        p = primary.node.client()
        for start in range(0, 20_000, 1000):
            p.mset({f"filler{i}": "x" for i in range(start, start + 1000)})
        store = store_factory(replica.url, config(retries=0))
        s = store.new()
        r = replica.node.client()
        r.replicaof(primary.node.host, primary.node.port)

        def loading() -> bool:
            try:
                store.load(s.token)
            except StoreUnavailable as exc:
                return failures.error_code(exc.cause) == "LOADING"
            return False

        assert wait_until(loading, timeout=10)
        p.close()
        r.close()


def test_busy_script(server: Standalone, store_factory: Any) -> None:
    store = store_factory(server.url, config())
    s = store.new()
    s["a"] = 1
    store.save(s)
    admin = server.node.client()
    # the script time limit is called lua-time-limit before Redis 7.0
    threshold = "busy-reply-threshold" if server_binary().at_least(7) else "lua-time-limit"
    admin.config_set(threshold, 100)
    spinner = server.node.client(timeout=10)

    def spin() -> None:
        with pytest.raises(redis.ResponseError):  # killed by SCRIPT KILL
            spinner.eval("while true do end", 0)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        unavailable(lambda: store.load(s.token), "BUSY")
    finally:
        wait_until(lambda: server.node.client().script_kill())
        thread.join(5)
        admin.config_set(threshold, 5000)
        admin.close()
        spinner.close()
    assert store.load(s.token) == {"a": 1}


def test_client_pause_times_out(server: Standalone, store_factory: Any) -> None:
    store = store_factory(server.url, config(socket_timeout=0.3, retries=0))
    s = store.new()
    s["a"] = 1
    store.save(s)
    admin = server.node.client()
    admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")  # type: ignore[no-untyped-call]
    started = time.monotonic()
    error = unavailable(lambda: store.load(s.token))
    assert time.monotonic() - started < 1.2
    assert isinstance(error.cause, redis.TimeoutError | TimeoutError), repr(error.cause)
    admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
    admin.close()
    assert store.load(s.token) == {"a": 1}


def test_closed_port(store_factory: Any) -> None:
    with start_standalone() as gone:
        url = gone.url
    store = store_factory(url, config())
    s = store.new()
    s["a"] = 1
    error = unavailable(lambda: store.save(s))
    assert isinstance(error.cause, redis.ConnectionError | OSError)
    assert error.applied is None  # no answer: as far as the store knows, unknown
    unavailable(lambda: store.load(s.token))


# ----------------------------------------------------------------------- cluster
@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    with start_cluster(primaries=1, replicas_per_primary=0, node_timeout_ms=500) as setup:
        yield setup


@pytest.mark.parametrize("durability", ["none", "replicated"])
def test_clusterdown(cluster: ClusterSetup, store_factory: Any, durability: str) -> None:
    """A slot left unassigned: with cluster-require-full-coverage every command is refused
    with CLUSTERDOWN (as while a dead primary is not yet replaced), no node is unreachable."""
    store = store_factory(cluster.url, config(durability=durability, min_replicas=0))
    s = store.new()
    s["a"] = 1
    store.save(s)
    node = cluster.primaries[0].client()
    node.execute_command("CLUSTER", "DELSLOTS", 0)  # type: ignore[no-untyped-call]
    try:
        wait_until(lambda: "cluster_state:fail" in cluster_info(node))
        causes = [unavailable(lambda: store.load(s.token)).cause]
        s["b"] = 2
        refused = unavailable(lambda: store.save(s))
        assert refused.applied in (False, None)
        causes += [refused.cause, unavailable(lambda: store.destroy(s.token)).cause]
        # the server's CLUSTERDOWN, or redis-py's reaction to it (it reloads the slot map
        # and finds a slot unserved): an outage either way
        for cause in causes:
            assert failures.error_code(cause) == "CLUSTERDOWN" or isinstance(
                cause, redis.exceptions.RedisClusterException
            ), repr(cause)
    finally:
        node.execute_command("CLUSTER", "ADDSLOTS", 0)  # type: ignore[no-untyped-call]
        wait_until(lambda: "cluster_state:ok" in cluster_info(node))
        node.close()
    assert store.load(s.token) == {"a": 1}


def test_redis_internal_error_while_cluster_topology_is_in_flux() -> None:
    """redis-py #3835: a slot owner looked up as None while nodes are replaced raises an
    AttributeError inside redis-py; it is an outage (503), not a bug of the app (500)."""
    with start_cluster(primaries=1, replicas_per_primary=0) as cluster:
        store = SessionStore.from_url(cluster.url, config(retries=0))
        s = store.new()
        s["a"] = 1
        store.save(s)
        manager = store.client.nodes_manager
        real = manager.get_node_from_slot
        manager.get_node_from_slot = lambda *args, **kwargs: None
        try:
            error = unavailable(lambda: store.load(s.token))
            assert isinstance(error.cause, AttributeError)
            assert "redis-py internal error" in str(error)
        finally:
            manager.get_node_from_slot = real
        assert store.load(s.token) == {"a": 1}
        store.close()


def test_tryagain_reply_through_the_executor(
    server: Standalone, store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store never sends multi-key commands, so TRYAGAIN is fed in as the reply."""
    store = store_factory(server.url, config())
    tryagain = parse_error("TRYAGAIN Multiple keys request during rehashing of slot")

    def fake(client: Any, batch: Batch) -> list[Any]:
        return [tryagain for _ in batch.calls]

    async def afake(client: Any, batch: Batch) -> list[Any]:
        return fake(client, batch)

    monkeypatch.setattr(SessionStore, "_pipeline", staticmethod(fake))
    monkeypatch.setattr(AsyncSessionStore, "_pipeline", staticmethod(afake))
    with pytest.raises(failures.Unavailable):
        store.send(Batch((Command(("MGET", "{t}a", "{t}b")),), idempotent=True))
    unavailable(lambda: store.load(store.new().token), "TRYAGAIN")


# ---------------------------------------------------------------- the adapter
def counter_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = environ["stickless.session"]
    session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session["n"]).encode()]


def test_wsgi_answers_503_not_500(server: Standalone) -> None:
    client = Client(cast(Any, SessionMiddleware(counter_app, url=server.url, config=config())))
    assert client.get("/").status_code == 200
    admin = server.node.client()
    admin.config_set("min-replicas-to-write", 1)  # NOREPLICAS
    try:
        response = client.get("/")
        assert response.status_code == 503, response.get_data()
        assert response.headers["Retry-After"] == "1"
    finally:
        admin.config_set("min-replicas-to-write", 0)
        admin.close()
    assert client.get("/").status_code == 200


def test_replication_timeout_says_applied_not_replicated(server: Standalone) -> None:
    """No replica at all: WAIT returns 0. The save is on the primary and says so; the
    adapter answers 503 (the client was not told it is saved)."""
    cfg = config(durability="replicated", min_replicas=1, wait_timeout=0.05)
    store = SessionStore.from_url(server.url, cfg)
    s = store.new()
    s["a"] = 1
    with pytest.raises(ReplicationTimeout) as info:
        store.save(s)
    assert info.value.applied is True and info.value.acknowledged == 0
    assert "applied on the primary, not replicated" in str(info.value)
    assert store.load(s.token) == {"a": 1}
    store.close()

    client = Client(cast(Any, SessionMiddleware(counter_app, url=server.url, config=cfg)))
    response = client.get("/")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"


def test_flask_and_starlette_answer_a_replication_timeout_with_503(server: Standalone) -> None:
    """What docs/adapters/flask.md and starlette.md promise: 503 + Retry-After, not 500."""
    cfg = config(durability="replicated", min_replicas=1, wait_timeout=0.05)
    app = flask.Flask("replication")

    @app.get("/")
    def count() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return "ok"

    app.config.update(STICKLESS_URL=server.url, STICKLESS_CONFIG=cfg)
    Stickless(app)
    response = app.test_client().get("/")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"

    async def endpoint(request: Request) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse("ok")

    asgi = Starlette(routes=[Route("/", endpoint)])
    asgi.add_middleware(AsgiMiddleware, url=server.url, config=cfg)
    with TestClient(asgi) as client:
        response = client.get("/")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"


# ------------------------------------------------------------ review findings (failover)
def test_a_wait_cut_short_is_applied_not_replicated(server: Standalone) -> None:
    """``CLIENT UNBLOCK ... ERROR`` (as a demotion does to a blocked WAIT): the save was
    applied, its replication unknown: ReplicationTimeout (a 503), never a raw TypeError."""
    cfg = config(durability="replicated", min_replicas=1, wait_timeout=2)
    with SessionStore.from_url(server.url, cfg) as store:
        s = store.new()
        s["a"] = 1
        admin = server.node.client()

        def unblock() -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                for client in admin.client_list():
                    if client.get("cmd") == "wait":
                        admin.client_unblock(int(client["id"]), error=True)
                        return
                time.sleep(0.01)

        worker = threading.Thread(target=unblock)
        worker.start()
        try:
            with pytest.raises(ReplicationTimeout) as info:
                store.save(s)
        finally:
            worker.join()
            admin.close()
        assert info.value.acknowledged == 0
        assert store.load(s.token) == {"a": 1}  # applied on the primary


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_save_into_a_migrating_slot_is_unavailable(
    stickless_cluster: ClusterSetup, flavour: str
) -> None:
    """While a session's slot migrates, the server answers TRYAGAIN and redis-py gives up
    with ClusterError("TTL exhausted"): a StoreUnavailable (nothing ran), never a 500."""
    from redis.crc import key_slot

    from stickless.store.keys import KeyLayout
    from stickless.tokens import token_id

    cfg = config()
    with SessionStore.from_url(stickless_cluster.url, cfg) as store:
        s = store.new()
        s["n"] = 0
        store.save(s)
        key = KeyLayout(cfg.key_prefix).data(token_id(s.raw_token).family)
        slot = key_slot(key.encode())
        source = stickless_cluster.primary_for_key(key)
        target = next(p for p in stickless_cluster.primaries if p is not source)
        src, dst = source.client(), target.client()
        # redis-py's execute_command is untyped: its calls below ignore no-untyped-call
        src_id, dst_id = (
            src.execute_command("CLUSTER", "MYID"),  # type: ignore[no-untyped-call]
            dst.execute_command("CLUSTER", "MYID"),  # type: ignore[no-untyped-call]
        )
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)  # type: ignore[no-untyped-call]
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)  # type: ignore[no-untyped-call]
        try:
            loaded = store.load(s.token)
            assert loaded is not None
            loaded.incr("n")
            if flavour == "sync":
                with pytest.raises(StoreUnavailable):
                    store.save(loaded)
            else:

                async def save() -> None:
                    async_store = AsyncSessionStore.from_url(stickless_cluster.url, cfg)
                    try:
                        again = await async_store.load(s.token)
                        assert again is not None
                        again.incr("n")
                        with pytest.raises(StoreUnavailable):
                            await async_store.save(again)
                    finally:
                        await async_store.aclose()

                import asyncio

                asyncio.run(save())
        finally:
            src.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")  # type: ignore[no-untyped-call]
            dst.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")  # type: ignore[no-untyped-call]
            src.close()
            dst.close()
        assert store.load(s.token) == {"n": 0}  # nothing of the refused saves
