"""Three real WSGI servers (gunicorn, one process each) serving tests/apps/django_project with
``SESSION_ENGINE = "stickless.django"``, sharing one Valkey: what a round-robin load balancer
without sticky sessions does to a Django app."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from stickless import processes
from stickless.embedded import Standalone

APPS = Path(__file__).resolve().parent / "apps"
COOKIE = "sessionid"


USERS = ("victim", "attacker")
PASSWORD = "correct horse"


def make_database(path: Path) -> None:
    """An auth database the gunicorn processes share, holding the test users."""
    script = (
        "import django; django.setup(); "
        "from django.core.management import call_command; "
        "call_command('migrate', verbosity=0); "
        "from django.contrib.auth.models import User; "
        f"[User.objects.create_user(name, password={PASSWORD!r}) for name in {USERS!r}]"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "django_project.settings",
        "STICKLESS_TEST_DB": str(path),
    }
    subprocess.run([sys.executable, "-c", script], cwd=APPS, env=env, check=True, timeout=60)


class Server:
    def __init__(self, valkey_url: str, log_dir: Path) -> None:
        self.port = processes.free_ports(1)[0]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"gunicorn-{self.port}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": "django_project.settings",
            "STICKLESS_URL": valkey_url,
            "STICKLESS_TEST_DB": str(log_dir / "auth.sqlite3"),
        }
        self.process = processes.spawn(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                "40",
                "django_project.wsgi:application",
            ],
            log=self.log,
            cwd=APPS,
            env=env,
        )

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            try:
                if HTTP.get(f"{self.base}/plain", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not answer: {self.log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def servers(
    stickless_valkey: Standalone, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Server]]:
    log_dir = tmp_path_factory.mktemp("gunicorn")
    make_database(log_dir / "auth.sqlite3")
    started: list[Server] = []
    try:
        for _ in range(3):
            started.append(Server(stickless_valkey.url, log_dir))
        for server in started:
            server.wait_ready()
        yield started
    finally:
        HTTP.close()  # idle keep-alive connections would delay gunicorn's graceful exit
        processes.stop([server.process for server in started])


# One shared client (a new one per request costs ~40 ms of TLS set-up, even for http), whose
# cookie jar refuses every cookie: each request carries exactly the token it is given.
HTTP = httpx.Client(
    cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
    timeout=30,
)


def request(server: Server, path: str, token: str | None, **params: Any) -> httpx.Response:
    headers = {"Cookie": f"{COOKIE}={token}"} if token else {}
    return HTTP.get(f"{server.base}{path}", params=params, headers=headers)


def follow(response: httpx.Response, token: str | None) -> str | None:
    """The token the client holds after ``response`` (a Set-Cookie replaces it)."""
    value = response.cookies.get(COOKIE)
    return token if value is None else (value or None)


def session_count(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return len(list(client.scan_iter("stickless:s:*")))
    finally:
        client.close()


def concurrently(count: int, work: Any) -> list[Any]:
    """Runs ``work(i)`` for i in range(count) in as many threads, released together."""
    barrier = threading.Barrier(count)

    def run(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_client_hopping_round_robin_keeps_its_session(
    servers: list[Server], stickless_url: str
) -> None:
    token: str | None = None
    for i in range(12):
        server = servers[i % 3]
        if i == 6:  # a key renewal on one server is seen by the others at once
            old = token
            token = follow(request(server, "/cycle", token), token)
            assert token != old
            assert request(servers[1], "/read", old).json() == {}
        response = request(server, "/set", token, key=f"k{i}", value=f"v{i}")
        assert response.status_code == 200
        token = follow(response, token)
    expected = {f"k{i}": f"v{i}" for i in range(12)}
    for server in servers:
        assert request(server, "/read", token).json() == expected
    assert session_count(stickless_url) == 1


def test_fifty_concurrent_writers_of_distinct_keys_keep_all(
    servers: list[Server], stickless_url: str
) -> None:
    token = follow(request(servers[0], "/set", None, key="seed", value="0"), None)
    assert token

    def write(i: int) -> int:
        return request(servers[i % 3], "/set", token, key=f"k{i}", value=str(i)).status_code

    assert concurrently(50, write) == [200] * 50
    data = request(servers[1], "/read", token).json()
    assert {k: v for k, v in data.items() if k.startswith("k")} == {
        f"k{i}": str(i) for i in range(50)
    }
    assert data["seed"] == "0"


def test_fifty_concurrent_increments_count_fifty(servers: list[Server], stickless_url: str) -> None:
    token = follow(request(servers[0], "/set", None, key="seed", value="0"), None)

    def bump(i: int) -> int:
        return request(servers[i % 3], "/incr", token, key="n").status_code

    assert concurrently(50, bump) == [200] * 50
    assert request(servers[2], "/read", token).json()["n"] == 50


def test_logout_racing_slow_requests_stays_logged_out(
    servers: list[Server], stickless_url: str
) -> None:
    token = follow(request(servers[0], "/set", None, key="user", value="alice"), None)
    results: list[int] = []

    def slow(i: int) -> None:
        response = request(servers[i % 3], "/slow-set", token, key=f"late{i}", gate="race")
        results.append(response.status_code)

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    valkey = redis.Redis.from_url(stickless_url)
    try:
        deadline = time.monotonic() + 20
        while int(valkey.get("race:loaded") or 0) < 6:  # all six hold the loaded session
            assert time.monotonic() < deadline, "the slow requests never loaded"
            time.sleep(0.01)
        assert request(servers[1], "/flush", token).status_code == 200  # logout
        valkey.set("race:go", 1)  # now they all try to save
        for thread in threads:
            thread.join()
    finally:
        valkey.close()
    # Django answers a save into a destroyed session with 400 (SessionInterrupted)
    assert results == [400] * 6
    for server in servers:
        assert request(server, "/read", token).json() == {}
    assert session_count(stickless_url) == 0


def test_attackers_slow_login_cannot_take_over_the_victims_session(
    servers: list[Server], stickless_url: str
) -> None:
    """Fixation under gunicorn: the attacker plants T0 in the victim's browser and starts a
    slow login of their own with T0. The victim logs in (T0 renewed); the attacker's login
    finishes afterwards. The victim's browser must still be the victim, T0 nobody."""
    planted = follow(request(servers[0], "/set", None, key="theme", value="dark"), None)
    outcome: list[httpx.Response] = []

    def attacker() -> None:
        outcome.append(
            request(
                servers[1],
                "/slow-login",
                planted,
                username="attacker",
                password=PASSWORD,
                gate="fixation",
            )
        )

    thread = threading.Thread(target=attacker)
    thread.start()
    valkey = redis.Redis.from_url(stickless_url)
    try:
        deadline = time.monotonic() + 20
        while int(valkey.get("fixation:loaded") or 0) < 1:
            assert time.monotonic() < deadline, "the slow login never loaded"
            time.sleep(0.01)
        login = HTTP.post(
            f"{servers[2].base}/login",
            data={"username": "victim", "password": PASSWORD},
            headers={"Cookie": f"{COOKIE}={planted}"},
        )
        assert login.status_code == 200
        victim = follow(login, planted)
        assert victim and victim != planted
        valkey.set("fixation:go", 1)  # the attacker's login finishes now
        thread.join(30)
    finally:
        valkey.close()
    assert outcome and outcome[0].status_code in (200, 400)
    for server in servers:
        assert request(server, "/whoami", victim).json() == {"user": "victim"}
        assert request(server, "/whoami", planted).json() == {"user": None}
