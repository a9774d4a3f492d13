"""The app server processes of a scenario: uvicorn for the ASGI app, gunicorn for Flask and
Django (one worker, threads), each in its own process group on a free port of 127.0.0.1.

Every process is stopped by its PID (its process group, which holds gunicorn's worker too):
SIGTERM, then SIGKILL after a grace period; an ``atexit`` handler and, on Linux,
``PR_SET_PDEATHSIG`` make sure none outlives the suite.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from stickless import processes

HOST: Final = "127.0.0.1"
REPO: Final = Path(__file__).resolve().parents[1]
KINDS: Final = ("asgi", "flask", "django")
READY_TIMEOUT: Final = 40.0
STOP_GRACE: Final = 3.0
_PORT_ATTEMPTS: Final = 3


@dataclass
class App:
    """One app server process."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        return processes.log_tail(self.log, lines)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds; reaped. Idempotent."""
        processes.stop([self.process], grace)


def command(kind: str, port: int) -> list[str]:
    """The command line of one app server of ``kind`` on ``port``."""
    bind = f"{HOST}:{port}"
    if kind == "asgi":
        return [
            *(sys.executable, "-m", "uvicorn", "faults.apps.asgi_app:app"),
            *("--host", HOST, "--port", str(port), "--log-level", "warning"),
            *("--no-access-log", "--timeout-keep-alive", "120", "--timeout-graceful-shutdown", "2"),
        ]
    module = {
        "flask": "faults.apps.flask_app:app",
        "django": "faults.apps.django_app.wsgi:application",
    }
    if kind not in module:
        raise ValueError(f"unknown app kind {kind!r}: choose from {', '.join(KINDS)}")
    return [
        *(sys.executable, "-m", "gunicorn", module[kind], "--bind", bind),
        *("--workers", "1", "--worker-class", "gthread", "--threads", "16"),
        *("--keep-alive", "120", "--timeout", "60", "--graceful-timeout", "2"),
        *("--log-level", "warning"),
    ]


def _environment(store_url: str, durability: str, prefix: str, min_replicas: int) -> dict[str, str]:
    variables = {
        "STICKLESS_URL": store_url,
        "FAULTS_DURABILITY": durability,
        "FAULTS_PREFIX": prefix,
        "FAULTS_MIN_REPLICAS": str(min_replicas),
        "DJANGO_SETTINGS_MODULE": "faults.apps.django_app.settings",
    }
    return processes.python_environment([REPO, REPO / "src"], variables)


def _spawn(kind: str, env: dict[str, str], log_dir: Path, index: int) -> App:
    port = processes.free_ports(1, HOST)[0]
    log = log_dir / f"app{index}-{kind}.log"
    process = processes.spawn(command(kind, port), log=log, cwd=REPO, env=env)
    return App(kind, port, process, log)


def _healthy(app: App) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{app.port}/health", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def start_apps(
    kinds: Sequence[str],
    *,
    store_url: str,
    durability: str,
    prefix: str,
    log_dir: Path,
    min_replicas: int = 1,
) -> list[App]:
    """Start one app server per entry of ``kinds`` (all launched, then awaited) and return
    them once each answers ``/health``. RuntimeError (with the end of its log) otherwise;
    whatever was started is stopped first."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = _environment(store_url, durability, prefix, min_replicas)
    apps: list[App] = []
    try:
        apps = [_spawn(kind, env, log_dir, i) for i, kind in enumerate(kinds)]
        attempts = [1] * len(apps)
        deadline = time.monotonic() + READY_TIMEOUT
        pending = set(range(len(apps)))
        while pending:
            for i in sorted(pending):
                app = apps[i]
                if _healthy(app):
                    pending.discard(i)
                elif app.process.poll() is not None:
                    taken = "address already in use" in app.log_tail().lower()
                    if not taken or attempts[i] >= _PORT_ATTEMPTS:
                        raise RuntimeError(f"{app.name} exited during start-up:\n{app.log_tail()}")
                    app.stop()
                    apps[i] = _spawn(app.kind, env, log_dir, i)
                    attempts[i] += 1
            if pending and time.monotonic() > deadline:
                late = ", ".join(apps[i].name for i in sorted(pending))
                raise RuntimeError(f"{late} not ready within {READY_TIMEOUT:g} s")
            if pending:
                time.sleep(0.1)
    except BaseException:
        stop_apps(apps)
        raise
    return apps


def stop_apps(apps: Sequence[App]) -> None:
    """Stop every app (SIGTERM to all at once, then SIGKILL what is left), by PID."""
    for app in apps:
        processes.signal_group(app.process, signal.SIGTERM)
    for app in apps:
        app.stop()
