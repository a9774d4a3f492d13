"""Three uvicorn processes, one Valkey, no sticky sessions: tests/apps/asgi_app.py for real.

The client hops between the servers round-robin as a plain load balancer would. Overlapping
requests on one session keep every change, counters add up exactly, and a logout racing slow
requests is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from stickless import SessionStore, processes
from stickless.embedded import Standalone
from stickless.store.keys import KeyLayout
from stickless.tokens import token_id

APP_DIR = Path(__file__).parent / "apps"
REPO = Path(__file__).resolve().parents[1]
SERVERS = 3


@dataclass
class Cluster:
    urls: list[str]
    redis_url: str

    def url(self, i: int) -> str:
        return self.urls[i % len(self.urls)]


def start(port: int, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STICKLESS_URL": redis_url, "PYTHONPATH": str(REPO / "src")}
    return processes.spawn(
        [
            *(sys.executable, "-m", "uvicorn", "asgi_app:app", "--app-dir", str(APP_DIR)),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        log=log,
        env=env,
    )


@pytest.fixture(scope="module")
def servers(
    stickless_valkey: Standalone, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    ports = processes.free_ports(SERVERS)
    log_dir = tmp_path_factory.mktemp("uvicorn")
    logs = [log_dir / f"uvicorn-{port}.log" for port in ports]
    procs = [start(port, stickless_valkey.url, log) for port, log in zip(ports, logs, strict=True)]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        deadline = time.monotonic() + 30
        pending = set(range(SERVERS))
        while pending:
            for i in list(pending):
                if procs[i].poll() is not None:
                    log = processes.log_tail(logs[i], 30)
                    raise RuntimeError(f"uvicorn on {urls[i]} exited:\n{log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(urls[i] + "/health", timeout=1).status_code == 200:
                        pending.discard(i)
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn servers did not start in 30 s")
            time.sleep(0.05)
        yield Cluster(urls, stickless_valkey.url)
    finally:
        processes.stop(procs)


def token_header(response: httpx.Response) -> dict[str, str]:
    cookie = response.headers["set-cookie"]
    return {"Cookie": cookie.split(";")[0]}


def test_round_robin_keeps_the_session(servers: Cluster) -> None:
    with httpx.Client(timeout=10) as http:
        first = http.get(servers.url(0) + "/set", params={"step": "0"})
        cookie = token_header(first)
        pids = {first.headers["x-server-pid"]}
        for i in range(1, 12):
            r = http.get(servers.url(i) + "/incr", headers=cookie)
            assert r.text == str(i)
            assert "set-cookie" not in r.headers  # same token everywhere
            pids.add(r.headers["x-server-pid"])
        assert len(pids) == SERVERS  # really three processes
        r = http.get(servers.url(2) + "/read", headers=cookie)
        assert r.json() == {"step": "0", "n": 11}
        # login on one server: the renewed token works on the others, the old one nowhere
        renewed = token_header(http.get(servers.url(1) + "/login/ann", headers=cookie))
        for i in range(SERVERS):
            assert http.get(servers.url(i) + "/read", headers=renewed).json()["n"] == 11
            assert http.get(servers.url(i) + "/read", headers=cookie).json() == {}


async def test_fifty_concurrent_writes_and_increments(servers: Cluster) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        cookie = token_header(await http.get(servers.url(0) + "/set", params={"seed": "1"}))
        writes = [
            http.get(servers.url(i) + "/set", params={f"k{i}": str(i)}, headers=cookie)
            for i in range(50)
        ]
        incrs = [http.get(servers.url(i) + "/incr", headers=cookie) for i in range(50)]
        responses = await asyncio.gather(*writes, *incrs)
        assert {r.status_code for r in responses} == {200}
        assert len({r.headers["x-server-pid"] for r in responses}) == SERVERS
        data = (await http.get(servers.url(1) + "/read", headers=cookie)).json()
    assert {k: v for k, v in data.items() if k.startswith("k")} == {
        f"k{i}": str(i) for i in range(50)
    }
    assert data["n"] == 50
    assert data["seed"] == "1"


async def test_logout_racing_slow_requests_is_final(servers: Cluster) -> None:
    counter_client = redis.Redis.from_url(servers.redis_url)
    counter_client.delete("test:slow-loaded")
    slow = 6
    async with httpx.AsyncClient(timeout=20) as http:
        login = await http.get(servers.url(0) + "/login/zoe")
        cookie = token_header(login)
        await http.get(servers.url(1) + "/set", params={"before": "1"}, headers=cookie)
        tasks = [
            asyncio.create_task(
                http.get(
                    servers.url(i) + "/slow-set",
                    params={"key": f"slow{i}", "delay": "1.0"},
                    headers=cookie,
                )
            )
            for i in range(slow)
        ]
        deadline = time.monotonic() + 10
        while int(counter_client.get("test:slow-loaded") or 0) < slow:  # all loaded
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        out = await http.get(servers.url(2) + "/logout", headers=cookie)
        assert "Max-Age=0" in out.headers["set-cookie"]
        finished = await asyncio.gather(*tasks)  # their saves come after the logout
        assert {r.status_code for r in finished} == {200}
        for r in finished:  # each learned the session is gone: its cookie is deleted
            assert "Max-Age=0" in r.headers["set-cookie"]
        for i in range(SERVERS):
            assert (await http.get(servers.url(i) + "/read", headers=cookie)).json() == {}
    with SessionStore.from_url(servers.redis_url) as store:
        token = cookie["Cookie"].split("=", 1)[1]
        assert store.load(token) is None
        assert store.sessions_for("zoe") == []
    # no resurrection: not even a partial hash under the session's key
    assert counter_client.exists(KeyLayout("stickless").data(token_id(token).family)) == 0
    counter_client.close()


async def _wait_loaded(counter: redis.Redis, count: int) -> None:
    deadline = time.monotonic() + 10
    while int(counter.get("test:slow-loaded") or 0) < count:
        assert time.monotonic() < deadline, "the slow requests never loaded"
        await asyncio.sleep(0.02)


async def test_planted_token_keeps_no_power_after_the_victims_login(servers: Cluster) -> None:
    """Session fixation, end to end: the attacker plants a token T0 in the victim's browser and
    keeps slow requests open with it. The victim signs in the Starlette way
    (``request.session["user"] = ...``). T0 then loads nothing, and the attacker's slow
    requests, finishing after the login, neither write into nor destroy the victim's session."""
    counter = redis.Redis.from_url(servers.redis_url)
    counter.delete("test:slow-loaded")
    async with httpx.AsyncClient(timeout=20) as http:
        planted = token_header(await http.get(servers.url(0) + "/set", params={"x": "1"}))
        slow_write = asyncio.create_task(
            http.get(
                servers.url(1) + "/slow-set",
                params={"key": "pwned", "delay": "1.0"},
                headers=planted,
            )
        )
        slow_logout = asyncio.create_task(
            http.get(servers.url(2) + "/slow-logout", params={"delay": "1.0"}, headers=planted)
        )
        await _wait_loaded(counter, 2)
        signin = await http.get(servers.url(0) + "/signin/victim", headers=planted)
        victim = token_header(signin)
        assert victim != planted  # the login renewed the token by itself
        for i in range(SERVERS):  # the planted copy is anonymous everywhere, at once
            who = await http.get(servers.url(i) + "/whoami", headers=planted)
            assert who.json() == {"user": None}
        done = await asyncio.gather(slow_write, slow_logout)
        assert {r.status_code for r in done} == {200}
        for i in range(SERVERS):
            data = (await http.get(servers.url(i) + "/read", headers=victim)).json()
            assert data == {"x": "1", "user": "victim"}  # nothing of the attacker's
    counter.close()
