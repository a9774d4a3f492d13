"""Over real HTTP: 3 app processes per variant and a load generator.

Every variant is its own server on a free port of 127.0.0.1: gunicorn (3 sync workers) for
Flask and Django, uvicorn (3 workers) for Starlette, the app built by the factories of
bench_apps. The load generator is Debian's ``wrk`` (installed with apt-get when missing and
possible), or else a small asyncio client. It replays a 90 % read / 10 % write mix over many
existing sessions, each variant for a fixed duration, variants interleaved round by round.
Every process is started in its own session and stopped by its PID (process group) in a
``finally``; on Linux they also die with this process (PR_SET_PDEATHSIG): both by
:mod:`stickless.processes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import bench_apps as apps
import bench_core as core

from stickless import processes

HOST: Final = "127.0.0.1"
HERE: Final = Path(__file__).resolve().parent
WORKERS: Final = 3
CONNECTIONS: Final = 12
WRITE_SHARE: Final = 0.1
READY_TIMEOUT: Final = 60.0
HTTP_FAMILIES: Final = ("flask", "starlette", "django")


@dataclass
class Server:
    variant: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    cookies: list[str]


def _command(variant: core.Variant, port: int) -> list[str]:
    bind = f"{HOST}:{port}"
    if variant.family == "starlette":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench_apps:asgi_app_from_env",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            "--app-dir",
            str(HERE),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    factory = {"flask": "flask_app_from_env", "django": "django_app_from_env"}[variant.family]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--bind",
        bind,
        "--chdir",
        str(HERE),
        "--log-level",
        "warning",
        "--graceful-timeout",
        "2",
        f"bench_apps:{factory}()",
    ]


def _start(variant: core.Variant, url: str, run_id: str, logs: Path) -> Server:
    port = processes.free_ports(1, HOST)[0]
    prefix = core.prefix_for(run_id, variant.name)
    if not variant.name.startswith("stickless") and variant.family != "django":
        prefix += ":"
    env = {
        **os.environ,
        "BENCH_VARIANT": variant.name,
        "BENCH_URL": url,
        "BENCH_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    log = logs / f"{variant.name}.log"
    process = processes.spawn(_command(variant, port), log=log, env=env)
    return Server(variant.name, port, process, log, [])


def _request(
    port: int, method: str, path: str, cookie: str | None = None, timeout: float = 10.0
) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Length": "0"} if method == "POST" else {}
        if cookie:
            headers["Cookie"] = cookie
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if server.process.poll() is not None:
            raise core.BenchError(f"{server.variant} exited:\n{processes.log_tail(server.log, 30)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if _request(server.port, "GET", "/untouched", timeout=2)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise core.BenchError(
                f"{server.variant} not ready:\n{processes.log_tail(server.log, 30)}"
            )
        time.sleep(0.2)


def _make_session(server: Server) -> str:
    name = apps.COOKIE_NAMES[server.variant]
    status, headers, body = _request(server.port, "POST", "/setup")
    for key, value in headers:
        if key.lower() == "set-cookie":
            ours, cookie = core._cookie_from(value, name)
            if ours and cookie:
                return f"{name}={cookie}"
    raise core.BenchError(f"{server.variant} /setup: HTTP {status}, no cookie: {body[:200]!r}")


# ----------------------------------------------------------------------- load: wrk
_LUA: Final = """
local cookies = {%(cookies)s}
local write_share = %(write_share)f
local counter = 0
math.randomseed(%(seed)d)
request = function()
  local cookie = cookies[math.random(#cookies)]
  if math.random() < write_share then
    return wrk.format("POST", "/write", {["Cookie"] = cookie}, "")
  end
  return wrk.format("GET", "/read", {["Cookie"] = cookie})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "errors": %%d, "p50_us": %%d, '
    .. '"p90_us": %%d, "p99_us": %%d, "mean_us": %%f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def ensure_wrk(say: Callable[[str], None]) -> str | None:
    """Path of ``wrk``; installs Debian's package with apt-get when missing (as root)."""
    found = shutil.which("wrk")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    say("wrk missing: apt-get install wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]

    def quiet(args: list[str]) -> int:
        out = subprocess.DEVNULL
        return subprocess.call(args, stdout=out, stderr=out, stdin=out, env=env)

    if quiet(install) != 0:  # an old package list: update it once, try again
        quiet(["apt-get", "update", "-q"])
        quiet(install)
    return shutil.which("wrk")


def _wrk(wrk: str, server: Server, seconds: float, script: Path) -> dict[str, Any]:
    args = [
        wrk,
        "-t",
        "1",
        "-c",
        str(CONNECTIONS),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://{HOST}:{server.port}",
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line.removeprefix("BENCH "))
            duration = data["duration_us"] / 1e6
            return {
                "requests": data["requests"],
                "seconds": duration,
                "rps": data["requests"] / duration if duration else 0.0,
                "errors": data["errors"],
                "p50_ms": data["p50_us"] / 1000,
                "p90_ms": data["p90_us"] / 1000,
                "p99_ms": data["p99_us"] / 1000,
            }
    raise core.BenchError(f"wrk gave no result for {server.variant}: {out.stdout}{out.stderr}")


# ------------------------------------------------------------- load: asyncio client
async def _aio_load(port: int, cookies: list[str], seconds: float) -> dict[str, Any]:
    """The fallback load generator: CONNECTIONS HTTP/1.1 clients, reconnecting when the
    server closes (gunicorn's sync workers do after every response)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    rng = random.Random(42)

    async def client() -> None:
        nonlocal errors
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.perf_counter() < deadline:
            cookie = rng.choice(cookies)
            write = rng.random() < WRITE_SHARE
            line = "POST /write" if write else "GET /read"
            raw = (
                f"{line} HTTP/1.1\r\nHost: {HOST}\r\nCookie: {cookie}\r\n"
                f"{'Content-Length: 0' + chr(13) + chr(10) if write else ''}\r\n"
            )
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                assert reader is not None
                writer.write(raw.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length, close = 0, False
                for h in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = h.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "connection" and value.strip().lower() == "close":
                        close = True
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 400:
                    errors += 1
                if close:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "errors": errors,
        "p50_ms": pct(0.50) if latencies else 0.0,
        "p90_ms": pct(0.90) if latencies else 0.0,
        "p99_ms": pct(0.99) if latencies else 0.0,
    }


# ---------------------------------------------------------------------------- run
def http_variants(families: Iterable[str]) -> list[core.Variant]:
    """The variants the HTTP part serves, each once (two Starlette families share the
    cookie session and starsessions), in family order; those whose modules are missing are
    left out."""
    wanted = set(families) & set(HTTP_FAMILIES)
    names = (
        n
        for f in core.FAMILIES
        if f.name in wanted
        for n in (f.base, f.peer, f.stickless)
        if n is not None
    )
    return [v for v in map(core.BY_NAME.__getitem__, dict.fromkeys(names)) if v.available()]


def run(
    url: str,
    run_id: str,
    probe: core.Probe,
    progress: Any,
    *,
    families: Iterable[str],
    seconds: float,
    rounds: int,
    console: Any,
    sessions: int | None = None,
) -> dict[str, Any]:
    variants = http_variants(families)
    wrk = ensure_wrk(lambda m: console.print(f"[yellow]{m}[/yellow]"))
    sessions = sessions or (20 if seconds < 5 else 200)
    steps = len(variants) * (2 + rounds)
    task = progress.add_task("http", total=steps)
    logs = Path(tempfile.mkdtemp(prefix="slbench-http-"))
    servers: dict[str, Server] = {}
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    try:
        for variant in variants:
            progress.update(task, description=f"http: starting {variant.name}")
            servers[variant.name] = _start(variant, url, run_id, logs)
        for variant in variants:
            server = servers[variant.name]
            progress.update(task, description=f"http: {sessions} sessions on {variant.name}")
            _wait_ready(server)
            with ThreadPoolExecutor(4) as pool:
                server.cookies = list(
                    pool.map(lambda _, s=server: _make_session(s), range(sessions))
                )
            progress.advance(task)

        def load(server: Server, duration: float) -> dict[str, Any]:
            if wrk:
                script = logs / f"{server.variant}.lua"
                if not script.exists():
                    cookies = ", ".join(json.dumps(c) for c in server.cookies)
                    script.write_text(
                        _LUA % {"cookies": cookies, "write_share": WRITE_SHARE, "seed": 42}
                    )
                return _wrk(wrk, server, duration, script)
            return asyncio.run(_aio_load(server.port, server.cookies, duration))

        for variant in variants:  # warm-up: every worker imported, pools open
            progress.update(task, description=f"http: warming {variant.name}")
            load(servers[variant.name], min(2.0, seconds))
            progress.advance(task)
        groups = [
            [v for v in variants if v.family == name]
            for name in dict.fromkeys(v.family for v in variants)
        ]
        for r in range(rounds):
            for members in groups:
                shift = r % len(members)
                for variant in members[shift:] + members[:shift]:
                    progress.update(
                        task, description=f"http: round {r + 1}/{rounds} {variant.name}"
                    )
                    before = probe.snapshot()
                    result = load(servers[variant.name], seconds)
                    delta = probe.snapshot().minus(before)
                    served = result["requests"]
                    cpu = probe.net_cpu(delta, result["seconds"])
                    result["cpu_us"] = cpu * 1e6 / served if served else None
                    result["round_trips"] = (delta.reads - 1) / served if served else None
                    runs[variant.name].append(result)
                    progress.advance(task)
                    server = servers[variant.name]
                    if server.process.poll() is not None:
                        raise core.BenchError(
                            f"{variant.name} died:\n{processes.log_tail(server.log, 30)}"
                        )
    finally:
        processes.stop([server.process for server in servers.values()])
        shutil.rmtree(logs, ignore_errors=True)
    return {
        "runs": runs,
        "config": {
            "tool": "wrk " + _wrk_version(wrk) if wrk else "asyncio client (wrk unavailable)",
            "workers": WORKERS,
            "servers": "gunicorn sync workers for Flask and Django, uvicorn for Starlette",
            "connections": CONNECTIONS,
            "seconds": seconds,
            "rounds": rounds,
            "sessions": sessions,
            "write_share": WRITE_SHARE,
        },
    }


def _wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).split("\n", 1)[0]
    parts = first.split()
    return parts[1] if len(parts) > 1 else ""
