"""The scenarios: which topology, which fault, for which durabilities.

Each ``inject`` runs in a worker thread while the load goes on: it records every fault with
:meth:`Timeline.fault` (the moment just before the signal or command) and what follows with
:meth:`Timeline.note`, and returns once the fault is over (the failover happened, the
server is back, the stalled node runs again). Every wait in it is bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from faults.topology import Topology, ask, info, wait_until
from stickless.embedded import ClusterSetup, Node, SentinelSetup, Standalone

FAILOVER_TIMEOUT: Final = 30.0
PAUSE_AFTER_PROMOTION: Final = 1.0
"""A SIGSTOPped old primary is resumed this long after its replacement was promoted."""
OUTAGE_SECONDS: Final = 10.0
CLIENT_PAUSE_MS: Final = 5000


@dataclass
class Timeline:
    """Events of one run, in ``time.monotonic()`` seconds."""

    faults: list[tuple[float, str]] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fault(self, label: str) -> None:
        with self._lock:
            self.faults.append((time.monotonic(), label))

    def note(self, label: str) -> None:
        with self._lock:
            self.notes.append((time.monotonic(), label))


Inject = Callable[[Topology, Timeline], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: str
    title: str
    inject: Inject
    durabilities: tuple[str, ...] = ("none", "replicated")
    short: bool = False
    """Part of the short subset (CI)."""
    sentinel_replicas: int = 2


# ----------------------------------------------------------------------------- sentinel
def _sentinel(topo: Topology) -> SentinelSetup:
    assert isinstance(topo.setup, SentinelSetup)
    return topo.setup


def sentinel_kill9(topo: Topology, t: Timeline) -> None:
    setup = _sentinel(topo)
    old = setup.primary
    t.fault(f"kill -9 primary :{old.port}")
    setup.kill_primary()
    new = setup.wait_for_failover(old, FAILOVER_TIMEOUT)
    t.note(f"promoted :{new.port}")


def sentinel_failover(topo: Topology, t: Timeline) -> None:
    setup = _sentinel(topo)
    t.fault(f"SENTINEL FAILOVER (primary :{setup.primary.port})")
    old = setup.request_failover()
    new = setup.wait_for_failover(old, FAILOVER_TIMEOUT)
    t.note(f"promoted :{new.port}")


def sentinel_sigstop(topo: Topology, t: Timeline) -> None:
    setup = _sentinel(topo)
    old = setup.primary
    t.fault(f"SIGSTOP primary :{old.port}")
    topo.pause(old)
    try:
        new = setup.wait_for_failover(old, FAILOVER_TIMEOUT)
        t.note(f"promoted :{new.port}")
        time.sleep(PAUSE_AFTER_PROMOTION)
    finally:
        t.note(f"SIGCONT old primary :{old.port}")
        topo.resume(old)


def sentinel_double(topo: Topology, t: Timeline) -> None:
    """kill -9 of the primary, and of its successor as soon as that one has its replicas."""
    setup = _sentinel(topo)
    for round_ in (1, 2):
        old = setup.primary
        t.fault(f"kill -9 primary :{old.port} ({round_} of 2)")
        setup.kill_primary()
        new = setup.wait_for_failover(old, FAILOVER_TIMEOUT)
        t.note(f"promoted :{new.port}")
        if round_ == 1:
            wanted = len([r for r in setup.replicas if r.alive])

            def replicated(new: Node = new, wanted: int = wanted) -> bool:
                return int(info(new).get("connected_slaves", 0)) >= wanted

            wait_until(
                replicated,
                f"the new primary :{new.port} to have its {wanted} replicas",
                FAILOVER_TIMEOUT,
            )
            t.note(f":{new.port} has {wanted} replicas")
            time.sleep(1.0)


# ------------------------------------------------------------------------------ cluster
def _cluster(topo: Topology) -> ClusterSetup:
    assert isinstance(topo.setup, ClusterSetup)
    return topo.setup


def cluster_kill9(topo: Topology, t: Timeline) -> None:
    cluster = _cluster(topo)
    old = cluster.primaries[0]
    t.fault(f"kill -9 primary :{old.port}")
    cluster.kill_primary(old)
    new = cluster.wait_for_failover(old, FAILOVER_TIMEOUT)
    t.note(f"promoted :{new.port}")


def cluster_failover(topo: Topology, t: Timeline) -> None:
    cluster = _cluster(topo)
    old = cluster.primaries[0]
    replica = cluster.replicas_of(old)[0]
    t.fault(f"CLUSTER FAILOVER on replica :{replica.port} of :{old.port}")
    cluster.request_failover(replica)
    new = cluster.wait_for_failover(old, FAILOVER_TIMEOUT)
    t.note(f"promoted :{new.port}")


def cluster_sigstop(topo: Topology, t: Timeline) -> None:
    cluster = _cluster(topo)
    old = cluster.primaries[0]
    candidates = cluster.replicas_of(old)
    t.fault(f"SIGSTOP primary :{old.port}")
    topo.pause(old)
    try:
        new = wait_until(
            lambda: next((r for r in candidates if topo.is_primary(r)), None),
            f"a replica of :{old.port} to take over",
            FAILOVER_TIMEOUT,
        )
        t.note(f"promoted :{new.port}")
        time.sleep(PAUSE_AFTER_PROMOTION)
    finally:
        t.note(f"SIGCONT old primary :{old.port}")
        topo.resume(old)


# --------------------------------------------------------------------------- standalone
def _standalone(topo: Topology) -> Standalone:
    assert isinstance(topo.setup, Standalone)
    return topo.setup


def standalone_restart(topo: Topology, t: Timeline) -> None:
    """A maintenance restart: SIGTERM (the server fsyncs its append-only file), start again."""
    node = _standalone(topo).node
    t.fault(f"SIGTERM + restart :{node.port}")
    node.stop()
    node.restart()
    t.note("restarted (AOF loaded)")


def standalone_kill9(topo: Topology, t: Timeline) -> None:
    node = _standalone(topo).node
    t.fault(f"kill -9 + restart :{node.port}")
    node.kill()
    node.restart()
    t.note("restarted (AOF loaded)")


def standalone_outage(topo: Topology, t: Timeline) -> None:
    node = _standalone(topo).node
    t.fault(f"kill -9, {OUTAGE_SECONDS:g} s down, restart :{node.port}")
    node.kill()
    time.sleep(OUTAGE_SECONDS)
    node.restart()
    t.note("restarted (AOF loaded)")


def standalone_client_pause(topo: Topology, t: Timeline) -> None:
    node = _standalone(topo).node
    t.fault(f"CLIENT PAUSE {CLIENT_PAUSE_MS} ALL")
    ask(node, "CLIENT", "PAUSE", CLIENT_PAUSE_MS, "ALL")
    time.sleep(CLIENT_PAUSE_MS / 1000)
    t.note("pause over")


SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario(
            "sentinel-kill9",
            "sentinel",
            "Sentinel: kill -9 of the primary",
            sentinel_kill9,
            short=True,
        ),
        Scenario("sentinel-failover", "sentinel", "Sentinel: SENTINEL FAILOVER", sentinel_failover),
        Scenario(
            "sentinel-sigstop",
            "sentinel",
            "Sentinel: SIGSTOP of the primary, SIGCONT after the failover",
            sentinel_sigstop,
        ),
        Scenario(
            "sentinel-double",
            "sentinel",
            "Sentinel: two failovers in a row (kill -9, then kill -9 of the new primary)",
            sentinel_double,
            sentinel_replicas=3,
        ),
        Scenario(
            "cluster-kill9", "cluster", "Cluster: kill -9 of a primary", cluster_kill9, short=True
        ),
        Scenario(
            "cluster-failover",
            "cluster",
            "Cluster: CLUSTER FAILOVER on a replica",
            cluster_failover,
        ),
        Scenario(
            "cluster-sigstop",
            "cluster",
            "Cluster: SIGSTOP of a primary, SIGCONT after the failover",
            cluster_sigstop,
        ),
        Scenario(
            "standalone-restart",
            "standalone",
            "Standalone + AOF: SIGTERM and restart",
            standalone_restart,
            ("none",),
        ),
        Scenario(
            "standalone-kill9",
            "standalone",
            "Standalone + AOF: kill -9 and restart",
            standalone_kill9,
            ("none",),
        ),
        Scenario(
            "standalone-pause",
            "standalone",
            f"Standalone: CLIENT PAUSE {CLIENT_PAUSE_MS} ms",
            standalone_client_pause,
            ("none",),
        ),
        Scenario(
            "standalone-outage",
            "standalone",
            f"Standalone + AOF: {OUTAGE_SECONDS:g} s outage (kill -9, restart)",
            standalone_outage,
            ("none",),
        ),
    )
}
