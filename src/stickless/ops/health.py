"""Health of the servers behind a store URL: every node's role, latency, replication lag.

:func:`check_health` reads the topology from the URL and asks the servers themselves:

* **standalone**: the node (``INFO replication``), and the replicas it reports;
* **sentinel**: every sentinel of the URL (do they agree on the primary? ``SENTINEL
  CKQUORUM``), then the primary and each replica the sentinels know;
* **cluster**: ``CLUSTER INFO`` / ``CLUSTER NODES`` of a seed, then every node.

Each node is PINGed a few times (the median round trip is reported); a replica's lag is its
primary's ``master_repl_offset`` minus its own replication offset, in bytes. Anything wrong
is listed in ``problems`` and makes ``ok`` false (the ``stickless health`` exit code).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stickless.cluster_nodes import parse_cluster_nodes
from stickless.config import SessionConfig
from stickless.ops._nodes import FAILURES, text
from stickless.store import connect

__all__ = ["DEFAULT_MAX_LAG", "HealthReport", "NodeHealth", "check_health"]

DEFAULT_MAX_LAG = 1024 * 1024
"""A replica further behind its primary than this many bytes is reported unhealthy."""

_CLUSTER_SLOTS = 16384


@dataclass(slots=True)
class NodeHealth:
    """One server as seen by the health check."""

    address: str
    role: str
    """``"primary"``, ``"replica"``, ``"sentinel"``, or ``"unknown"`` (unreachable)."""
    ok: bool = True
    latency_ms: float | None = None
    """Median PING round trip from here; None when unreachable."""
    replica_of: str | None = None
    """A replica's primary (``host:port``)."""
    lag_bytes: int | None = None
    """A replica's replication lag behind its primary, bytes."""
    link: str | None = None
    """A replica's link to its primary: ``"up"`` or ``"down"``."""
    slots: int | None = None
    """Cluster primaries: how many hash slots it serves."""
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)


@dataclass(slots=True)
class HealthReport:
    """The result of :func:`check_health`; ``ok`` is false when any problem was found."""

    topology: str
    address: str
    ok: bool
    nodes: list[NodeHealth]
    problems: list[str]
    """Every problem found, each prefixed with the node it concerns."""
    checked_at: datetime


def _median_ping(client: Any, pings: int) -> float:
    times = []
    for _ in range(max(1, pings)):
        start = time.perf_counter()
        client.ping()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def _info(client: Any, section: str) -> dict[str, Any]:
    reply = client.info(section)
    return {text(k): v for k, v in reply.items()} if isinstance(reply, dict) else {}


