"""The demo: the scripted tour on every topology, the page itself, and a clean stop.

* ``run(tour=True)`` for standalone, sentinel and cluster: exit 0, every step passed, and on
  the replicated topologies a failover happened and was timed.
* The demo app in-process (Starlette ``TestClient`` on the embedded Valkey): page content,
  token renewal note, escaping of what the visitor typed.
* ``python -m stickless.demo`` in a subprocess: the three URLs answer and share one session;
  SIGINT / SIGTERM stops every process it started (checked by PID from ``demo.json``).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from starlette.testclient import TestClient  # noqa: E402

from stickless.demo import run  # noqa: E402
from stickless.demo.app import COOKIE_NAME, DemoSettings, create_app  # noqa: E402
from stickless.embedded import Standalone, start_cluster, start_sentinel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------------------- the tour
@pytest.mark.parametrize("topology", ["standalone", "sentinel", "cluster"])
def test_tour_passes_every_step(
    topology: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(topology=topology, tour=True, data_dir=tmp_path)
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "tour-report.json").read_text())
    assert code == 0, out
    assert report["passed"] is True and report["error"] is None
    steps = report["steps"]
    assert steps and all(step["passed"] for step in steps), out
    titles = " | ".join(step["title"] for step in steps)
    for expected in (
        "token renewed",
        "old cookie",
        "30 concurrent adds",
        "second device",
        "server-2 crashes",
        "log out everywhere",
        "other device is logged out",
    ):
        assert expected in titles
    if topology == "standalone":
        assert len(steps) == 11 and report["failover_seconds"] is None
    else:
        assert len(steps) == 14
        assert "failover" in titles and 0 < report["failover_seconds"] < 45
    assert "FAIL" not in out and f"All {len(steps)} steps passed" in out


def test_a_failed_step_fails_the_tour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stickless.demo import tour

    def broken(self: tour.Journey) -> tuple[str, str]:
        raise tour.StepFailed("the old token still loads")

    monkeypatch.setattr(tour.Journey, "old_cookie", broken)
    assert run(tour=True, data_dir=tmp_path) == 1
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "tour-report.json").read_text())
    assert report["passed"] is False and len(report["steps"]) == 3
    assert [s["passed"] for s in report["steps"]] == [True, True, False]
    assert "FAIL" in out and "1 of 3 step(s) failed" in out


def test_bad_arguments() -> None:
    assert run(topology="mesh") == 2
    assert run(ports=[1, 2]) == 2


# ------------------------------------------------------------------------ the page
@pytest.fixture
def client(stickless_valkey: Standalone) -> Iterator[TestClient]:
    settings = DemoSettings(
        url=stickless_valkey.url,
        name="server-2",
        peers=(("server-1", "http://127.0.0.1:1"), ("server-2", "http://testserver")),
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_page_shows_the_id_the_cli_takes(
    client: TestClient, stickless_valkey: Standalone
) -> None:
    import re

    from typer.testing import CliRunner

    from stickless.cli import app as cli

    client.post("/login", data={"username": "carl"})
    shown = re.search(r"<code id='session-id'>([^<]+)</code>", client.get("/").text)
    assert shown is not None and len(shown.group(1)) == 11  # the token family
    result = CliRunner().invoke(
        cli, ["--url", stickless_valkey.url, "sessions", "show", "--", shown.group(1)]
    )
    assert result.exit_code == 0, result.output
    assert "carl" in result.stdout


def test_sign_out_one_other_device(stickless_valkey: Standalone) -> None:
    settings = DemoSettings(url=stickless_valkey.url, name="server-1", peers=())
    app = create_app(settings)
    with TestClient(app) as laptop, TestClient(app) as phone, TestClient(app) as other:
        laptop.post("/login", data={"username": "dora"})
        phone.post("/login", data={"username": "dora"})
        other.post("/login", data={"username": "eve"})
        devices = laptop.get("/api/state").json()["devices"]
        assert len(devices) == 2
        phone_id = next(d["session_id"] for d in devices if not d["current"])
        eve_id = other.get("/api/state").json()["devices"][0]["session_id"]
        assert "Sign out" in laptop.get("/").text
        laptop.post("/devices/revoke", data={"session_id": eve_id})  # not dora's: refused
        assert other.get("/api/state").json()["user"] == "eve"
        laptop.post("/devices/revoke", data={"session_id": phone_id})
        assert phone.get("/api/state").json()["user"] is None  # the phone is signed out
        assert len(laptop.get("/api/state").json()["devices"]) == 1


def test_the_demo_mounts_the_devices_page(stickless_valkey: Standalone) -> None:
    app = create_app(DemoSettings(url=stickless_valkey.url, name="server-1", peers=()))
    origin = {"Origin": "http://testserver"}
    with TestClient(app) as laptop, TestClient(app) as phone:
        laptop.post("/login", data={"username": "fay"})
        phone.post("/login", data={"username": "fay"})
        assert "/account/devices/" in laptop.get("/").text
        listed = laptop.get("/account/devices/?format=json").json()["sessions"]
        assert [d["current"] for d in listed] == [True, False]
        assert laptop.post("/account/devices/name", data={"name": "laptop"}, headers=origin)
        assert "laptop" in laptop.get("/account/devices/").text
        laptop.delete(f"/account/devices/{listed[1]['session_id']}", headers=origin)
        assert phone.get("/api/state").json()["user"] is None


def _max_age(response: httpx.Response) -> int:
    found = re.search(r"(?i)\bmax-age=(\d+)", response.headers.get("set-cookie", ""))
    assert found, response.headers
    return int(found.group(1))


def test_remember_me_gives_the_session_its_long_lifetime(stickless_valkey: Standalone) -> None:
    """Checked: ``set_lifetime(idle=7 days, absolute=30 days)`` (the demo's maxima), which the
    server's TTL and the cookie's Max-Age follow; unchecked: the configured 30 min / 24 h."""
    from stickless.demo.app import REMEMBER_ABSOLUTE, REMEMBER_IDLE

    app = create_app(DemoSettings(url=stickless_valkey.url, name="server-1", peers=()))
    with TestClient(app) as kept, TestClient(app) as plain:
        form = {"username": "ann", "remember": "on"}
        remembered = kept.post("/login", data=form, follow_redirects=False)
        default = plain.post("/login", data={"username": "ann"}, follow_redirects=False)
        assert remembered.status_code == default.status_code == 303
        assert REMEMBER_ABSOLUTE - 60 <= _max_age(remembered) <= REMEMBER_ABSOLUTE
        assert 24 * 3600 - 60 <= _max_age(default) <= 24 * 3600
        long, short = kept.get("/api/state").json(), plain.get("/api/state").json()
        assert long["user"] == short["user"] == "ann"
        assert long["idle_timeout"] == REMEMBER_IDLE and short["idle_timeout"] == 30 * 60
        assert REMEMBER_IDLE - 60 < long["seconds_left"] <= REMEMBER_IDLE  # the server's TTL
        assert 30 * 60 - 60 < short["seconds_left"] <= 30 * 60
        page = kept.get("/").text
        assert "Remembered: this session lasts 7 days" in page
        assert "<span id='lifetime'>7 days (remember me)</span>" in page
        assert "<span id='lifetime'>30 min</span>" in plain.get("/").text
        assert 'id="login-remember"' in TestClient(app).get("/").text  # the checkbox


def test_the_device_name_shows_in_the_listing_escaped(stickless_valkey: Standalone) -> None:
    app = create_app(DemoSettings(url=stickless_valkey.url, name="server-1", peers=()))
    hostile = "<b>work</b> laptop & <script>x()</script>"
    headers = {
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    }
    with TestClient(app, headers=headers) as laptop, TestClient(app) as phone:
        laptop.post("/login", data={"username": "bea", "device": hostile})
        phone.post("/login", data={"username": "bea"})
        listed = laptop.get("/api/state").json()["devices"]
        assert [(d["current"], d["name"]) for d in listed] == [(True, hostile), (False, None)]
        assert listed[0]["label"] == "Firefox on Linux"
        for page in (
            laptop.get("/").text,
            phone.get("/").text,
            laptop.get("/account/devices/").text,
        ):
            assert html.escape(hostile) in page  # as text, never markup
            assert "<b>work</b>" not in page and "<script>x()" not in page
        assert "<b id='device-count'>2 of 5 devices</b>" in phone.get("/").text
        refused = laptop.post("/login", data={"username": "bea", "device": "tab\there"})
        assert "Device names:" in refused.text


def test_the_cap_signs_the_oldest_out_on_the_sixth_login(stickless_valkey: Standalone) -> None:
    from stickless.demo.app import MAX_DEVICES

    app = create_app(DemoSettings(url=stickless_valkey.url, name="server-1", peers=()))
    with contextlib.ExitStack() as stack:
        browsers = [stack.enter_context(TestClient(app)) for _ in range(MAX_DEVICES + 1)]
        for n, browser in enumerate(browsers[:MAX_DEVICES], 1):
            page = browser.post("/login", data={"username": "cid", "device": f"d{n}"}).text
            assert f"<b id='device-count'>{n} of 5 devices</b>" in page
            assert "signed out" not in page
        page = browsers[-1].post("/login", data={"username": "cid", "device": "d6"}).text
        assert "At most 5 devices per user: the oldest login was signed out." in page
        assert "<b id='device-count'>5 of 5 devices</b>" in page
        assert browsers[0].get("/api/state").json()["user"] is None  # the oldest: signed out
        for browser in browsers[1:]:
            assert browser.get("/api/state").json()["user"] == "cid"
        names = [d["name"] for d in browsers[-1].get("/api/state").json()["devices"]]
        assert sorted(names) == ["d2", "d3", "d4", "d5", "d6"]


def test_page_shows_server_session_and_escapes_input(client: TestClient) -> None:
    first = client.get("/")
    assert first.status_code == 200
    assert "Answered by server-2" in first.text
    assert 'href="http://127.0.0.1:1/"' in first.text  # link to the other server
    assert "anonymous" in first.text
    assert COOKIE_NAME in first.headers.get("set-cookie", "")  # the page view counter

    # POST-redirect-GET, token renewed on login, the note says so
    old = client.cookies[COOKIE_NAME]
    response = client.post("/login", data={"username": "bob"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert client.cookies[COOKIE_NAME] != old
    page = client.get("/").text
    assert "Token renewed" in page and "Logged in as bob" in page
    assert old not in page and client.cookies[COOKIE_NAME] not in page  # never the token

    # what the visitor types is validated or escaped
    client.post("/cart/add", data={"item": "<script>alert(1)</script>"}, follow_redirects=False)
    client.post("/note", data={"note": "<b>hello</b>"}, follow_redirects=False)
    page = client.get("/").text
    assert "<script>alert" not in page and "<b>hello</b>" not in page
    assert "&lt;b&gt;hello&lt;/b&gt;" in page
    assert "Item names:" in page  # the rejected item's message

    client.post("/cart/add", data={"item": "Apple"})
    client.post("/cart/add", data={"item": "apple"})
    state = client.get("/api/state").json()
    assert state["cart"] == {"apple": 2}
    assert state["user"] == "bob" and len(state["devices"]) == 1
    assert state["devices"][0]["current"] is True
    assert state["server"]["name"] == "server-2"

    response = client.post("/logout-everywhere", follow_redirects=False)
    assert response.headers["location"] == "/?note=revoked&n=1"
    assert "Logged out everywhere: 1 session(s)" in client.get(response.headers["location"]).text


class _Listener:
    """A real HTTP server on 127.0.0.1 that records every request it gets (path, cookie)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.seen: list[tuple[str, str]] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                seen.append((self.path, self.headers.get("cookie", "")))
                self.send_response(303)
                self.send_header("Location", "/")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_burst_never_sends_the_cookie_to_the_host_a_request_names(
    stickless_valkey: Standalone,
) -> None:
    """Without configured peers, ``/cart/burst`` used to send the visitor's cookie to
    whatever host the request's ``Host`` header named (SSRF, cookie leak): here a listener
    on 127.0.0.1. Now only configured peers are ever contacted; with none, the adds run in
    the app's own process, and still add up."""
    from stickless.demo.app import BURST_ITEMS

    listener = _Listener()
    try:
        settings = DemoSettings(url=stickless_valkey.url, name="solo", peers=())
        named = f"http://127.0.0.1:{listener.port}"  # what an attacker puts in Host
        with TestClient(create_app(settings), base_url=named) as client:
            client.post("/cart/add", data={"item": "apple"})
            response = client.post("/cart/burst", follow_redirects=False)
            assert response.status_code == 303
            page = client.get("/").text
            cart = client.get("/api/state").json()["cart"]
        assert listener.seen == []  # nothing ever reached the named host
        assert "in process" in page and "no lost update" in page
        assert cart == {item: (2 if item == "apple" else 1) for item in BURST_ITEMS}
    finally:
        listener.close()


# --------------------------------------------------------------- serve, then stop
def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its parent counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _wait_for_state(path: Path, proc: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the demo did not start within 60 s:\n{log.read_text()}")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_serves_three_servers_and_stops_everything(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    log = tmp_path / "demo.out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if stop_signal == signal.SIGINT:
        # as the README runs it: the console script, default (relative) data directory
        data = tmp_path / ".stickless" / "demo-data"
        command = [str(Path(sys.executable).parent / "stickless"), "demo"]
    else:
        data = tmp_path / "data"
        command = [sys.executable, "-m", "stickless.demo", "--data-dir", str(data)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    try:
        state = _wait_for_state(data / "demo.json", proc, log)
        servers = state["servers"]
        assert isinstance(servers, list) and len(servers) == 3
        printed = log.read_text()
        for server in servers:
            assert server["url"] in printed  # the URLs are printed
        assert f"export STICKLESS_URL={state['store_url']}" in printed, printed

        # one cookie, three servers: the same session follows the visitor
        with httpx.Client(timeout=10, follow_redirects=True) as browser:
            first = browser.get(servers[0]["url"] + "/")
            assert first.status_code == 200 and "Answered by server-1" in first.text
            added = browser.post(servers[1]["url"] + "/cart/add", data={"item": "kettle"})
            assert added.status_code == 200 and "Answered by server-2" in added.text
            third = browser.get(servers[2]["url"] + "/api/state").json()
            assert third["server"]["name"] == "server-3"
            assert third["cart"] == {"kettle": 1}
            assert set(third["hits"]) == {"server-1", "server-2"}

        pids = state["pids"]
        assert isinstance(pids, dict)
        started = [*pids["valkey"], *pids["servers"]]
        assert len(started) == 4 and not any(_gone(pid) for pid in started)

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while not all(_gone(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in started if not _gone(pid)] == []
    assert not (data / "demo.json").exists()
    assert (data / "valkey" / "appendonlydir").is_dir()  # standalone keeps its data (AOF)
    assert "Stopped" in log.read_text()


# ------------------------------------------------------- fail over now (issue 8, item 5)
CSRF_RE = re.compile(r'data-csrf="([^"]+)"')
FAILOVER_TIMEOUT = 40.0


def _csrf(page: str) -> str:
    found = CSRF_RE.search(page)
    assert found, "no failover panel on the page"
    return found.group(1)


def _watch(browser: Any, timeout: float = 20.0) -> dict[str, Any]:
    """GET /api/watch, retried while the store answers 503 (during an election)."""
    deadline = time.monotonic() + timeout
    while True:
        response = browser.get("/api/watch")
        if response.status_code == 200:
            return dict(response.json())
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "the store stayed unavailable"
        time.sleep(0.2)


def _write_through_failover(browser: Any, csrf: str) -> dict[str, Any]:
    """What the page's script does: a run of sequential writes, the button pressed after 20
    acknowledged ones, writes going on until the primary changed and 20 more were
    acknowledged. Returns the counts and the final stored state."""
    headers = {"X-CSRF-Token": csrf}
    started = browser.post("/api/watch/start", headers=headers)
    assert started.status_code == 200, started.text
    run = started.json()["run"]
    acked: list[int] = []
    failed: list[int] = []
    before = _watch(browser)["primary"]
    assert before, "the primary is shown"
    pressed_at = None
    moved_at = None
    seq = 0
    deadline = time.monotonic() + FAILOVER_TIMEOUT
    while time.monotonic() < deadline:
        seq += 1
        response = browser.post(f"/api/watch/write?run={run}&seq={seq}", headers=headers)
        (acked if response.status_code == 200 else failed).append(seq)
        assert response.status_code in (200, 503), response.text
        if pressed_at is None and len(acked) == 20:
            pressed = browser.post(
                "/failover", data={"csrf": csrf}, headers={"Accept": "application/json"}
            )
            assert pressed.status_code == 200, pressed.text
            assert "FAILOVER" in pressed.json()["message"]
            pressed_at = len(acked)
        if pressed_at is not None and moved_at is None and seq % 5 == 0:
            now = browser.get("/api/watch")
            if now.status_code == 200 and now.json()["primary"] not in (None, before):
                moved_at = len(acked)
        if moved_at is not None and len(acked) >= moved_at + 20:
            break
        time.sleep(0.02)
    assert moved_at is not None, f"the primary did not change within {FAILOVER_TIMEOUT:g} s"
    state = _watch(browser)
    assert state["run"] == run
    return {"acked": acked, "failed": failed, "before": before, "state": state}


@pytest.fixture(scope="module")
def sentinel_demo() -> Iterator[str]:
    with start_sentinel(down_after_ms=1000, failover_timeout_ms=3000) as setup:
        yield setup.url


@pytest.fixture(scope="module")
def cluster_demo() -> Iterator[str]:
    with start_cluster(replicas_per_primary=2, node_timeout_ms=1000) as setup:
        yield setup.url


def _demo_client(url: str) -> TestClient:
    settings = DemoSettings(
        url=url, name="server-1", peers=(), durability="replicated", failover=True
    )
    return TestClient(create_app(settings))


def test_no_failover_button_on_standalone(client: TestClient) -> None:
    page = client.get("/").text
    assert 'id="failover"' not in page and "<script>" not in page
    refused = client.post("/failover", data={"csrf": "x"}, headers={"Accept": "application/json"})
    assert refused.status_code == 404


def test_failover_needs_the_csrf_token_and_a_demo_origin(sentinel_demo: str) -> None:
    with _demo_client(sentinel_demo) as browser:
        page = browser.get("/").text
        assert 'id="failover-button"' in page and "Fail over now" in page
        assert "<script>" in page  # the live counter
        csrf = _csrf(page)
        before = browser.get("/api/watch").json()["primary"]
        accept = {"Accept": "application/json"}
        assert browser.post("/failover", data={}, headers=accept).status_code == 403
        assert (
            browser.post("/failover", data={"csrf": "forged" * 4}, headers=accept).status_code
            == 403
        )
        evil = {**accept, "Origin": "http://evil.example"}
        assert browser.post("/failover", data={"csrf": csrf}, headers=evil).status_code == 403
        assert browser.post("/api/watch/start").status_code == 403  # no header
        other = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert browser.post("/api/watch/start", headers=other).status_code == 403
        # a visitor without the session (another site's form: no cookie) gets nothing either
        with _demo_client(sentinel_demo) as stranger:
            assert (
                stranger.post("/failover", data={"csrf": csrf}, headers=accept).status_code == 403
            )
        time.sleep(1.5)
        assert browser.get("/api/watch").json()["primary"] == before  # nothing happened
        # the form (no JavaScript) works too: POST-redirect-GET with a fixed note
        pressed = browser.post("/failover", data={"csrf": csrf}, follow_redirects=False)
        assert pressed.status_code == 303 and pressed.headers["location"] == "/?note=failover"
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while _watch(browser)["primary"] == before:
            assert time.monotonic() < deadline, "no failover after the button"
            time.sleep(0.3)


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_a_failover_loses_no_acknowledged_write(
    topology: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{topology}_demo")
    with _demo_client(url) as browser:
        # a stored session (its slot), acknowledged: right after the previous test's
        # failover the replicas may still be resyncing, and a replicated save answers 503
        # (applied, not replicated: not kept by promise); then start over with a new one
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while (
            browser.post("/cart/add", data={"item": "kettle"}, follow_redirects=False).status_code
            != 303
        ):
            assert time.monotonic() < deadline, "no save acknowledged before the failover"
            browser.cookies.clear()
            time.sleep(0.2)
        csrf = _csrf(browser.get("/").text)
        outcome = _write_through_failover(browser, csrf)
        state = outcome["state"]
        stored = set(state["stored"])
        missing = [seq for seq in outcome["acked"] if seq not in stored]
        assert missing == [], f"acknowledged but not in the store: {missing}"
        assert state["counter"] == len(state["stored"])  # incr and the list agree
        assert state["primary"] != outcome["before"]
        assert browser.get("/api/state").json()["cart"] == {"kettle": 1}


def test_launched_sentinel_demo_has_the_button_on_every_server(tmp_path: Path) -> None:
    """The launcher turns the panel on for its own Sentinel topology (not for standalone),
    and a press on one real server moves the primary all three see."""
    from stickless.demo.launcher import launch

    with launch("sentinel", log_dir=tmp_path) as demo:
        with httpx.Client(timeout=10) as browser:
            pages = [browser.get(server.url + "/").text for server in demo.servers]
            assert all('id="failover-button"' in page for page in pages)
            csrf = _csrf(browser.get(demo.servers[0].url + "/").text)  # one cookie, one session
            before = browser.get(demo.servers[1].url + "/api/watch").json()["primary"]
            pressed = browser.post(
                demo.servers[2].url + "/failover",
                data={"csrf": csrf},
                headers={"Accept": "application/json"},
            )
            assert pressed.status_code == 200, pressed.text
            deadline = time.monotonic() + FAILOVER_TIMEOUT
            while True:
                now = browser.get(demo.servers[0].url + "/api/watch")
                if now.status_code == 200 and now.json()["primary"] not in (None, before):
                    break
                assert time.monotonic() < deadline, "no failover after the button"
                time.sleep(0.3)
