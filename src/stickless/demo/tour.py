"""``stickless demo --tour``: a scripted journey through the demo, no browser needed.

It starts the same processes as the interactive demo (Valkey in the chosen topology and three
app servers), then plays a user (and, later, the same user's second device) with ``httpx``,
hopping between the servers as a round-robin load balancer would, and checks after every
step what the session holds:

1. a guest adds an item on server-1 (the session is created);
2. logs in on server-1: the token is renewed, the cart stays;
3. the old cookie no longer loads anything (asked on server-2);
4. adds an item on server-2, 5. another on server-3: one cart;
6. 30 concurrent adds spread over the 3 servers: no lost update;
7. a second device logs in as the same user: the user has 2 sessions;
8. server-2 is SIGKILLed, 9. and the journey carries on on the other two;
10. (sentinel, cluster) the Valkey primary holding the session is SIGKILLed; requests are
    retried (503 is the expected answer during the election) until a replica has taken over;
    11. the session survived, 12. and takes new writes;
13. log out everywhere, 14. and the second device is logged out too.

Each step is printed as a row of a table (step, server, HTTP status, what the session held,
PASS/FAIL); the exit code is 0 only if every step passed. The same report is written as JSON
to ``<data_dir>/tour-report.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stickless.demo.app import BURST_ITEMS, COOKIE_NAME
from stickless.demo.launcher import (
    AppServer,
    Demo,
    Topology,
    describe_valkey,
    launch,
)
from stickless.embedded import ClusterSetup, Node, SentinelSetup

FAILOVER_TIMEOUT: Final = 45.0
"""Seconds the store may take to come back after its primary was killed."""
REQUEST_TIMEOUT: Final = 15.0
CONCURRENT_ADDS: Final = 30


# ------------------------------------------------------------------------------ report
@dataclass
class Step:
    """One row of the tour's table."""

    number: int
    title: str
    server: str
    http: str
    held: str
    passed: bool


@dataclass
class TourReport:
    topology: str
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    failover_seconds: float | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.steps) and self.error is None and all(s.passed for s in self.steps)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_json(self) -> str:
        data = asdict(self)
        data["passed"] = self.passed
        return json.dumps(data, indent=2) + "\n"


class StepFailed(Exception):
    """A step found something it did not expect (the journey cannot go on)."""


