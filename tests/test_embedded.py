"""stickless.embedded: these tests start real valkey-server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

import stickless.embedded as embedded
from stickless.embedded import (
    ClusterSetup,
    Node,
    SentinelSetup,
    Standalone,
    start_cluster,
    start_sentinel,
    start_standalone,
    valkey_binary,
)


def pid_alive(pid: int) -> bool:
    """Does ``pid`` name a live process (a zombie counts as dead)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # no procfs (macOS): kill(0) succeeded
    return "\nState:\tZ" not in status


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_all_gone(nodes: list[Node]) -> None:
    assert nodes
    alive = [n for n in nodes if pid_alive(n.pid)]
    assert not alive, f"still running after stop(): {alive}"
    kept = [n.dir for n in nodes if n.dir.exists()]
    assert not kept, f"temporary directories left behind: {kept}"


def cluster_client(cluster: ClusterSetup) -> RedisCluster:
    nodes = [ClusterNode(n.host, n.port) for n in cluster.primaries]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=5)


# -- fixtures: one topology of each kind per module; teardown checks that nothing survives --


@pytest.fixture(scope="module")
def standalone() -> Iterator[Standalone]:
    with start_standalone() as server:
        yield server
    assert_all_gone(server.nodes)


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelSetup]:
    with start_sentinel() as setup:
        yield setup
    assert_all_gone(setup.nodes)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    with start_cluster() as setup:
        yield setup
    assert_all_gone(setup.nodes)


# -- standalone --------------------------------------------------------------------------------


def test_standalone_answers_ping_set_get(standalone: Standalone) -> None:
    node = standalone.node
    assert standalone.url == f"redis://127.0.0.1:{node.port}/0"
    assert node.role == "primary"
    assert node.alive
    assert node.dir.is_dir()
    client = redis.Redis.from_url(standalone.url, decode_responses=True)
    try:
        assert client.ping()
        client.set("greeting", "hello")
        assert client.get("greeting") == "hello"
        assert client.info("server")["process_id"] == node.pid
    finally:
        client.close()


def test_standalone_binds_loopback_without_persistence(standalone: Standalone) -> None:
    client = standalone.node.client()
    try:
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
    finally:
        client.close()
    assert (standalone.node.dir / "valkey.log").stat().st_size > 0


def test_aof_data_survives_restart_with_same_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # does not exist yet: start_standalone creates it
    with start_standalone(aof=True, data_dir=data_dir) as first:
        client = first.node.client()
        client.set("durable", "yes")
        client.rpush("list", "a", "b")
        client.close()
    assert not pid_alive(first.node.pid)
    aof_dir = data_dir / "appendonlydir"  # multi-part AOF (Redis 7.0, Valkey)
    if not embedded.server_binary().at_least(7):
        aof_dir = data_dir  # one appendonly.aof before 7.0
    assert aof_dir.is_dir(), sorted(p.name for p in data_dir.iterdir())
    assert any(p.name.endswith(".aof") for p in aof_dir.iterdir())

    with start_standalone(aof=True, data_dir=data_dir) as second:
        assert second.node.port != first.node.port or second.node.pid != first.node.pid
        client = second.node.client()
        assert client.get("durable") == "yes"
        assert client.lrange("list", 0, -1) == ["a", "b"]
        client.close()
    assert data_dir.is_dir()  # a given data_dir is kept


def test_aof_without_data_dir_uses_a_temporary_dir() -> None:
    with start_standalone(aof=True) as server:
        client = server.node.client()
        client.set("k", "v")
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()
        temp = server.node.dir
        assert temp.is_dir()
    assert not temp.exists()


def test_stop_kills_and_is_idempotent() -> None:
    server = start_standalone()
    node = server.node
    server.stop()
    assert not node.alive
    assert_all_gone([node])
    server.stop()  # again: no error
    node.stop()
    node.kill()


def test_node_kill_reaps_the_process() -> None:
    with start_standalone() as server:
        server.node.kill()
        assert not server.node.alive
        assert not pid_alive(server.node.pid)
    assert_all_gone([server.node])


