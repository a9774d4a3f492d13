"""The Valkey topologies of the suite (real ``valkey-server`` processes from
:mod:`stickless.embedded`), and what the suite needs to know about them while they fail:
who is primary now, and when the whole topology has settled again.

* ``standalone``: one server with the append-only file on (``appendfsync everysec``) in a
  directory of its own, on a fixed port so that it can be restarted in place.
* ``sentinel``: a primary, 2 replicas (3 for the double failover), 3 sentinels with
  ``down-after-milliseconds`` 1000 and ``failover-timeout`` 3000; the data nodes fence with
  ``min-replicas-to-write 1`` (embedded's default).
* ``cluster``: 3 primaries with 2 replicas each, ``cluster-node-timeout`` 1000.

Every helper polls with short-lived connections and a bounded deadline; a paused (SIGSTOP)
node is never waited on.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

from stickless.embedded import (
    ClusterSetup,
    Node,
    SentinelSetup,
    Standalone,
    start_cluster,
    start_sentinel,
    start_standalone,
)

DOWN_AFTER_MS: Final = 1000
FAILOVER_TIMEOUT_MS: Final = 3000
SETTLE_TIMEOUT: Final = 30.0
_POLL: Final = 0.1


def ask(node: Node, *args: str | int, timeout: float = 1.0) -> Any:
    """One command on ``node`` over a short-lived connection (``timeout`` seconds)."""
    client = node.client(timeout=timeout)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def info(node: Node, section: str = "replication") -> dict[str, str]:
    """``INFO section`` of ``node`` as ``{field: text}``."""
    raw = ask(node, "INFO", section)
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#")


def wait_until(check: Callable[[], Any], what: str, timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy (Redis / socket errors count as
    "not yet"); RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = check()
        except (redis.RedisError, OSError) as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(_POLL)


@dataclass
class Topology:
    """A running topology; ``paused`` holds the nodes currently stopped with SIGSTOP."""

    kind: str
    setup: Standalone | SentinelSetup | ClusterSetup
    paused: set[int] = field(default_factory=set)
    data_dir: Path | None = None

    @property
    def url(self) -> str:
        return self.setup.url

    @property
    def nodes(self) -> list[Node]:
        return self.setup.nodes

    def usable(self, node: Node) -> bool:
        """Alive and not paused."""
        return node.alive and node.pid not in self.paused

    def pause(self, node: Node) -> None:
        self.paused.add(node.pid)
        node.pause()

    def resume(self, node: Node) -> None:
        node.resume()
        self.paused.discard(node.pid)

    def resume_all(self) -> None:
        for node in self.nodes:
            if node.pid in self.paused:
                self.resume(node)

    def stop(self) -> None:
        """Stop every process (resumed first: a stopped process ignores SIGTERM)."""
        self.resume_all()
        try:
            self.setup.stop(grace=3)
        finally:
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- who is primary -----------------------------------------------------------------------
    def sentinel_primary(self) -> tuple[str, int] | None:
        """The primary a majority of the sentinels name (None without a majority)."""
        setup = self.setup
        assert isinstance(setup, SentinelSetup)
        votes: Counter[tuple[str, int]] = Counter()
        for sentinel in setup.sentinels:
            if not self.usable(sentinel):
                continue
            with contextlib.suppress(redis.RedisError, OSError):
                reply = ask(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", setup.service_name)
                if reply:
                    host, port = reply[0], reply[1]
                    host = host.decode() if isinstance(host, bytes) else str(host)
                    votes[host, int(port)] += 1
        if not votes:
            return None
        address, count = votes.most_common(1)[0]
        return address if count >= setup.quorum else None

    def node_at(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def is_primary(self, node: Node) -> bool:
        return self.usable(node) and info(node).get("role") == "master"

    def failovers(self) -> list[str]:
        """The failovers the servers' own logs report, one line each: the
        ``+switch-master`` lines of the sentinel that logged most, or each cluster node's
        ``Failover election won``."""
        if isinstance(self.setup, SentinelSetup):
            per_sentinel = [_lines(n.log_path, "+switch-master") for n in self.setup.sentinels]
            return max(per_sentinel, key=len, default=[])
        if isinstance(self.setup, ClusterSetup):
            return [
                f":{n.port} {line}"
                for n in self.nodes
                for line in _lines(n.log_path, "Failover election won")
            ]
        return []

    # -- settling -------------------------------------------------------------------------------
    def settle(self, timeout: float = SETTLE_TIMEOUT) -> str:
        """Wait until the topology is whole again (no paused node is waited for) and return
        one line describing it; RuntimeError after ``timeout`` seconds."""
        if isinstance(self.setup, Standalone):
            node = self.setup.node
            wait_until(lambda: ask(node, "PING"), "the server to answer", timeout)
            return f"standalone :{node.port}"
        if isinstance(self.setup, SentinelSetup):
            return str(wait_until(self._sentinel_settled, "Sentinel to settle", timeout))
        return str(wait_until(self._cluster_settled, "the cluster to settle", timeout))

    def _sentinel_settled(self) -> str | None:
        setup = self.setup
        assert isinstance(setup, SentinelSetup)
        named = self.sentinel_primary()
        if named is None:
            return None
        primary = self.node_at(named[1])
        if not self.is_primary(primary):
            return None
        replicas = [n for n in setup.nodes if n.role != "sentinel" and n is not primary]
        following = 0
        for node in replicas:
            if not self.usable(node):
                continue
            state = info(node)
            if state.get("role") != "slave" or state.get("master_port") != str(primary.port):
                return None
            if state.get("master_link_status") != "up":
                return None
            following += 1
        return f"primary :{primary.port} with {following} replica(s) in sync"

    def _cluster_settled(self) -> str | None:
        live = [n for n in self.nodes if self.usable(n)]
        primaries = 0
        for node in live:
            cluster = str(ask(node, "CLUSTER", "INFO"))
            if "cluster_state:ok" not in cluster:
                return None
            state = info(node)
            if state.get("role") == "master":
                primaries += 1
            elif state.get("master_link_status") != "up":
                return None
        return f"cluster ok: {primaries} primaries, {len(live) - primaries} replicas in sync"


def _lines(path: Path, needle: str) -> list[str]:
    """The lines of the log ``path`` containing ``needle`` (log prefix pid:role dropped)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(" ", 1)[-1].strip() for line in text.splitlines() if needle in line]


def start_topology(kind: str, *, sentinel_replicas: int = 2) -> Topology:
    """Start ``kind`` (``standalone``, ``sentinel`` or ``cluster``) and wait until usable."""
    if kind == "standalone":
        data_dir = Path(tempfile.mkdtemp(prefix="stickless-faults-aof-"))
        try:
            return Topology(kind, start_standalone(aof=True, data_dir=data_dir), data_dir=data_dir)
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
    if kind == "sentinel":
        setup = start_sentinel(
            replicas=sentinel_replicas,
            down_after_ms=DOWN_AFTER_MS,
            failover_timeout_ms=FAILOVER_TIMEOUT_MS,
        )
        return Topology(kind, setup)
    if kind == "cluster":
        return Topology(kind, start_cluster(replicas_per_primary=2, node_timeout_ms=DOWN_AFTER_MS))
    raise ValueError(f"unknown topology {kind!r}")
