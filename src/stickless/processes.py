"""Child processes started by stickless (embedded servers, the demo's app servers) and by its
test, fault and benchmark harnesses: free ports, spawning, stopping by PID, in one place.

Every child is started in a session of its own (the terminal's Ctrl-C is the parent's to
handle) and, on Linux, with ``PR_SET_PDEATHSIG``: it gets SIGKILL if its parent dies without
cleaning up. ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so the
children are forked from one long-lived spawner thread.
"""

from __future__ import annotations

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


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


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

    return spawner.submit(popen).result()


def stop(processes: Iterable[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """SIGTERM every process at once, SIGKILL whatever still runs after ``grace`` seconds,
    and reap them all (by PID: nothing else is signalled)."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


def _forget_after_fork() -> None:
    """A forked child has no spawner thread of its own."""
    global _spawner  # noqa: PLW0603
    _spawner = None


os.register_at_fork(after_in_child=_forget_after_fork)