def test_taken_port_is_retried_on_another(monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    real = embedded.free_ports  # type: ignore[attr-defined]  # the name embedded looks up
    handed_out: list[int] = []

    def first_a_taken_port(count: int) -> list[int]:
        ports = [taken] if not handed_out else real(count)
        handed_out.extend(ports)
        return ports

    monkeypatch.setattr(embedded, "free_ports", first_a_taken_port)
    try:
        with start_standalone() as server:
            assert handed_out[0] == taken
            assert server.node.port != taken
            assert server.node.client().ping()
    finally:
        blocker.close()


def test_pinned_port_in_use_raises_with_log_tail(standalone: Standalone) -> None:
    with pytest.raises(RuntimeError, match="Address already in use"):
        start_standalone(port=standalone.node.port)


def test_only_loopback_hosts_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_standalone(host="0.0.0.0")


def test_binary_override_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert valkey_binary().is_file()
    monkeypatch.setenv("STICKLESS_VALKEY_SERVER", str(tmp_path / "nope"))
    with pytest.raises(RuntimeError, match="STICKLESS_VALKEY_SERVER"):
        valkey_binary()


# -- processes never outlive their owner --------------------------------------------------------


def small_sentinel() -> SentinelSetup:
    return start_sentinel(replicas=1, sentinels=1)


def small_cluster() -> ClusterSetup:
    return start_cluster(primaries=1, replicas_per_primary=1)


@pytest.mark.parametrize("start", [start_standalone, small_sentinel, small_cluster])
def test_exception_inside_with_stops_everything(
    start: Callable[[], Standalone | SentinelSetup | ClusterSetup],
) -> None:
    with pytest.raises(ZeroDivisionError):
        with start() as topology:
            nodes = topology.nodes
            assert all(pid_alive(n.pid) for n in nodes)
            1 / 0
    assert_all_gone(nodes)


CHILD = """
import os, signal, sys
from stickless.embedded import start_standalone
server = start_standalone()
print(server.node.pid, server.node.dir, flush=True)
if sys.argv[1] == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)   # no atexit: only PR_SET_PDEATHSIG can help
sys.exit(0)                                # never stopped: the atexit handler must
"""

DEATHS = ["exit", "sigkill"] if sys.platform.startswith("linux") else ["exit"]


@pytest.mark.parametrize("death", DEATHS)
def test_servers_die_with_the_python_process(death: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, death],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    pid_text, _, directory = child.stdout.strip().partition(" ")
    assert pid_text, child.stderr
    assert wait_dead(int(pid_text)), f"valkey-server {pid_text} outlived its parent ({death})"
    if death == "exit":
        assert not Path(directory).exists()
    else:  # nobody could clean up after SIGKILL
        subprocess.run(["rm", "-rf", directory], check=True)


# -- sentinel ------------------------------------------------------------------------------------


def test_sentinel_topology(sentinel: SentinelSetup) -> None:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinel.sentinels)
    assert sentinel.url == f"redis+sentinel://{hosts}/stickless"
    assert sentinel.service_name == "stickless"
    assert len(sentinel.replicas) == 2 and len(sentinel.sentinels) == 3
    assert {n.role for n in sentinel.sentinels} == {"sentinel"}
    assert sentinel.sentinels[0].url == f"redis://127.0.0.1:{sentinel.sentinels[0].port}"
    for replica in sentinel.replicas:
        info = replica.client().info("replication")
        assert info["role"] == "slave"
        assert info["master_port"] == sentinel.primary.port
        assert info["master_link_status"] == "up"


def primary_reported_by(node: Node) -> tuple[bytes | str, int]:
    """The primary's address as the sentinel ``node`` reports it."""
    addr = node.client().sentinel_get_master_addr_by_name("stickless")
    assert addr is not None and not isinstance(addr, bool)
    return addr


def test_sentinels_report_the_primary(sentinel: SentinelSetup) -> None:
    for node in sentinel.sentinels:
        addr = primary_reported_by(node)
        assert tuple(addr) == ("127.0.0.1", sentinel.primary.port)
    client = Sentinel([(s.host, s.port) for s in sentinel.sentinels], socket_timeout=2)  # type: ignore[no-untyped-call, unused-ignore]
    primary = client.master_for("stickless", decode_responses=True)  # type: ignore[no-untyped-call, unused-ignore]
    primary.set("via-sentinel", "1")
    assert sentinel.primary.client().get("via-sentinel") == "1"


def test_sentinel_failover_elects_a_replica(sentinel: SentinelSetup) -> None:
    former_replicas = list(sentinel.replicas)
    old = sentinel.kill_primary()
    assert not old.alive and not pid_alive(old.pid)
    new = sentinel.wait_for_failover(old)
    assert new in former_replicas
    assert sentinel.primary is new and new.role == "primary"
    assert new not in sentinel.replicas
    client = new.client()
    assert client.info("replication")["role"] == "master"
    client.set("after-failover", "written")
    assert client.get("after-failover") == "written"
    # a majority agreed already; the rest learn it from the hello messages shortly
    deadline = time.monotonic() + 10
    while True:
        reported = {tuple(primary_reported_by(node)) for node in sentinel.sentinels}
        if reported == {("127.0.0.1", new.port)} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reported == {("127.0.0.1", new.port)}