class _Checker:
    def __init__(self, url: str, config: SessionConfig, pings: int, max_lag: int) -> None:
        self.endpoint = connect.parse_url(url)
        self.config = config
        self.pings = pings
        self.max_lag = max_lag
        self.nodes: list[NodeHealth] = []
        self._stack = contextlib.ExitStack()

    def close(self) -> None:
        self._stack.close()

    # ---------------------------------------------------------------- clients
    def _keep(self, client: Any) -> Any:
        self._stack.callback(client.close)
        return client

    def data_client(self, host: str, port: int) -> Any:
        return self._keep(connect.node_client(self.endpoint, self.config, redis, host, port))

    def sentinel_client(self, host: str, port: int) -> Any:
        return self._keep(
            redis.Redis(
                host=host,
                port=port,
                socket_timeout=self.config.socket_timeout,
                socket_connect_timeout=self.config.connect_timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
        )

    def probe(self, node: NodeHealth, client: Any) -> dict[str, Any] | None:
        """PING ``client`` and read its ``INFO replication``; None (and a problem noted)
        when it cannot be reached."""
        try:
            node.latency_ms = _median_ping(client, self.pings)
            return _info(client, "replication")
        except FAILURES as exc:
            node.problem(f"unreachable: {type(exc).__name__}: {exc}")
            return None

    def lag(self, replica: NodeHealth, primary_offset: int | None, own: Any) -> None:
        if primary_offset is None or own is None:
            return
        replica.lag_bytes = max(0, primary_offset - int(own))
        if replica.lag_bytes > self.max_lag:
            replica.problem(f"replication lag {replica.lag_bytes} bytes > {self.max_lag}")

    def replica_link(self, node: NodeHealth, info: dict[str, Any]) -> None:
        node.replica_of = f"{info.get('master_host')}:{info.get('master_port')}"
        node.link = str(info.get("master_link_status", "down"))
        if node.link != "up":
            node.problem(f"replication link to {node.replica_of} is {node.link}")

    # ------------------------------------------------------------- standalone
    def standalone(self) -> None:
        endpoint = self.endpoint
        client = self._keep(connect.create_client(endpoint, self.config, redis))
        node = NodeHealth(endpoint.address.split("://", 1)[-1], "unknown")
        self.nodes.append(node)
        info = self.probe(node, client)
        if info is None:
            return
        if info.get("role") != "master":
            node.role = "replica"
            self.replica_link(node, info)
            node.problem("the URL names a replica (read-only): sessions cannot be saved")
            return
        node.role = "primary"
        offset = int(info.get("master_repl_offset", 0))
        for name in sorted(k for k in info if k.startswith("slave") and k[5:].isdigit()):
            entry = info[name]
            if not isinstance(entry, dict):
                continue
            replica = NodeHealth(f"{entry.get('ip')}:{entry.get('port')}", "replica")
            replica.replica_of = node.address
            state = str(entry.get("state", "?"))
            replica.link = "up" if state == "online" else "down"
            if state != "online":
                replica.problem(f"replica state is {state!r} (primary's view)")
            self.lag(replica, offset, entry.get("offset"))
            # Latency only: the primary's view above is the authority (a replica may well
            # be unreachable from here, e.g. behind NAT, and still be healthy).
            with contextlib.suppress(*FAILURES):
                target = self.data_client(str(entry.get("ip")), int(entry.get("port", 0)))
                replica.latency_ms = _median_ping(target, self.pings)
            self.nodes.append(replica)

    # --------------------------------------------------------------- sentinel
    def sentinel(self) -> list[str]:
        service = str(self.endpoint.service)
        general: list[str] = []
        views: dict[str, tuple[str, int] | None] = {}
        reachable: list[Any] = []
        for host, port in self.endpoint.hosts:
            node = NodeHealth(f"{host}:{port}", "sentinel")
            self.nodes.append(node)
            client = self.sentinel_client(host, port)
            try:
                node.latency_ms = _median_ping(client, self.pings)
                addr = client.sentinel_get_master_addr_by_name(service)
            except FAILURES as exc:
                node.problem(f"unreachable: {type(exc).__name__}: {exc}")
                continue
            reachable.append((node, client))
            views[node.address] = (str(addr[0]), int(addr[1])) if addr else None
            if not addr:
                node.problem(f"does not monitor service {service!r}")
        if not reachable:
            general.append("no sentinel reachable")
            return general
        known = {v for v in views.values() if v is not None}
        if len(known) > 1:
            general.append(f"sentinels disagree on the primary: {sorted(known)}")
        node, client = next(((n, c) for n, c in reachable if views.get(n.address)), reachable[0])
        try:
            master = client.sentinel_master(service)
            replicas = client.sentinel_slaves(service)
        except FAILURES as exc:
            node.problem(f"SENTINEL MASTER {service} failed: {exc}")
            return general
        try:
            client.sentinel_ckquorum(service)
        except redis.ResponseError as exc:
            general.append(f"sentinel quorum: {exc}")
        except FAILURES as exc:
            node.problem(f"SENTINEL CKQUORUM failed: {exc}")
        primary = NodeHealth(f"{master['ip']}:{master['port']}", "primary")
        self.nodes.append(primary)
        if master.get("is_sdown") or master.get("is_odown"):
            primary.problem("sentinels consider the primary down")
        info = self.probe(primary, self.data_client(str(master["ip"]), int(master["port"])))
        offset: int | None = None
        if info is not None:
            if info.get("role") != "master":
                primary.problem(f"sentinel's primary reports role {info.get('role')!r}")
            offset = int(info.get("master_repl_offset", 0))
        for entry in replicas:
            replica = NodeHealth(f"{entry['ip']}:{entry['port']}", "replica")
            self.nodes.append(replica)
            if entry.get("is_sdown") or entry.get("is_odown"):
                replica.problem("sentinels consider this replica down")
            rinfo = self.probe(replica, self.data_client(str(entry["ip"]), int(entry["port"])))
            if rinfo is None:
                continue
            if rinfo.get("role") == "master":
                replica.role = "primary"
                replica.problem("sentinel lists it as a replica but it is a primary")
                continue
            self.replica_link(replica, rinfo)
            self.lag(replica, offset, rinfo.get("slave_repl_offset"))
        return general

    # ---------------------------------------------------------------- cluster
    def cluster(self) -> list[str]:
        general: list[str] = []
        listing: str | None = None
        info_text = ""
        for host, port in self.endpoint.hosts:
            client = self.data_client(host, port)
            try:
                listing = text(client.execute_command("CLUSTER", "NODES"))
                info_text = text(client.execute_command("CLUSTER", "INFO"))
                break
            except FAILURES as exc:
                general.append(f"seed {host}:{port} unreachable: {exc}")
        if listing is None:
            general.append("no cluster node reachable")
            return general
        general.clear()  # an unreachable seed is fine when another one answered
        cinfo = dict(line.split(":", 1) for line in info_text.splitlines() if ":" in line)
        state = cinfo.get("cluster_state", "?").strip()
        if state != "ok":
            general.append(f"cluster_state is {state!r}")
        slots_ok = int(cinfo.get("cluster_slots_ok", "0").strip() or 0)
        if slots_ok != _CLUSTER_SLOTS:
            general.append(f"only {slots_ok} of {_CLUSTER_SLOTS} slots are served")
        entries = list(parse_cluster_nodes(listing))
        by_id: dict[str, NodeHealth] = {}
        offsets: dict[str, int] = {}
        pending: list[tuple[NodeHealth, str, dict[str, Any]]] = []
        for entry in sorted(entries, key=lambda e: (e.replica, e.address)):
            node = NodeHealth(entry.address, "replica" if entry.replica else "primary")
            by_id[entry.id] = node
            self.nodes.append(node)
            if not entry.replica:
                node.slots = entry.slots
            if entry.failed:
                node.problem(f"flagged {','.join(sorted(entry.flags))} by the cluster")
                continue
            host, _, port_text = entry.address.rpartition(":")
            info = self.probe(node, self.data_client(host, int(port_text)))
            if info is None:
                continue
            if entry.replica:
                pending.append((node, entry.primary, info))
            else:
                offsets[entry.id] = int(info.get("master_repl_offset", 0))
        for node, primary_id, info in pending:
            self.replica_link(node, info)
            primary = by_id.get(primary_id)
            if primary is not None:
                node.replica_of = primary.address
            self.lag(node, offsets.get(primary_id), info.get("slave_repl_offset"))
        return general


def check_health(
    url: str,
    config: SessionConfig | None = None,
    *,
    pings: int = 3,
    max_lag: int = DEFAULT_MAX_LAG,
) -> HealthReport:
    """Check every server behind ``url``; never raises for an unreachable server (it is
    reported). ``pings``: PINGs per node (median reported). ``max_lag``: bytes of
    replication lag beyond which a replica counts as unhealthy."""
    checker = _Checker(url, config or SessionConfig(), pings, max_lag)
    checks: dict[str, Callable[[], list[str] | None]] = {
        "standalone": checker.standalone,
        "sentinel": checker.sentinel,
        "cluster": checker.cluster,
    }
    try:
        general = checks[checker.endpoint.kind]() or []
    finally:
        checker.close()
    problems = list(general)
    for node in checker.nodes:
        problems += [f"{node.role} {node.address}: {p}" for p in node.problems]
    return HealthReport(
        topology=checker.endpoint.kind,
        address=checker.endpoint.address,
        ok=not problems,
        nodes=checker.nodes,
        problems=problems,
        checked_at=datetime.now(UTC),
    )
