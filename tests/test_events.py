"""Session events from keyspace notifications, on real servers (standalone, cluster,
sentinel): created / renewed / destroyed / expired, reconnection, and what happens when the
server will not let us enable them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from stickless import SessionConfig, SessionStore, StoreUnavailable, tokens
from stickless.embedded import start_cluster, start_sentinel, start_standalone
from stickless.ops.events import EventSubscriber, SessionEvent, merge_flags
from stickless.store.keys import KeyLayout

pytestmark = pytest.mark.stickless_requires(
    7, 0, reason="the subscriber needs keyspace events for new keys (the n flag)"
)


@pytest.fixture
def config() -> SessionConfig:
    return SessionConfig(key_prefix=f"e{uuid.uuid4().hex[:10]}")


@pytest.fixture
def stores() -> Iterator[list[SessionStore]]:
    made: list[SessionStore] = []
    yield made
    for store in made:
        store.close()


def sid(session: Any) -> str:
    return tokens.token_id(session.raw_token).session_id


def collect(sub: EventSubscriber, count: int, timeout: float = 10) -> list[SessionEvent]:
    return list(sub.listen(timeout=timeout, count=count))


def lifecycle(store: SessionStore, short: SessionStore) -> list[tuple[str, str]]:
    """Create, renew, destroy one session; create one that expires. The expected events."""
    s = store.new()
    s["a"] = 1
    s.user_id = "alice"
    store.save(s)
    created = sid(s)
    s.renew()
    s["b"] = 2
    store.save(s)
    renewed = sid(s)
    store.destroy(s.token)
    brief = short.new()
    brief["x"] = 1
    short.save(brief)
    expected = [
        ("created", created),
        ("renewed", renewed),
        ("destroyed", renewed),
        ("created", sid(brief)),
        ("expired", sid(brief)),
    ]
    assert created == renewed  # a session's id survives its renewals
    return expected


@pytest.mark.parametrize("kind", ["standalone", "cluster", "sentinel"])
def test_lifecycle_events(
    kind: str, request: pytest.FixtureRequest, config: SessionConfig, stores: list[Any]
) -> None:
    setup = request.getfixturevalue(f"stickless_{'valkey' if kind == 'standalone' else kind}")
    store = SessionStore.from_url(setup.url, config)
    short = SessionStore.from_url(
        setup.url, config.with_options(idle_timeout=0.5, absolute_timeout=60)
    )
    stores += [store, short]
    with EventSubscriber(setup.url, config) as sub:
        assert all(status.enabled for status in sub.nodes)
        assert len(sub.nodes) == (3 if kind == "cluster" else 1)
        expected = lifecycle(store, short)
        events = collect(sub, len(expected))
    assert [(e.kind, e.session_id) for e in events] == expected
    assert all(e.at.tzinfo is not None and e.node for e in events)


def test_cluster_events_come_from_every_primary(
    stickless_cluster: Any, config: SessionConfig, stores: list[Any]
) -> None:
    store = SessionStore.from_url(stickless_cluster.url, config)
    stores.append(store)
    layout = KeyLayout(config.key_prefix)
    expected: set[tuple[str, str]] = set()
    with EventSubscriber(stickless_cluster.url, config) as sub:
        # new sessions until each primary holds one (families are random)
        while len({node for node, _ in expected}) < 3 and len(expected) < 200:
            s = store.new()
            s["n"] = 1
            store.save(s)
            tid = tokens.token_id(s.raw_token)
            node = stickless_cluster.primary_for_key(layout.data(tid.family))
            expected.add((f"{node.host}:{node.port}", tid.session_id))
        events = collect(sub, len(expected))
    assert [e.kind for e in events] == ["created"] * len(expected)
    assert {(e.node, e.session_id) for e in events} == expected
    assert len({e.node for e in events}) == 3


def test_listen_stops_at_timeout_and_count(
    stickless_valkey: Any, config: SessionConfig, stores: list[Any]
) -> None:
    store = SessionStore.from_url(stickless_valkey.url, config)
    stores.append(store)
    with EventSubscriber(stickless_valkey.url, config) as sub:
        started = time.monotonic()
        assert list(sub.listen(timeout=0.3)) == []
        assert 0.25 < time.monotonic() - started < 3
        for i in range(3):
            s = store.new()
            s["i"] = i
            store.save(s)
        assert len(list(sub.listen(timeout=5, count=2))) == 2
        third = sub.get(timeout=5)
        assert third is not None and third.kind == "created"
        assert sub.get(timeout=0.2) is None


def test_other_prefixes_are_not_reported(
    stickless_valkey: Any, config: SessionConfig, stores: list[Any]
) -> None:
    mine = SessionStore.from_url(stickless_valkey.url, config)
    other = SessionStore.from_url(
        stickless_valkey.url, config.with_options(key_prefix="zz" + config.key_prefix)
    )
    stores += [mine, other]
    with EventSubscriber(stickless_valkey.url, config) as sub:
        s = other.new()
        s["x"] = 1
        other.save(s)
        other.destroy(s.token)
        m = mine.new()
        m["y"] = 1
        mine.save(m)
        events = collect(sub, 1)
        assert sub.get(timeout=0.3) is None
    assert [(e.kind, e.session_id) for e in events] == [("created", sid(m))]


def test_resubscribes_after_losing_the_connection(
    stickless_valkey: Any, config: SessionConfig, stores: list[Any]
) -> None:
    store = SessionStore.from_url(stickless_valkey.url, config)
    stores.append(store)
    admin = stickless_valkey.node.client()
    try:
        with EventSubscriber(stickless_valkey.url, config) as sub:
            before = {c["id"] for c in admin.client_list(_type="pubsub")}
            assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            # the server may free a killed client later (NUMPAT still counting it): wait
            # for a subscriber that is not one of those killed, then for its pattern
            deadline = time.monotonic() + 10
            while not {c["id"] for c in admin.client_list(_type="pubsub")} - before:
                assert time.monotonic() < deadline, "never reconnected"
                time.sleep(0.05)
            while int(admin.execute_command("PUBSUB", "NUMPAT")) < 1:
                assert time.monotonic() < deadline, "never resubscribed"
                time.sleep(0.05)
            s = store.new()
            s["after"] = True
            store.save(s)
            events = collect(sub, 1)
        assert [(e.kind, e.session_id) for e in events] == [("created", sid(s))]
    finally:
        admin.close()


def test_flags_are_merged_and_enable_false_leaves_config_alone(config: SessionConfig) -> None:
    assert merge_flags("") == "Kgxn"
    assert merge_flags("El") == "ElKgxn"
    assert merge_flags("AKE") == "AKEn"  # A covers g and x, not n
    with start_standalone() as server:
        admin = server.node.client()
        try:
            admin.config_set("notify-keyspace-events", "El")
            with EventSubscriber(server.url, config, enable=False) as sub:
                (status,) = sub.nodes
                assert status.enabled is False and "missing" in (status.error or "")
            assert admin.config_get("notify-keyspace-events")["notify-keyspace-events"] == "lE"
            with EventSubscriber(server.url, config) as sub:
                (status,) = sub.nodes
                assert status.enabled is True
            flags = admin.config_get("notify-keyspace-events")["notify-keyspace-events"]
            assert flags is not None
            assert set(flags) == set("ElKgxn")
        finally:
            admin.close()


def test_without_config_permission(config: SessionConfig) -> None:
    """A managed service usually refuses CONFIG: the subscriber says it cannot tell, and
    works once the operator enabled the notifications on the server side."""
    with start_standalone() as server:
        admin = server.node.client()
        try:
            admin.execute_command(  # type: ignore[no-untyped-call]  # redis-py: untyped
                "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config"
            )
            url = f"redis://app:pw@127.0.0.1:{server.node.port}/0"
            store = SessionStore.from_url(url, config)
            with EventSubscriber(url, config) as sub:
                (status,) = sub.nodes
                assert status.enabled is None and "CONFIG GET refused" in (status.error or "")
                s = store.new()
                s["x"] = 1
                store.save(s)
                assert sub.get(timeout=0.5) is None  # notifications are off: nothing comes
            admin.config_set("notify-keyspace-events", "Kgxn")  # the "provider setting"
            with EventSubscriber(url, config) as sub:
                store.destroy(s.token)
                events = collect(sub, 1)
            assert [(e.kind, e.session_id) for e in events] == [("destroyed", sid(s))]
            store.close()
        finally:
            admin.close()


def test_unreachable_server_raises_store_unavailable(config: SessionConfig) -> None:
    sub = EventSubscriber("redis://127.0.0.1:1/0", config.with_options(connect_timeout=0.5))
    with pytest.raises(StoreUnavailable):
        sub.start()
    sub.close()


def test_events_carry_no_token_or_value(
    stickless_valkey: Any, config: SessionConfig, stores: list[Any]
) -> None:
    store = SessionStore.from_url(stickless_valkey.url, config)
    stores.append(store)
    with EventSubscriber(stickless_valkey.url, config) as sub:
        s = store.new()
        s["card"] = "4111-1111"
        store.save(s)
        (event,) = collect(sub, 1)
    secret = s.token.split(".")[1]
    assert secret not in repr(event) and "4111" not in repr(event)


def _wait_numpat(node: Any, timeout: float = 20) -> None:
    client = node.client()
    try:
        deadline = time.monotonic() + timeout
        while int(client.execute_command("PUBSUB", "NUMPAT")) < 1:
            assert time.monotonic() < deadline, f"no subscriber on {node!r}"
            time.sleep(0.05)
    finally:
        client.close()


def test_sentinel_subscriber_follows_a_failover(config: SessionConfig) -> None:
    with start_sentinel() as ha:
        store = SessionStore.from_url(ha.url, config)
        with EventSubscriber(ha.url, config) as sub:
            old = ha.kill_primary()
            new = ha.wait_for_failover(old)
            _wait_numpat(new)  # resubscribed on the new primary (events meanwhile are lost)
            s = store.new()
            s["after"] = "failover"
            deadline = time.monotonic() + 20
            while True:  # the store may need a moment to see the new primary too
                try:
                    store.save(s)
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            events = collect(sub, 1, timeout=10)
            (status,) = sub.nodes
        store.close()
    assert [(e.kind, e.session_id) for e in events] == [("created", sid(s))]
    assert status.enabled  # notifications were switched on on the new primary too


def test_cluster_subscriber_follows_a_failover(config: SessionConfig) -> None:
    layout = KeyLayout(config.key_prefix)
    with start_cluster() as cluster:
        store = SessionStore.from_url(cluster.url, config)
        with EventSubscriber(cluster.url, config) as sub:
            old = cluster.primaries[0]
            cluster.kill_primary(old)
            new = cluster.wait_for_failover(old)
            _wait_numpat(new)  # the subscriber found the promoted replica
            for _ in range(200):  # a session whose slot the new primary serves
                s = store.new()
                s["n"] = 1
                if cluster.primary_for_key(layout.data(tokens.token_id(s.raw_token).family)) is new:
                    break
            deadline = time.monotonic() + 20
            while True:
                try:
                    store.save(s)
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            events = collect(sub, 1, timeout=10)
            nodes = {status.node for status in sub.nodes}
        store.close()
    assert [(e.kind, e.session_id, e.node) for e in events] == [
        ("created", sid(s), f"{new.host}:{new.port}")
    ]
    assert f"{old.host}:{old.port}" not in nodes
