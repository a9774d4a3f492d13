"""The ``stickless`` command against real servers: standalone, sentinel and cluster.

Sessions are made with the store API; the command's ``--json`` output must agree with what
the store holds. Values must never show up unless ``--values`` asks for them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from stickless import SessionConfig, SessionStore, codec, processes, tokens
from stickless.cli import app
from stickless.embedded import start_standalone

TOPOLOGIES = ["standalone", "sentinel", "cluster"]
FIXTURES = {
    "standalone": "stickless_valkey",
    "sentinel": "stickless_sentinel",
    "cluster": "stickless_cluster",
}
SECRET = "s3cret-value-never-shown"
STICKLESS = Path(sys.executable).parent / "stickless"


@pytest.fixture(params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest) -> tuple[str, Any]:
    setup = request.getfixturevalue(FIXTURES[request.param])
    return request.param, setup


@pytest.fixture
def prefix() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store_for(prefix: str) -> Any:
    made: list[SessionStore] = []

    def build(url: str, **options: Any) -> SessionStore:
        store = SessionStore.from_url(url, SessionConfig(key_prefix=prefix, **options))
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


def cli(url: str, prefix: str, *args: str, ids: tuple[str, ...] = ()) -> Any:
    """Run the command; ``ids`` go after ``--`` (a session id may start with "-")."""
    tail = ["--", *ids] if ids else []
    return CliRunner().invoke(app, ["--url", url, "--prefix", prefix, *args, *tail])


def cli_json(url: str, prefix: str, *args: str, ids: tuple[str, ...] = ()) -> Any:
    result = cli(url, prefix, *args, "--json", ids=ids)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def sid(session: Any) -> str:
    return tokens.token_id(session.raw_token).session_id


def data_size(session: Any) -> int:
    return sum(len(k.encode()) + len(codec.encode(v)) for k, v in session.items())


def make(store: SessionStore, user: str | None, **data: Any) -> Any:
    s = store.new()
    s.update(data)
    s["secret"] = SECRET
    if user is not None:
        s.user_id = user
    assert store.save(s).outcome == "saved"
    return s


# ---------------------------------------------------------------------------- basics
def test_console_script_help() -> None:
    done = subprocess.run(
        [str(STICKLESS), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    for command in ("server", "demo", "sessions", "users", "stats", "health", "events"):
        assert command in done.stdout


def test_bad_url_is_one_line_and_exit_2(prefix: str) -> None:
    result = cli("http://nope", prefix, "sessions", "ls")
    assert result.exit_code == 2
    assert "error" in result.stderr and "Traceback" not in result.output


def test_unreachable_store_exit_2(prefix: str) -> None:
    result = cli("redis://127.0.0.1:1/0", prefix, "sessions", "ls")
    assert result.exit_code == 2
    assert "unavailable" in result.stderr


def test_url_from_environment(stickless_valkey: Any, prefix: str, store_for: Any) -> None:
    store = store_for(stickless_valkey.url)
    s = make(store, "env")
    result = CliRunner().invoke(
        app,
        ["sessions", "ls", "--json"],
        env={"STICKLESS_URL": stickless_valkey.url, "STICKLESS_PREFIX": prefix},
    )
    assert result.exit_code == 0, result.output
    assert [row["session_id"] for row in json.loads(result.stdout)] == [sid(s)]


# -------------------------------------------------------------------------- sessions
def test_sessions_ls_agrees_with_the_store(
    topology: tuple[str, Any], prefix: str, store_for: Any
) -> None:
    kind, setup = topology
    store = store_for(setup.url)
    made = [
        make(store, "alice", cart=["apple"], n=1),
        make(store, "alice", theme="dark"),
        make(store, "bob"),
        make(store, None, a=1, b=2, c=3),
    ]
    rows = cli_json(setup.url, prefix, "sessions", "ls")
    by_id = {row["session_id"]: row for row in rows}
    assert set(by_id) == {sid(s) for s in made}
    for s in made:
        row = by_id[sid(s)]
        assert row["user_id"] == s.user_id
        assert row["keys"] == len(s)
        assert row["size"] == data_size(s)
        assert row["created_at"] == s.created_at.isoformat()
        assert 0 < row["ttl_ms"] <= 30 * 60 * 1000
        assert row["memory"] > 0
    if kind == "cluster":
        primaries = {f"{n.host}:{n.port}" for n in setup.primaries}
        assert {row["node"] for row in rows} <= primaries

    alice = cli_json(setup.url, prefix, "sessions", "ls", "--user", "alice")
    assert {row["session_id"] for row in alice} == {sid(made[0]), sid(made[1])}
    assert len(cli_json(setup.url, prefix, "sessions", "ls", "--limit", "1")) == 1

    table = cli(setup.url, prefix, "sessions", "ls")
    assert table.exit_code == 0
    assert "alice" in table.stdout and SECRET not in table.stdout
    assert SECRET not in json.dumps(rows)


MARKUP_USER = "eve[/][link=https://evil.example]hidden[/link][bold]"
ESCAPES = "\x1b[2J\x1b]52;c;ZXZpbA==\x07\x9b31m\u202e"  # clear, OSC 52, 8-bit CSI, RLO
SHOWN_ESCAPES = r"\x1b[2J\x1b]52;c;ZXZpbA==\x07\x9b31m\u202e"


def wide(url: str, prefix: str, *args: str, ids: tuple[str, ...] = ()) -> Any:
    """``cli`` on a wide terminal (no folding), stdout and stderr apart."""
    tail = ["--", *ids] if ids else []
    return CliRunner().invoke(
        app, ["--url", url, "--prefix", prefix, *args, *tail], env={"COLUMNS": "400"}
    )


def test_user_data_is_printed_as_text_never_as_markup_or_escapes(
    stickless_valkey: Any, prefix: str, store_for: Any
) -> None:
    """A user id holding Rich markup used to crash ``sessions ls`` (``[/]``) or hide text
    (``[link=...]``); keys and values holding ESC sequences reached the terminal (screen
    clear, OSC 52 clipboard write). Everything from the store now prints as itself, with
    control characters as visible ``\x1b``-style escapes, in tables, messages and JSON."""
    url = stickless_valkey.url
    store = store_for(url)
    s = store.new()
    s["k" + ESCAPES] = "v" + ESCAPES
    s["[red]not red[/red]"] = 1
    s.user_id = MARKUP_USER
    store.save(s)
    # A user id with ESC cannot be set through the store (it refuses control characters),
    # but Redis may hold one written by anything else: put it there behind the store's back.
    raw = store.new()
    raw["x"] = 1
    raw.user_id = "placeholder"
    store.save(raw)
    r = redis.Redis.from_url(url)
    try:
        (raw_key,) = [
            k
            for k in r.scan_iter(f"{prefix}:*")
            if r.type(k) == b"hash" and r.hget(k, "m:u") == b"placeholder"
        ]
        r.hset(raw_key, "m:u", "mallory" + ESCAPES)
    finally:
        r.close()

    listing = wide(url, prefix, "sessions", "ls")
    assert listing.exit_code == 0, listing.output
    assert MARKUP_USER in listing.stdout  # printed as typed, nothing hidden or swallowed
    assert "mallory" + SHOWN_ESCAPES in listing.stdout

    shown = wide(url, prefix, "sessions", "show", "--values", ids=(sid(s),))
    assert shown.exit_code == 0, shown.output
    assert MARKUP_USER in shown.stdout and "[red]not red[/red]" in shown.stdout
    assert "k" + SHOWN_ESCAPES in shown.stdout
    # values print as their JSON, whose own escapes cover C0; the rest is escaped as above
    assert r'"v\u001b[2J\u001b]52;c;ZXZpbA==\u0007\x9b31m\u202e"' in shown.stdout

    users = wide(url, prefix, "users", "show", MARKUP_USER)
    assert users.exit_code == 0 and MARKUP_USER in users.stdout and sid(s) in users.stdout
    missing = wide(url, prefix, "users", "show", "nobody[/]" + ESCAPES)
    assert missing.exit_code == 0 and "nobody[/]" + SHOWN_ESCAPES in missing.stdout
    as_json = wide(url, prefix, "sessions", "show", "--values", "--json", ids=(sid(s),))
    assert json.loads(as_json.stdout)["values"]["k" + ESCAPES] == "v" + ESCAPES  # exact
    assert "\\u009b" in as_json.stdout and "\\u202e" in as_json.stdout  # escaped in JSON

    refused = wide(url, prefix, "users", "revoke", MARKUP_USER, "--keep", sid(raw), "--yes")
    assert refused.exit_code == 1, refused.output
    assert f"is not one of {MARKUP_USER!r}'s sessions" in refused.stderr
    assert "nothing revoked" in refused.stderr and store.load(s.token) is not None
    revoked = wide(url, prefix, "users", "revoke", MARKUP_USER, "--yes")
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked 1 session(s) of {MARKUP_USER!r}" in revoked.stdout

    for result in (listing, shown, users, missing, refused, revoked, as_json):
        for raw_char in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw_char not in result.stdout and raw_char not in result.stderr


def test_sessions_ls_empty(stickless_valkey: Any, prefix: str) -> None:
    assert cli_json(stickless_valkey.url, prefix, "sessions", "ls") == []
    assert "no sessions" in cli(stickless_valkey.url, prefix, "sessions", "ls").stdout


def test_sessions_show_values_only_when_asked(
    topology: tuple[str, Any], prefix: str, store_for: Any
) -> None:
    _, setup = topology
    store = store_for(setup.url)
    s = make(store, "dave", cart=["pear"], visits=3)
    shown = cli(setup.url, prefix, "sessions", "show", ids=(sid(s),))
    assert shown.exit_code == 0, shown.output
    assert "cart" in shown.stdout and "visits" in shown.stdout and "dave" in shown.stdout
    assert SECRET not in shown.stdout and "pear" not in shown.stdout

    meta = cli_json(setup.url, prefix, "sessions", "show", ids=(sid(s),))
    assert meta["key_names"] == sorted(s) and meta["keys"] == len(s)
    assert meta["user_id"] == "dave" and meta["size"] == data_size(s)
    assert meta["key_sizes"] == {k: len(codec.encode(v)) for k, v in s.items()}
    assert "values" not in meta and SECRET not in json.dumps(meta)

    full = cli_json(setup.url, prefix, "sessions", "show", "--values", ids=(sid(s),))
    assert full["values"] == dict(s)
    table = cli(setup.url, prefix, "sessions", "show", "--values", ids=(sid(s),))
    assert SECRET in table.stdout

    missing = cli(setup.url, prefix, "sessions", "show", "AAAAAAAAAAA")
    assert missing.exit_code == 1
    assert cli(setup.url, prefix, "sessions", "show", "not-an-id").exit_code == 2


def test_sessions_rm_destroys_like_the_store(
    topology: tuple[str, Any], prefix: str, store_for: Any
) -> None:
    _, setup = topology
    store = store_for(setup.url)
    s = make(store, "erin", n=1)
    other = make(store, "erin", n=2)
    loaded = store.load(s.token)
    assert loaded is not None

    result = cli_json(setup.url, prefix, "sessions", "rm", "--yes", ids=(sid(s),))
    assert result == [{"session_id": sid(s), "destroyed": True}]
    assert store.load(s.token) is None
    loaded["late"] = "write"  # a request still running: must not bring it back
    assert store.save(loaded).outcome == "gone"
    assert [info.session_id for info in store.sessions_for("erin")] == [sid(other)]
    assert {row["session_id"] for row in cli_json(setup.url, prefix, "sessions", "ls")} == {
        sid(other)
    }
    again = cli(setup.url, prefix, "sessions", "rm", "-y", ids=(sid(s),))
    assert again.exit_code == 1 and "not found" in again.stdout


def test_session_id_survives_a_renewal(stickless_valkey: Any, prefix: str, store_for: Any) -> None:
    store = store_for(stickless_valkey.url)
    s = make(store, "fred")
    old_id, old_token = sid(s), s.token
    s.renew()
    store.save(s)
    assert old_id == sid(s) and old_token != s.token
    # the id names the session, whatever its current token
    assert cli_json(stickless_valkey.url, prefix, "sessions", "rm", "-y", ids=(old_id,))[0][
        "destroyed"
    ]
    assert store.load(s.token) is None


def test_ids_starting_with_a_dash(stickless_valkey: Any, prefix: str, store_for: Any) -> None:
    store = store_for(stickless_valkey.url)
    for _ in range(2000):  # 1 family in 64 starts with "-"
        s = make(store, None)
        if sid(s).startswith("-"):
            break
        store.destroy(s.token)
    assert sid(s).startswith("-")
    url = stickless_valkey.url
    assert cli_json(url, prefix, "sessions", "show", ids=(sid(s),))["session_id"] == sid(s)
    assert cli_json(url, prefix, "sessions", "rm", "-y", ids=(sid(s),))[0]["destroyed"] is True


# ----------------------------------------------------------------------------- users
def test_users_show_and_revoke(topology: tuple[str, Any], prefix: str, store_for: Any) -> None:
    _, setup = topology
    store = store_for(setup.url)
    made = [make(store, "carol", i=i) for i in range(3)]
    make(store, "mallory")
    listed = cli_json(setup.url, prefix, "users", "show", "carol")
    assert [row["session_id"] for row in listed] == [
        info.session_id for info in store.sessions_for("carol")
    ]
    assert {row["session_id"] for row in listed} == {sid(s) for s in made}
    assert all(row["user_id"] == "carol" for row in listed)

    keep = sid(made[1])
    revoked = cli_json(setup.url, prefix, "users", "revoke", "carol", f"--keep={keep}", "--yes")
    assert revoked == {"user": "carol", "revoked": 2, "kept": keep}
    assert [info.session_id for info in store.sessions_for("carol")] == [keep]
    assert store.load(made[0].token) is None and store.load(made[1].token) is not None

    asked = CliRunner().invoke(
        app, ["--url", setup.url, "--prefix", prefix, "users", "revoke", "carol"], input="n\n"
    )
    assert asked.exit_code == 1 and "nothing done" in asked.stderr  # asked, and said no
    assert "Log 'carol' out of 1 session(s)?" in asked.stderr
    assert len(store.sessions_for("carol")) == 1
    again = CliRunner().invoke(
        app, ["--url", setup.url, "--prefix", prefix, "users", "revoke", "carol"], input="y\n"
    )
    assert again.exit_code == 0 and "revoked 1 session" in again.stdout
    assert store.sessions_for("carol") == []
    assert len(store.sessions_for("mallory")) == 1
    assert "no sessions" in cli(setup.url, prefix, "users", "show", "carol").stdout


# ----------------------------------------------------------------------------- stats
def test_stats_counts_every_primary(topology: tuple[str, Any], prefix: str, store_for: Any) -> None:
    kind, setup = topology
    store = store_for(setup.url)
    made = [make(store, f"u{i % 3}", i=i) for i in range(7)]
    store.destroy(made[0].token)  # one tombstone
    stats = cli_json(setup.url, prefix, "stats")
    assert stats["topology"] == kind and stats["prefix"] == prefix
    assert stats["sessions"] == 6
    assert stats["tombstones"] == 1
    assert stats["user_indexes"] == 3
    assert stats["no_ttl"] == 0
    assert sum(bucket["count"] for bucket in stats["ttl"]) == 6
    assert stats["ttl"][3]["label"] == "15-30m" and stats["ttl"][3]["count"] == 6
    assert stats["memory"]["sampled"] == 6 and stats["memory"]["mean"] > 0
    assert sum(node["sessions"] for node in stats["nodes"]) == 6
    assert len(stats["nodes"]) == (3 if kind == "cluster" else 1)

    sampled = cli_json(setup.url, prefix, "stats", "--sample", "3")
    assert sampled["memory"]["sampled"] <= 3 + len(sampled["nodes"])

    table = cli(setup.url, prefix, "stats")
    assert table.exit_code == 0
    assert "live sessions" in table.stdout and "remaining TTL" in table.stdout
    assert SECRET not in table.stdout


# ---------------------------------------------------------------------------- health
def test_health_of_each_topology(topology: tuple[str, Any], prefix: str) -> None:
    kind, setup = topology
    report = cli_json(setup.url, prefix, "health")
    assert report["ok"] is True and report["topology"] == kind, report["problems"]
    roles = sorted(node["role"] for node in report["nodes"])
    if kind == "standalone":
        assert roles == ["primary"]
    elif kind == "sentinel":
        assert roles == ["primary", "replica", "replica", "sentinel", "sentinel", "sentinel"]
        primary = f"{setup.primary.host}:{setup.primary.port}"
        replicas = [n for n in report["nodes"] if n["role"] == "replica"]
        assert all(n["replica_of"] == primary and n["link"] == "up" for n in replicas)
        assert all(n["lag_bytes"] is not None and n["lag_bytes"] >= 0 for n in replicas)
    else:
        assert roles == ["primary"] * 3 + ["replica"] * 3
        assert sum(n["slots"] for n in report["nodes"] if n["role"] == "primary") == 16384
        assert all(n["link"] == "up" for n in report["nodes"] if n["role"] == "replica")
    assert all(n["latency_ms"] is not None for n in report["nodes"])
    table = cli(setup.url, prefix, "health")
    assert table.exit_code == 0 and "healthy" in table.stdout


def test_health_reports_problems_with_exit_1(stickless_sentinel: Any, prefix: str) -> None:
    down = cli("redis://127.0.0.1:1/0", prefix, "health", "--json")
    assert down.exit_code == 1
    assert json.loads(down.stdout)["ok"] is False

    # one sentinel of the URL is dead: the others still answer, but it is a problem
    url = stickless_sentinel.url.replace("redis+sentinel://", "redis+sentinel://127.0.0.1:1,")
    result = cli(url, prefix, "health", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert any("127.0.0.1:1" in problem for problem in report["problems"])
    assert [n["role"] for n in report["nodes"]].count("replica") == 2
    assert "UNHEALTHY" in cli(url, prefix, "health").stdout


# ---------------------------------------------------------------------------- events
def _numpat(client: Any) -> int:
    return int(client.execute_command("PUBSUB", "NUMPAT"))


@pytest.mark.stickless_requires(7, 0, reason="keyspace events for new keys: the n flag")
def test_events_command_tails_real_events(
    stickless_valkey: Any, stickless_cluster: Any, prefix: str, store_for: Any
) -> None:
    for url, nodes in (
        (stickless_valkey.url, [stickless_valkey.node]),
        (stickless_cluster.url, stickless_cluster.primaries),
    ):
        clients = [node.client() for node in nodes]
        baseline = [_numpat(c) for c in clients]
        store = store_for(url)
        made: list[Any] = []

        def act(
            store: SessionStore = store,
            clients: list[Any] = clients,
            baseline: list[int] = baseline,
            made: list[Any] = made,
        ) -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if all(_numpat(c) > b for c, b in zip(clients, baseline, strict=True)):
                    break
                time.sleep(0.02)
            s = make(store, "ev")
            made.append(sid(s))
            s.renew()
            store.save(s)
            made.append(sid(s))
            store.destroy(s.token)

        worker = threading.Thread(target=act)
        worker.start()
        result = cli(url, prefix, "events", "--count", "3", "--timeout", "15", "--json")
        worker.join()
        for c in clients:
            c.close()
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [e["kind"] for e in lines] == ["created", "renewed", "destroyed"]
        assert [e["session_id"] for e in lines] == [made[0]] * 3  # the id survives renewals
        assert "listening on" in result.stderr


@pytest.mark.stickless_requires(7, 0, reason="keyspace events for new keys: the n flag")
def test_events_command_times_out_quietly(stickless_valkey: Any, prefix: str) -> None:
    started = time.monotonic()
    result = cli(stickless_valkey.url, prefix, "events", "--timeout", "0.3")
    assert result.exit_code == 0 and result.stdout == ""
    assert time.monotonic() - started < 5


def test_events_command_refuses_when_notifications_are_off(prefix: str) -> None:
    with start_standalone() as server:
        admin = server.node.client()
        admin.config_set("notify-keyspace-events", "")
        result = cli(server.url, prefix, "events", "--no-enable", "--timeout", "5")
        assert result.exit_code == 2
        assert "not enabled" in result.stderr and "no node publishes" in result.stderr
        assert admin.config_get("notify-keyspace-events")["notify-keyspace-events"] == ""
        admin.close()


# ---------------------------------------------------------------------- server, demo
def test_server_runs_until_interrupted(tmp_path: Path) -> None:
    port = processes.free_ports(1)[0]
    proc = subprocess.Popen(
        [str(STICKLESS), "server", "--port", str(port), "--aof", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        url = None
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("URL: "):
                url = line.split("URL: ", 1)[1].strip()
                break
        assert url == f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.set("k", "v")
        client.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # --aof with --data-dir kept the data (one appendonly.aof before Redis 7.0)
    assert (tmp_path / "appendonlydir").exists() or (tmp_path / "appendonly.aof").exists()
    with pytest.raises(OSError):  # the server is gone
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_server_options_only_for_standalone() -> None:
    result = CliRunner().invoke(app, ["server", "--topology", "cluster", "--port", "7000"])
    assert result.exit_code == 2 and "standalone only" in result.stderr


def test_demo_delegates_to_the_demo_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def run(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 3

    monkeypatch.setitem(sys.modules, "stickless.demo", types.SimpleNamespace(run=run))
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 3
    assert calls[-1] == {
        "topology": "standalone",
        "tour": False,
        "data_dir": Path(".stickless/demo-data"),
        "ports": None,
    }
    result = CliRunner().invoke(
        app,
        ["demo", "--topology", "cluster", "--tour", "--data-dir", "/tmp/x", "--port", "7000"],
    )
    assert result.exit_code == 3
    assert calls[-1] == {
        "topology": "cluster",
        "tour": True,
        "data_dir": Path("/tmp/x"),
        "ports": [7000],
    }


# ------------------------------------------------------------------ newcomer's papercuts
def test_destructive_commands_ask_first(stickless_valkey: Any, prefix: str, store_for: Any) -> None:
    store = store_for(stickless_valkey.url)
    s = make(store, "dave")
    result = cli(stickless_valkey.url, prefix, "sessions", "rm", ids=(sid(s),))  # no input
    assert result.exit_code == 1 and "nothing done" in result.stderr
    assert store.load(s.token) is not None
    result = cli(stickless_valkey.url, prefix, "users", "revoke", "dave")
    assert result.exit_code == 1 and store.load(s.token) is not None


@pytest.mark.parametrize(
    "args",
    [
        ("sessions", "ls", "--limit", "-1"),
        ("stats", "--sample", "-5"),
        ("health", "--pings", "0"),
        ("events", "--count", "0"),
    ],
)
def test_negative_numbers_are_refused(args: tuple[str, ...], prefix: str) -> None:
    result = cli("redis://127.0.0.1:1/0", prefix, *args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and "Traceback" not in result.output


COMMANDS = [
    (),
    ("server",),
    ("demo",),
    ("check",),
    ("stats",),
    ("health",),
    ("events",),
    ("sessions",),
    ("sessions", "ls"),
    ("sessions", "show"),
    ("sessions", "rm"),
    ("users",),
    ("users", "show"),
    ("users", "revoke"),
]


def _help_words(command: Any) -> set[str]:
    """Every word of a command's own help texts (its docstring and its options')."""
    texts = [command.help or ""]
    for param in command.params:
        texts.append(getattr(param, "help", None) or "")
    return {w for text in texts for w in text.split() if len(w) > 3}


@pytest.mark.parametrize("columns", [80, 60])
def test_help_never_cuts_a_word(columns: int) -> None:
    import typer.main

    root = typer.main.get_command(app)
    for path in COMMANDS:
        command: Any = root
        for name in path:
            command = command.commands[name]
        done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
        assert done.exit_code == 0, (path, done.output)
        text = done.stdout
        assert "\u2026" not in text, (path, text)  # rich's ellipsis: something was cut
        assert all(len(line) <= columns for line in text.splitlines()), (path, text)
        shown_words = set(re.split(r"[\s\u2500-\u257f]+", text))
        for word in _help_words(command):
            assert word in shown_words, (path, word, text)


def test_tables_fit_80_columns(stickless_valkey: Any, prefix: str, store_for: Any) -> None:
    store = store_for(stickless_valkey.url)
    s = make(store, "a-rather-long-user-id@example.org", cart=["apple"] * 10)
    runner = CliRunner()
    base = ["--url", stickless_valkey.url, "--prefix", prefix]
    for args in (
        ["sessions", "ls"],
        ["sessions", "show", "--values", "--", sid(s)],
        ["users", "show", "a-rather-long-user-id@example.org"],
        ["stats"],
        ["health"],
        ["check"],
    ):
        done = runner.invoke(app, [*base, *args], env={"COLUMNS": "80"})
        assert done.exit_code == 0, (args, done.output)
        lines = done.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), (args, done.stdout)
        assert "\u2026" not in done.stdout, (args, done.stdout)
        if args[0] == "sessions" and args[1] == "ls":
            assert sid(s) in done.stdout  # the whole id, on one line: copy-pasteable
