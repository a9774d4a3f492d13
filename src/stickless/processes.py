"""Child processes started by stickless (embedded servers, the demo's app servers) and by its
test, fault and benchmark harnesses: free ports, environments, spawning, stopping by PID, in
one place.

Every child is started in a session of its own (the terminal's Ctrl-C is the parent's to
handle; its process group is the child's PID, so its own children, such as gunicorn's
workers, are signalled with it) and, on Linux, with ``PR_SET_PDEATHSIG``: it gets SIGKILL if
its parent dies without cleaning up. ``PR_SET_PDEATHSIG`` fires when the *thread* that forked
the child exits, so the children are forked from one long-lived spawner thread. Children
still running when the interpreter exits are killed (by their PID's group).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1

_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()
_running: dict[int, subprocess.Popen[bytes]] = {}
_running_lock = threading.Lock()


_RECENT_PORTS = 1024
"""How many ports :func:`free_ports` remembers having handed out (never handed out again)."""
_handed_out: collections.deque[int] = collections.deque(maxlen=_RECENT_PORTS)
_handed_out_lock = threading.Lock()


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago, none of them
    handed out by an earlier call of this process (the last :data:`_RECENT_PORTS`): the
    kernel may offer a port again as soon as its probe socket closes, before the server
    it was picked for has bound it, so servers started one after another, each with a
    port of its own call, could otherwise be given the same one."""
    with _handed_out_lock, contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count + _RECENT_PORTS):
            if len(ports) == count:
                break
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port not in _handed_out:
                ports.append(port)
        if len(ports) < count:
            raise RuntimeError(f"found only {len(ports)} of {count} free ports on {host}")
        _handed_out.extend(ports)
        return ports


def python_environment(
    pythonpath: Iterable[str | Path], variables: Mapping[str, str]
) -> dict[str, str]:
    """The environment of a Python child (an app server): this process's own with
    ``variables`` added, ``pythonpath`` put before whatever ``PYTHONPATH`` is already set,
    and ``PYTHONUNBUFFERED`` on, so that its log shows every line as soon as it is written."""
    entries = [str(entry) for entry in pythonpath]
    if inherited := os.environ.get("PYTHONPATH", ""):
        entries.append(inherited)
    path = os.pathsep.join(entries)
    return {**os.environ, **variables, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def log_tail(log: Path, lines: int) -> str:
    """The last ``lines`` lines of a child's ``log`` (empty when it cannot be read)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function making the child get SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, kill)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(
    args: list[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` (no shell) with stdout and stderr appended to ``log``."""
    global _spawner  # noqa: PLW0603
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stickless-spawn")
        spawner = _spawner

    def popen() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(  # noqa: S603  (fixed argv, no shell)
                args,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no terminal SIGINT; the parent stops it
                preexec_fn=_parent_death_signal(),  # noqa: PLW1509
            )

    process = spawner.submit(popen).result()
    with _running_lock:
        _running[process.pid] = process
    return process


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """``sig`` to the process group ``process`` leads (its own session, so: it and its
    children, nothing else). After the leader exited, only SIGKILL is sent, to a straggler
    (a worker) that may still hold the group."""
    if process.poll() is not None:
        sig = signal.SIGKILL
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def stop(processes: Iterable[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """SIGTERM every process (and its children) at once, SIGKILL whatever still runs after
    ``grace`` seconds, and reap them all. Idempotent."""
    chosen = list(processes)
    for process in chosen:
        if process.poll() is None:
            signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in chosen:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()
        signal_group(process, signal.SIGKILL)  # a child left behind, if any
        with _running_lock:
            _running.pop(process.pid, None)


@atexit.register
def _kill_leftovers() -> None:
    with _running_lock:
        leftovers = list(_running.values())
    for process in leftovers:
        if process.poll() is None:  # still running: its PID (and group) are still its own
            signal_group(process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(2)


def _forget_after_fork() -> None:
    """A forked child has no spawner thread of its own, and its parent's children are not
    its to kill."""
    global _spawner  # noqa: PLW0603
    _spawner = None
    _running.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
