"""Starts what the demo needs: a Valkey topology and three demo app servers.

::

    with launch("standalone", data_dir=Path(".stickless/demo-data")) as demo:
        for server in demo.servers:
            print(server.name, server.url)

Valkey comes from :mod:`stickless.embedded` (real ``valkey-server`` processes on 127.0.0.1).
The app servers are ``python -m uvicorn stickless.demo.app:app`` subprocesses, each in its
own process group (a Ctrl-C in the terminal reaches only the demo, which then stops them in
order), killed with the demo on Linux even if the demo itself is SIGKILLed
(``PR_SET_PDEATHSIG``). Everything is stopped by PID; :meth:`Demo.write_state` records those
PIDs in a JSON file so that a test (or a person) can check they are gone afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

import httpx

from stickless import processes
from stickless.demo import app as demo_app
from stickless.embedded import (
    ClusterSetup,
    SentinelSetup,
    Standalone,
    start_cluster,
    start_sentinel,
    start_standalone,
)

Topology = Literal["standalone", "sentinel", "cluster"]
TOPOLOGIES: Final[tuple[Topology, ...]] = ("standalone", "sentinel", "cluster")
Valkey = Standalone | SentinelSetup | ClusterSetup

HOST: Final = "127.0.0.1"
SERVER_COUNT: Final = 3
READY_TIMEOUT: Final = 30.0
"""Seconds the app servers have to answer ``/healthz``."""
STOP_GRACE: Final = 5.0
DOWN_AFTER_MS: Final = 1000
"""Sentinel ``down-after-milliseconds`` / cluster ``cluster-node-timeout``: quick failover."""
_PORT_ATTEMPTS: Final = 3


class DemoError(RuntimeError):
    """The demo could not start (the message says why)."""


# ------------------------------------------------------------------------------- valkey
def start_valkey(topology: Topology, data_dir: Path | None = None) -> Valkey:
    """Start the embedded Valkey ``topology``.

    ``standalone``: one server, with the append-only file on when ``data_dir`` is given (the
    data lives there and survives restarts), else no persistence in a temporary directory.
    ``sentinel``: a primary, 2 replicas, 3 sentinels (``down-after-milliseconds`` 1000).
    ``cluster``: 3 primaries with 2 replicas each (``cluster-node-timeout`` 1000): two
    replicas so that after a failover the new primary still has one, and saves with
    ``durability="replicated"`` keep being acknowledged.
    """
    if topology == "standalone":
        if data_dir is None:
            return start_standalone()
        return start_standalone(aof=True, data_dir=data_dir)
    if topology == "sentinel":
        return start_sentinel(down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=3000)
    if topology == "cluster":
        return start_cluster(replicas_per_primary=2, node_timeout_ms=DOWN_AFTER_MS)
    raise DemoError(f"unknown topology {topology!r}: choose one of {', '.join(TOPOLOGIES)}")


def describe_valkey(valkey: Valkey) -> str:
    """One line for people: what runs where."""
    if isinstance(valkey, Standalone):
        return f"Valkey standalone on {valkey.node.host}:{valkey.node.port}"
    if isinstance(valkey, SentinelSetup):
        replicas = ", ".join(str(n.port) for n in valkey.replicas)
        sentinels = ", ".join(str(n.port) for n in valkey.sentinels)
        return (
            f"Valkey primary :{valkey.primary.port}, replicas :{replicas}, sentinels :{sentinels}"
        )
    primaries = ", ".join(str(n.port) for n in valkey.primaries)
    return f"Valkey Cluster, primaries :{primaries} (+{len(valkey.replicas)} replicas)"


# ----------------------------------------------------------------------------- servers
@dataclass
class AppServer:
    """One demo app server process."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL (the tour's "a server crashed"), reaped before returning."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.process.wait()

    def log_tail(self, lines: int = 15) -> str:
        return processes.log_tail(self.log_path, lines)


def _server_env(
    store_url: str, name: str, peers: str, durability: str, failover: bool = False
) -> dict[str, str]:
    source_root = Path(__file__).resolve().parents[2]  # the directory holding stickless/
    variables = {
        demo_app.ENV_URL: store_url,
        demo_app.ENV_NAME: name,
        demo_app.ENV_PEERS: peers,
        demo_app.ENV_DURABILITY: durability,
        demo_app.ENV_FAILOVER: "1" if failover else "",
    }
    return processes.python_environment([source_root], variables)


def _spawn_server(name: str, port: int, env: dict[str, str], log_path: Path) -> AppServer:
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "stickless.demo.app:app",
        *("--host", HOST, "--port", str(port)),
        *("--timeout-graceful-shutdown", "2", "--no-server-header"),
    ]
    log_path.write_bytes(b"")
    process = processes.spawn(args, log=log_path, env=env)
    return AppServer(name, port, process, log_path)


