"""Three real gunicorn processes serve tests/apps/flask_app.py behind a simulated
round-robin balancer, sharing one Valkey: no sticky sessions needed, no lost updates,
no resurrection after logout.

Servers are started in parallel once for the module (gthread workers, so requests are
concurrent inside each process too) and killed by PID at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest

from stickless import SessionConfig, SessionStore, processes
from stickless.embedded import Standalone

APPS = Path(__file__).parent / "apps"
SERVERS = 3
START_TIMEOUT = 20.0


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Farm:
    servers: list[Server]
    store: SessionStore


def call(
    server: Server, method: str, path: str, token: str | None = None
) -> tuple[int, dict[str, Any], str | None]:
    """One HTTP request; returns (status, JSON body, token from Set-Cookie or None). No
    cookie jar: the test carries the token itself, as a browser would."""
    request = urllib.request.Request(
        server.base + path, method=method, data=b"" if method == "POST" else None
    )
    if token:
        request.add_header("Cookie", f"session={token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, body, headers = exc.code, exc.read(), exc.headers
    issued = None
    for header in headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        if name == "session":
            issued = rest.split(";", 1)[0]
    return status, json.loads(body) if body.startswith(b"{") else {}, issued


def wait_until_up(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{server.log.read_text()[-2000:]}")
        try:
            if call(server, "GET", "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn on {server.port} not up:\n{server.log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def farm(stickless_valkey: Standalone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    prefix = f"mpf{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "STICKLESS_URL": stickless_valkey.url, "STICKLESS_KEY_PREFIX": prefix}
    logs = tmp_path_factory.mktemp("gunicorn")
    servers: list[Server] = []
    try:
        for index in range(SERVERS):  # all launched first, then awaited: parallel start
            port = processes.free_ports(1)[0]
            log = logs / f"server{index}.log"
            command = [sys.executable, "-m", "gunicorn", "flask_app:app"]
            command += ["--workers", "1", "--worker-class", "gthread", "--threads", "24"]
            command += ["--bind", f"127.0.0.1:{port}", "--chdir", str(APPS)]
            command += ["--graceful-timeout", "2", "--log-level", "warning"]
            process = processes.spawn(command, log=log, env=env)
            servers.append(Server(port, process, log))
        deadline = time.monotonic() + START_TIMEOUT
        for server in servers:
            wait_until_up(server, deadline)
        with SessionStore.from_url(stickless_valkey.url, SessionConfig(key_prefix=prefix)) as store:
            yield Farm(servers, store)
    finally:
        processes.stop([server.process for server in servers])


def new_session(farm: Farm, **data: str) -> str:
    token = None
    for i, (key, value) in enumerate(data.items()):
        status, _, issued = call(farm.servers[i % SERVERS], "POST", f"/set/{key}/{value}", token)
        assert status == 200
        token = issued or token
    assert token is not None
    return token


def concurrently(count: int, job: Any) -> list[Any]:
    """Run ``job(i)`` for i in range(count) in as many threads, released together."""
    barrier = Barrier(count)

    def run(i: int) -> Any:
        barrier.wait()
        return job(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_round_robin_hopping_keeps_the_session(farm: Farm) -> None:
    servers = farm.servers
    status, _, token = call(servers[0], "POST", "/set/a/1")
    assert status == 200 and token
    assert call(servers[1], "POST", "/set/b/2", token)[2] is None  # same token, no cookie
    call(servers[2], "POST", "/set/c/3", token)
    pids = set()
    for server in servers * 2:
        status, body, _ = call(server, "GET", "/state", token)
        assert status == 200
        assert body["data"] == {"a": "1", "b": "2", "c": "3"}
        pids.add(body["pid"])
    assert len(pids) == SERVERS  # really three processes
    _, _, renewed = call(servers[1], "POST", "/login/alice", token)
    assert renewed and renewed != token
    for server in servers:
        assert call(server, "GET", "/state", renewed)[1]["user"] == "alice"
        assert call(server, "GET", "/state", token)[1]["data"] == {}  # old token: dead


def test_fifty_concurrent_writers_on_one_session_keep_all_fifty(farm: Farm) -> None:
    token = new_session(farm, seed="0")

    def write(i: int) -> int:
        return call(farm.servers[i % SERVERS], "POST", f"/set/k{i}/{i}", token)[0]

    assert set(concurrently(50, write)) == {200}
    data = call(farm.servers[0], "GET", "/state", token)[1]["data"]
    assert {key: data[key] for key in data if key.startswith("k")} == {
        f"k{i}": str(i) for i in range(50)
    }


def test_fifty_concurrent_increments_count_fifty(farm: Farm) -> None:
    token = new_session(farm, seed="0")

    def increment(i: int) -> int:
        status, body, _ = call(farm.servers[i % SERVERS], "POST", "/incr", token)
        assert status == 200
        return int(body["n"])

    # Each answer shows the count as that request computed it before saving (at least 1);
    # the deltas are applied atomically in Redis at save, so none is lost.
    assert all(n >= 1 for n in concurrently(50, increment))
    assert call(farm.servers[0], "GET", "/state", token)[1]["data"]["n"] == 50
    loaded = farm.store.load(token)
    assert loaded is not None and loaded["n"] == 50


def test_logout_racing_slow_requests_stays_logged_out(farm: Farm) -> None:
    status, _, token = call(farm.servers[0], "POST", "/login/racer")
    assert status == 200 and token
    assert len(farm.store.sessions_for("racer")) == 1

    def slow(i: int) -> dict[str, Any]:
        status, body, _ = call(
            farm.servers[i % SERVERS], "POST", f"/slow-set/s{i}?delay=0.8", token
        )
        assert status == 200
        return body

    with ThreadPoolExecutor(7) as pool:
        pending = [pool.submit(slow, i) for i in range(6)]
        time.sleep(0.3)  # the slow requests have loaded the session by now
        assert call(farm.servers[1], "POST", "/logout", token)[0] == 200
        results = [future.result() for future in pending]
    assert all(body["user_at_start"] == "racer" for body in results)  # they did race
    for server in farm.servers:
        status, body, _ = call(server, "GET", "/state", token)
        assert status == 200 and body == {"pid": body["pid"], "data": {}, "user": None}
    assert farm.store.load(token) is None
    assert farm.store.sessions_for("racer") == []