# -- cluster -------------------------------------------------------------------------------------


def test_cluster_topology(cluster: ClusterSetup) -> None:
    assert len(cluster.primaries) == 3 and len(cluster.replicas) == 3
    assert len(cluster.nodes) == 6
    hosts = ",".join(f"127.0.0.1:{p.port}" for p in cluster.primaries)
    assert cluster.url == f"redis+cluster://{hosts}"
    for node in cluster.nodes:
        info = node.client().execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        assert "cluster_state:ok" in info
        assert "cluster_known_nodes:6" in info
        assert "cluster_slots_assigned:16384" in info
    primary_ids = {p.node_id for p in cluster.primaries}
    for replica in cluster.replicas:
        assert replica.role == "cluster-replica"
        assert replica.client().info("replication")["master_link_status"] == "up"
        assert replica.bus_port is not None
        line = next(
            entry
            for entry in cluster.primaries[0]  # type: ignore[no-untyped-call]  # execute_command
            .client()
            .execute_command("CLUSTER", "NODES")
            .split("\n")
            if entry.startswith(str(replica.node_id))
        )
        assert line.split()[3] in primary_ids


def test_cluster_client_across_slots(cluster: ClusterSetup) -> None:
    client = cluster_client(cluster)
    try:
        keys = [f"key:{i}" for i in range(60)]
        for key in keys:
            client.set(key, key.upper())
        assert all(client.get(key) == key.upper() for key in keys)
        owners = {cluster.primary_for_key(key).port for key in keys}
        assert owners == {p.port for p in cluster.primaries}  # spread over all 3 shards
        for key in keys[:10]:  # the reported owner really holds the key
            assert cluster.primary_for_key(key).client().get(key) == key.upper()
    finally:
        client.close()


def test_cluster_failover(cluster: ClusterSetup) -> None:
    client = cluster_client(cluster)
    client.set("survivor", "before")
    client.close()
    old = cluster.primary_for_key("survivor")
    assert old.client().wait(1, 5000) == 1  # the replica has it: it must survive the kill
    former_replicas = list(cluster.replicas)
    cluster.kill_primary(old)
    assert not pid_alive(old.pid)
    new = cluster.wait_for_failover(old)
    assert new in former_replicas and new.role == "cluster-primary"
    assert new in cluster.primaries and old not in cluster.primaries
    assert cluster.primary_for_key("survivor") is new
    assert new.client().info("replication")["role"] == "master"
    client = cluster_client(cluster)
    try:
        assert client.get("survivor") == "before"  # it was replicated before the kill
        client.set("survivor", "after")
        assert client.get("survivor") == "after"
        client.set("elsewhere", "ok")
    finally:
        client.close()
    with pytest.raises(ValueError, match="not a current primary"):
        cluster.kill_primary(old)


def test_relative_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative data_dir (as `stickless demo` passes) is taken from the caller's cwd."""
    monkeypatch.chdir(tmp_path)
    with start_standalone(aof=True, data_dir=Path("rel/data")) as server:
        assert server.node.client().ping()
    assert (tmp_path / "rel" / "data").is_dir()


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_replicas_apply_writes_as_soon_as_the_setup_returns(topology: str) -> None:
    """A write right after start-up reaches every replica within 150 ms: the setup waits
    until the primary streams to them, not only until their links are up (Redis 7.0 starts
    the stream of a freshly synced replica up to 300 ms later, and a failover right away
    then loses the write)."""
    with (
        start_sentinel(replicas=2, sentinels=1)
        if topology == "sentinel"
        else start_cluster(primaries=1, replicas_per_primary=2)
    ) as setup:
        primary = setup.primary if isinstance(setup, SentinelSetup) else setup.primaries[0]
        writer = primary.client()
        writer.set("fresh", "1")
        sent = time.monotonic()
        for replica in setup.replicas:
            reader = replica.client()
            if topology == "cluster":
                reader.execute_command("READONLY")  # type: ignore[no-untyped-call]
            try:
                while not reader.exists("fresh"):
                    assert time.monotonic() - sent < 0.15, f"replica {replica.port} lags"
                    time.sleep(0.001)
            finally:
                reader.close()
        writer.close()


def test_fencing_that_no_primary_can_meet_is_refused() -> None:
    with pytest.raises(ValueError, match="min_replicas_to_write=2 > replicas=1"):
        start_sentinel(replicas=1, min_replicas_to_write=2)