# ------------------------------------------------------------------------------ client
def _no_cookie_jar() -> http.cookiejar.CookieJar:
    """A jar that keeps nothing: each :class:`Device` carries its own cookie by hand."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class Device:
    """A browser of the journey: it holds one session cookie and sends it to any server."""

    def __init__(self, label: str, client: httpx.Client) -> None:
        self.label = label
        self.client = client
        self.token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"cookie": f"{COOKIE_NAME}={self.token}"} if self.token else {}

    @property
    def family(self) -> str | None:
        """The session's family (the token's first part: it names the cluster slot)."""
        return self.token.partition(".")[0] if self.token else None

    def absorb(self, response: httpx.Response) -> None:
        """Take the session cookie from ``Set-Cookie`` (a deletion cookie drops it)."""
        for header in response.headers.get_list("set-cookie"):
            first, *attributes = header.split(";")
            name, _, value = first.partition("=")
            if name.strip() != COOKIE_NAME:
                continue
            deleting = not value.strip() or any(
                a.strip().lower() == "max-age=0" for a in attributes
            )
            self.token = None if deleting else value.strip()

    def post(self, server: AppServer, path: str, **form: str) -> httpx.Response:
        response = self.client.post(server.url + path, data=form, headers=self.headers)
        self.absorb(response)
        return response

    def state(self, server: AppServer) -> tuple[int, dict[str, Any]]:
        response = self.client.get(server.url + "/api/state", headers=self.headers)
        self.absorb(response)
        if response.status_code != 200:
            return response.status_code, {}
        data = response.json()
        assert isinstance(data, dict)
        return 200, data


def held(state: dict[str, Any]) -> str:
    """What the session held, in a few words (``alice-1a2b: tea x1, book x1`` style)."""
    if not state:
        return "-"
    user = state.get("user") or "anonymous"
    cart: dict[str, int] = state.get("cart") or {}
    if not cart:
        cart_text = "empty cart"
    elif len(cart) <= 4:
        cart_text = ", ".join(f"{k}\u00d7{v}" for k, v in cart.items())
    else:
        cart_text = f"{len(cart)} kinds, {sum(cart.values())} items"
    return f"{user}: {cart_text}"


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


# -------------------------------------------------------------------------------- tour
class Journey:
    """The scripted journey over a running :class:`Demo`."""

    def __init__(self, demo: Demo, console: Console, user: str) -> None:
        self.demo = demo
        self.console = console
        self.user = user
        self.s1, self.s2, self.s3 = demo.servers
        self.client = httpx.Client(timeout=REQUEST_TIMEOUT, cookies=_no_cookie_jar())
        self.laptop = Device("laptop", self.client)
        self.phone = Device("phone", self.client)
        self.expected_cart: dict[str, int] = {}
        self.old_token: str | None = None
        self.report = TourReport(demo.topology)

    def close(self) -> None:
        self.client.close()

    # --------------------------------------------------------------------- plumbing
    def record(self, title: str, server: str, http: str, held_text: str, passed: bool) -> Step:
        step = Step(len(self.report.steps) + 1, title, server, http, held_text, passed)
        self.report.steps.append(step)
        mark = "[green]PASS[/]" if passed else "[red]FAIL[/]"
        where = escape(f"({server}, {http})")
        self.console.print(f"  {mark} {step.number:>2}. {escape(title)} [dim]{where}[/]")
        return step

    def run_steps(self) -> TourReport:
        steps: list[tuple[str, str, Callable[[], tuple[str, str]]]] = [
            ("guest adds 'tea'", "server-1", self.guest_adds),
            ("log in: token renewed, cart kept", "server-1", self.login),
            ("old cookie no longer loads the session", "server-2", self.old_cookie),
            ("add 'book'", "server-2", lambda: self.add(self.s2, "book")),
            ("add 'pen'", "server-3", lambda: self.add(self.s3, "pen")),
            (f"{CONCURRENT_ADDS} concurrent adds, no lost update", "all 3", self.concurrent),
            ("second device logs in as the same user", "server-3", self.second_device),
            ("server-2 crashes (SIGKILL)", "server-2", self.crash_server),
            ("journey carries on without server-2", "server-3\u21921", self.carry_on),
        ]
        if self.demo.topology != "standalone":
            steps += [
                ("Valkey primary killed, failover", "server-1, 3", self.failover),
                ("session survived the failover", "server-1", self.survived),
                ("add 'cup' after the failover", "server-3\u21921", self.after_failover),
            ]
        steps += [
            ("log out everywhere", "server-1", self.logout_everywhere),
            ("the other device is logged out too", "server-3", self.other_device_out),
        ]
        started = time.monotonic()
        for title, server, action in steps:
            try:
                http, held_text = action()
            except (StepFailed, httpx.HTTPError, RuntimeError, ValueError, KeyError) as exc:
                self.record(title, server, "-", f"{type(exc).__name__}: {exc}", passed=False)
                self.report.error = f"step {len(self.report.steps)} failed: {exc}"
                break
            self.record(title, server, http, held_text, passed=True)
        self.report.seconds = time.monotonic() - started
        return self.report

    def _check_cart(self, device: Device, server: AppServer) -> dict[str, Any]:
        status, state = device.state(server)
        _expect(status == 200, f"{server.name} answered {status}")
        _expect(state["server"]["name"] == server.name, "another server answered")
        _expect(state["user"] == self.user, f"user is {state['user']!r}, not {self.user!r}")
        cart = state["cart"]
        _expect(cart == self.expected_cart, f"cart {cart} != expected {self.expected_cart}")
        return state

    # ------------------------------------------------------------------------ steps
    def guest_adds(self) -> tuple[str, str]:
        response = self.laptop.post(self.s1, "/cart/add", item="tea")
        _expect(response.status_code == 303, f"add answered {response.status_code}")
        _expect(self.laptop.token is not None, "no session cookie was set")
        self.expected_cart = {"tea": 1}
        status, state = self.laptop.state(self.s1)
        _expect(status == 200 and state["cart"] == self.expected_cart, f"cart {state}")
        _expect(state["user"] is None, "the guest should be anonymous")
        return f"{response.status_code} \u2192 {status}", held(state)

    def login(self) -> tuple[str, str]:
        _, before = self.laptop.state(self.s1)
        self.old_token = self.laptop.token
        response = self.laptop.post(self.s1, "/login", username=self.user)
        _expect(response.status_code == 303, f"login answered {response.status_code}")
        _expect(self.laptop.token not in (None, self.old_token), "the token was not renewed")
        state = self._check_cart(self.laptop, self.s1)
        _expect(state["session_id"] != before["session_id"], "session id unchanged")
        renewed = f"token renewed {before['session_id']} \u2192 {state['session_id']}"
        return "303 \u2192 200", f"{held(state)}; {renewed}"

    def old_cookie(self) -> tuple[str, str]:
        ghost = Device("old cookie", self.client)
        ghost.token = self.old_token
        status, state = ghost.state(self.s2)
        _expect(status == 200, f"answered {status}")
        _expect(state["user"] is None and not state["cart"], "the old token still loads")
        _expect(state["status"] == "new", f"status {state['status']}")
        return str(status), "old cookie: a fresh empty session (status new)"

    def add(self, server: AppServer, item: str) -> tuple[str, str]:
        response = self.laptop.post(server, "/cart/add", item=item)
        _expect(response.status_code == 303, f"add answered {response.status_code}")
        self.expected_cart[item] = self.expected_cart.get(item, 0) + 1
        state = self._check_cart(self.laptop, server)
        return "303 \u2192 200", held(state)

    def concurrent(self) -> tuple[str, str]:
        servers = [self.s1, self.s2, self.s3]
        jobs = [
            (servers[i % len(servers)], BURST_ITEMS[i % len(BURST_ITEMS)])
            for i in range(CONCURRENT_ADDS)
        ]

        async def burst() -> list[int]:
            async with httpx.AsyncClient(
                timeout=REQUEST_TIMEOUT, cookies=_no_cookie_jar()
            ) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            s.url + "/cart/add", data={"item": item}, headers=self.laptop.headers
                        )
                        for s, item in jobs
                    )
                )
            return [r.status_code for r in responses]

        started = time.perf_counter()
        codes = asyncio.run(burst())
        took = time.perf_counter() - started
        ok = codes.count(303)
        _expect(ok == len(jobs), f"only {ok}/{len(jobs)} adds answered 303: {codes}")
        for _, item in jobs:
            self.expected_cart[item] = self.expected_cart.get(item, 0) + 1
        state = self._check_cart(self.laptop, self.s1)
        per_item = CONCURRENT_ADDS // len(BURST_ITEMS)
        return (
            f"{ok}\u00d7303",
            f"{len(BURST_ITEMS)} fruits \u00d7 {per_item} in {took:.2f} s, 0 lost; {held(state)}",
        )

    def second_device(self) -> tuple[str, str]:
        response = self.phone.post(self.s3, "/login", username=self.user)
        _expect(response.status_code == 303, f"login answered {response.status_code}")
        status, phone = self.phone.state(self.s3)
        _expect(status == 200 and phone["user"] == self.user, "the phone is not logged in")
        state = self._check_cart(self.laptop, self.s1)
        devices = state["devices"] or []
        _expect(len(devices) == 2, f"{len(devices)} devices listed, expected 2")
        return "303 \u2192 200", f"{len(devices)} devices of {self.user}: laptop + phone"

    def crash_server(self) -> tuple[str, str]:
        self.s2.kill()
        _expect(not self.s2.alive, "server-2 still runs")
        try:
            self.laptop.state(self.s2)
        except httpx.ConnectError:
            return "refused", f"server-2 (pid {self.s2.pid}) is gone"
        raise StepFailed("server-2 still answers")

    def carry_on(self) -> tuple[str, str]:
        response = self.laptop.post(self.s3, "/cart/add", item="lamp")
        _expect(response.status_code == 303, f"add answered {response.status_code}")
        self.expected_cart["lamp"] = 1
        state = self._check_cart(self.laptop, self.s1)
        return "303 \u2192 200", held(state)

    # ------------------------------------------------------------------ failover
    def _session_primary(self) -> Node:
        valkey = self.demo.valkey
        if isinstance(valkey, SentinelSetup):
            return valkey.primary
        if isinstance(valkey, ClusterSetup):
            family = self.laptop.family
            _expect(family is not None, "no session")
            return valkey.primary_for_key("{" + str(family) + "}")
        raise StepFailed("no failover in a standalone topology")

    def failover(self) -> tuple[str, str]:
        valkey = self.demo.valkey
        old = self._session_primary()
        if isinstance(valkey, SentinelSetup):
            valkey.kill_primary()
        elif isinstance(valkey, ClusterSetup):
            valkey.kill_primary(old)
        killed = time.monotonic()
        codes: dict[str, int] = {}
        servers = [self.s1, self.s3]
        attempt = 0
        while True:
            server = servers[attempt % len(servers)]
            attempt += 1
            try:
                response = self.laptop.post(server, "/note", note="written after failover")
                code = str(response.status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            codes[code] = codes.get(code, 0) + 1
            if code == "303":
                break
            _expect(
                time.monotonic() - killed < FAILOVER_TIMEOUT,
                f"no successful write {FAILOVER_TIMEOUT:g} s after the kill ({codes})",
            )
            time.sleep(0.2)
        took = time.monotonic() - killed
        self.report.failover_seconds = round(took, 2)
        new: Node | None = None
        if isinstance(valkey, SentinelSetup | ClusterSetup):
            new = valkey.wait_for_failover(old, timeout=30)
        waiting = ", ".join(
            f"{count}\u00d7{code}" for code, count in codes.items() if code != "303"
        )
        moved = f"primary :{old.port} \u2192 :{new.port}" if new is not None else ""
        return (
            " ".join(f"{code}\u00d7{count}" for code, count in codes.items()),
            f"writable again {took:.1f} s after the kill (meanwhile {waiting or 'no errors'}); "
            + moved,
        )

    def survived(self) -> tuple[str, str]:
        state = self._check_cart(self.laptop, self.s1)
        _expect(state["note"] == "written after failover", f"note is {state['note']!r}")
        return "200", "same user and cart after the failover; " + held(state)

    def after_failover(self) -> tuple[str, str]:
        response = self.laptop.post(self.s3, "/cart/add", item="cup")
        _expect(response.status_code == 303, f"add answered {response.status_code}")
        self.expected_cart["cup"] = 1
        state = self._check_cart(self.laptop, self.s1)
        return "303 \u2192 200", held(state)

    # -------------------------------------------------------------------- logout
    def logout_everywhere(self) -> tuple[str, str]:
        response = self.laptop.post(self.s1, "/logout-everywhere")
        _expect(response.status_code == 303, f"answered {response.status_code}")
        location = response.headers.get("location", "")
        _expect("n=2" in location, f"expected 2 sessions revoked, redirect to {location!r}")
        _expect(self.laptop.token is None, "the cookie was not deleted")
        status, state = self.laptop.state(self.s1)
        _expect(status == 200 and state["user"] is None, "still logged in")
        return "303 \u2192 200", "2 sessions destroyed; laptop: anonymous, cookie deleted"

    def other_device_out(self) -> tuple[str, str]:
        status, state = self.phone.state(self.s3)
        _expect(status == 200, f"answered {status}")
        _expect(state["user"] is None and not state["cart"], "the phone is still logged in")
        return str(status), "phone: anonymous, empty session"


# --------------------------------------------------------------------------- running
def _table(report: TourReport) -> Table:
    table = Table(title=f"stickless tour: {report.topology}", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("server")
    table.add_column("HTTP")
    table.add_column("what the session held", overflow="fold")
    table.add_column("result")
    for step in report.steps:
        table.add_row(
            str(step.number),
            escape(step.title),
            escape(step.server),
            escape(step.http),
            escape(step.held),
            "[green]PASS[/]" if step.passed else "[red]FAIL[/]",
        )
    return table


@contextlib.contextmanager
def _journey(demo: Demo, console: Console, user: str) -> Iterator[Journey]:
    journey = Journey(demo, console, user)
    try:
        yield journey
    finally:
        journey.close()


def run_tour(
    topology: Topology,
    *,
    data_dir: Path,
    ports: list[int] | None = None,
    console: Console | None = None,
) -> TourReport:
    """Start the demo for ``topology``, play the journey, stop everything, print the table;
    return the report (also written to ``data_dir/tour-report.json``). Valkey keeps no data
    on disk for the tour (a temporary directory), so an interactive demo's data is safe."""
    console = console or Console()
    data_dir.mkdir(parents=True, exist_ok=True)
    user = f"alice-{secrets.token_hex(2)}"  # a fresh user each time
    console.print(f"[bold]stickless tour[/] ({topology}): starting Valkey and 3 app servers...")
    report = TourReport(topology)
    try:
        demo = launch(topology, ports=ports, log_dir=data_dir / "tour-logs")
    except RuntimeError as exc:
        report.error = f"could not start the demo: {exc}"
        console.print(f"[red]{escape(report.error)}[/]")
        (data_dir / "tour-report.json").write_text(report.to_json())
        return report
    with demo:
        console.print(f"  {describe_valkey(demo.valkey)}; durability {demo.durability}")
        for server in demo.servers:
            console.print(f"  {server.name}: {server.url} (pid {server.pid})")
        console.print(f"  journey of user [bold]{user}[/]:")
        with _journey(demo, console, user) as journey:
            report = journey.run_steps()
    console.print(_table(report))
    total = len(report.steps)
    failed = sum(1 for s in report.steps if not s.passed)
    if report.passed:
        extra = (
            f"; failover took {report.failover_seconds:.1f} s"
            if report.failover_seconds is not None
            else ""
        )
        console.print(f"[green bold]All {total} steps passed[/] in {report.seconds:.1f} s{extra}.")
    else:
        console.print(
            f"[red bold]{failed} of {total} step(s) failed[/]: {escape(report.error or '')}\n"
            f"App server logs: {data_dir / 'tour-logs'}"
        )
    (data_dir / "tour-report.json").write_text(report.to_json())
    return report