def _wait_ready(servers: Sequence[AppServer], timeout: float = READY_TIMEOUT) -> None:
    """Wait until every server answers ``/healthz``; DemoError when one exits or is late."""
    deadline = time.monotonic() + timeout
    pending = list(servers)
    with httpx.Client(timeout=1.0) as client:
        while pending:
            for server in list(pending):
                if not server.alive:
                    raise DemoError(
                        f"{server.name} (port {server.port}) exited during start-up; "
                        f"its log ends:\n{server.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{server.url}/healthz").status_code == 200:
                        pending.remove(server)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise DemoError(f"{names} did not answer within {timeout:g} s")
            if pending:
                time.sleep(0.1)


def stop_servers(servers: Sequence[AppServer], grace: float = STOP_GRACE) -> None:
    """SIGTERM every server at once, SIGKILL whatever still runs after ``grace`` seconds."""
    processes.stop([server.process for server in servers], grace)


def start_servers(
    store_url: str,
    *,
    durability: str,
    log_dir: Path,
    ports: Sequence[int] | None = None,
    failover: bool = False,
) -> list[AppServer]:
    """Start :data:`SERVER_COUNT` demo app servers named ``server-1`` ... on ``ports`` (free
    ones by default; a start that loses a free port to someone else is retried on new ones)
    and wait until all answer. ``failover``: show the "fail over now" button (the demo's
    own Sentinel / Cluster topology only)."""
    if ports is not None and len(ports) != SERVER_COUNT:
        raise DemoError(f"give exactly {SERVER_COUNT} ports, not {len(ports)}")
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        chosen = list(ports) if ports is not None else processes.free_ports(SERVER_COUNT, HOST)
        names = [f"server-{i + 1}" for i in range(SERVER_COUNT)]
        peers = ",".join(f"{n}=http://{HOST}:{p}" for n, p in zip(names, chosen, strict=True))
        servers: list[AppServer] = []
        try:
            for name, port in zip(names, chosen, strict=True):
                env = _server_env(store_url, name, peers, durability, failover)
                servers.append(_spawn_server(name, port, env, log_dir / f"{name}.log"))
            _wait_ready(servers)
            return servers
        except DemoError as exc:
            stop_servers(servers)
            taken = "address already in use" in str(exc).lower()
            if not taken or ports is not None or attempt == _PORT_ATTEMPTS:
                raise
        except BaseException:
            stop_servers(servers)
            raise
    raise AssertionError("unreachable")


# -------------------------------------------------------------------------------- demo
@dataclass
class Demo:
    """A running demo: the Valkey topology and the app servers. Stop it with :meth:`stop`
    (idempotent) or use it as a context manager."""

    topology: Topology
    valkey: Valkey
    servers: list[AppServer]
    durability: str
    log_dir: Path
    state_file: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def store_url(self) -> str:
        return self.valkey.url

    def pids(self) -> dict[str, list[int]]:
        """Every process the demo started, by kind."""
        return {
            "valkey": [node.pid for node in self.valkey.nodes],
            "servers": [server.pid for server in self.servers],
        }

    def write_state(self, path: Path) -> None:
        """Record the URLs and PIDs in ``path`` (JSON), removed again by :meth:`stop`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "pid": os.getpid(),
            "topology": self.topology,
            "store_url": self.store_url,
            "servers": [
                {"name": s.name, "url": s.url, "pid": s.pid, "log": str(s.log_path)}
                for s in self.servers
            ],
            "pids": self.pids(),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(path)
        self.state_file = path

    def stop(self) -> None:
        """Stop the app servers, then Valkey (SIGTERM, SIGKILL after a grace period)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            stop_servers(self.servers)
        finally:
            self.valkey.stop()
            if self.state_file is not None:
                self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def launch(
    topology: Topology,
    *,
    data_dir: Path | None = None,
    ports: Sequence[int] | None = None,
    log_dir: Path | None = None,
) -> Demo:
    """Start Valkey (``topology``) and the three app servers; return the running demo.

    ``data_dir``: where a standalone Valkey keeps its append-only file (None: no
    persistence). ``log_dir``: the app servers' logs (default: a new temporary directory).
    Sentinel and Cluster run with ``durability="replicated"`` (each save waits for a
    replica), so a session survives the failover the tour provokes, and their pages have
    the "fail over now" button (:mod:`stickless.demo.failover`).
    """
    durability = "none" if topology == "standalone" else "replicated"
    logs = log_dir or Path(tempfile.mkdtemp(prefix="stickless-demo-logs-"))
    valkey = start_valkey(topology, data_dir)
    try:
        servers = start_servers(
            valkey.url,
            durability=durability,
            log_dir=logs,
            ports=ports,
            failover=topology != "standalone",
        )
    except BaseException:
        valkey.stop()
        raise
    return Demo(topology, valkey, servers, durability, logs)
