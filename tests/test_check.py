"""store.check() and `stickless check`: every misconfiguration named, in one line; and the
errors a misconfigured store raises while serving (StoreMisconfigured, logged once)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from typer.testing import CliRunner

from helpers import takes_hsetex, trips
from stickless import (
    AsyncSessionStore,
    ConfigurationError,
    SessionConfig,
    SessionStore,
    StoreMisconfigured,
    StoreUnavailable,
    TooManySessions,
    errors,
)
from stickless.cli import app
from stickless.embedded import (
    ClusterSetup,
    SentinelSetup,
    ServerBinary,
    Standalone,
    start_standalone,
)
from stickless.store import check as checks
from stickless.store.plan import UPDATE, ScriptCall

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cr#t/p@ss:w?rd%"
"""A password with every character a URL cares about."""


@pytest.fixture(autouse=True)
def fresh_log_once() -> None:
    """Each test sees the first report of each cause (the store logs a cause only once per
    process, and tests share a server's address)."""
    errors._reported.clear()


@pytest.fixture(scope="module")
def server() -> Iterator[Standalone]:
    """A server of this module's own: its tests change ACLs and settings."""
    with start_standalone() as node:
        yield node


@pytest.fixture
def admin(server: Standalone) -> Iterator[redis.Redis]:
    client = server.node.client()
    yield client
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("notify-keyspace-events", "")
    client.config_set("requirepass", "")
    for user in client.acl_users():
        if user != "default":
            client.acl_deluser(user)  # type: ignore[arg-type]  # the node's client decodes: a str
    client.close()


def url_for(server: Standalone, user: str | None = None, password: str | None = None) -> str:
    creds = ""
    if user is not None or password is not None:
        creds = f"{quote(user or '', safe='')}:{quote(password or '', safe='')}@"
    return f"redis://{creds}{server.node.host}:{server.node.port}/0"


def checked(url: str, config: SessionConfig | None = None) -> checks.CheckReport:
    store = SessionStore.from_url(url, config or SessionConfig(retries=0))
    try:
        return store.check()
    finally:
        store.close()


def add_user(admin: redis.Redis, name: str, rules: str) -> None:
    admin.execute_command("ACL", "SETUSER", name, "on", f">{PASSWORD}", *rules.split())  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------- all is well
def test_a_fresh_server_is_usable(stickless_url: str, stickless_server: object) -> None:
    report = checked(stickless_url)
    assert report.ok, report.findings
    assert report.cause is None
    assert report.server == str(stickless_server)
    assert report.role == "primary" and report.topology == "standalone"
    assert report.eviction_policy == "noeviction"
    levels = {f.topic: f.level for f in report.findings}
    assert levels["commands"] == "ok" and levels["eviction"] == "ok"
    assert report.acl_method in ("ACL DRYRUN", "tried")
    report.raise_for_errors()  # nothing to raise


def test_the_async_store_runs_the_same_check(stickless_url: str) -> None:
    async def main() -> checks.CheckReport:
        store = AsyncSessionStore.from_url(stickless_url)
        try:
            return await store.check()
        finally:
            await store.aclose()

    report = asyncio.run(main())
    sync = checked(stickless_url)
    assert report.ok
    assert [(f.level, f.topic) for f in report.findings] == [
        (f.level, f.topic) for f in sync.findings
    ]


def test_the_check_leaves_no_key(stickless_url: str) -> None:
    checked(stickless_url)
    client = redis.Redis.from_url(stickless_url)
    assert client.dbsize() == 0
    client.close()


def test_cluster_and_sentinel(
    stickless_cluster: ClusterSetup, stickless_sentinel: SentinelSetup
) -> None:
    cluster = checked(stickless_cluster.url)
    assert cluster.ok, cluster.findings
    assert "cluster of 3 primaries" in cluster.findings[1].message
    sentinel = checked(stickless_sentinel.url, SessionConfig(durability="replicated"))
    assert sentinel.ok, sentinel.findings
    assert sentinel.topology == "sentinel" and sentinel.replicas == 2


# --------------------------------------------------------------- misconfigurations
def test_nothing_listens(server: Standalone) -> None:
    report = checked("redis://127.0.0.1:1/0")
    assert not report.ok
    assert report.cause is not None and report.cause.startswith("cannot connect to redis://")
    with pytest.raises(StoreUnavailable) as caught:
        report.raise_for_errors()
    assert not isinstance(caught.value, StoreMisconfigured)


def test_wrong_password(server: Standalone, admin: redis.Redis) -> None:
    add_user(admin, "app", "allkeys +@all")
    report = checked(url_for(server, "app", "not-it"))
    assert report.cause is not None and "WRONGPASS" in report.cause
    assert "store URL" in report.cause and "percent-encode" in report.cause
    assert "not-it" not in str(report.findings)
    with pytest.raises(StoreMisconfigured) as caught:
        report.raise_for_errors()
    assert caught.value.code == "WRONGPASS"


def test_a_password_with_special_characters_works_percent_encoded(
    server: Standalone, admin: redis.Redis
) -> None:
    add_user(admin, "app", "allkeys +@all")
    assert checked(url_for(server, "app", PASSWORD)).ok


def test_no_password_given(server: Standalone, admin: redis.Redis) -> None:
    admin.config_set("requirepass", PASSWORD)
    try:
        report = checked(url_for(server))
    finally:
        admin.config_set("requirepass", "")
    assert report.cause is not None and "NOAUTH" in report.cause
    assert "redis://USER:PASSWORD@" in report.cause


def test_commands_denied_by_the_acl(server: Standalone, admin: redis.Redis) -> None:
    add_user(admin, "app", "~stickless:* -@all +ping +hello +eval +hgetall +pttl +hmget +zrange")
    report = checked(url_for(server, "app", PASSWORD))
    assert report.acl_method == "tried"  # the user may not run ACL DRYRUN
    assert "EVALSHA" in report.denied and "HSET" in report.denied
    assert "HGETALL" not in report.denied and "EVAL" not in report.denied
    assert report.cause is not None and "may not run" in report.cause


def test_dry_run_names_the_denied_commands_without_writing(
    server: Standalone, admin: redis.Redis, stickless_server: object
) -> None:
    """The default user may run ACL DRYRUN (Redis >= 7, Valkey): another user's ACL is
    checked for it without running anything."""
    if not checks.acl_rules():  # pragma: no cover
        return
    add_user(admin, "app", "~stickless:* -@all +ping +hello +eval +evalsha")
    report = checks.CheckReport("x", "standalone")
    op = checks.plan(SessionConfig(), "x", "standalone", "app")
    store = SessionStore.from_url(url_for(server), SessionConfig(retries=0))
    try:
        report = _drive(op, store)
    finally:
        store.close()
    if report.acl_method != "ACL DRYRUN":
        pytest.skip(f"no ACL DRYRUN on {stickless_server}")
    assert "HSET" in report.denied and "EVAL" not in report.denied


def _drive(op: checks.CheckPlan, store: SessionStore) -> checks.CheckReport:
    """Run a plan made for another user with this store's client (as checks.run does)."""
    client = store.client
    try:
        probe = next(op)
        while True:
            try:
                reply = client.execute_command(*probe.args)
            except redis.RedisError as exc:
                reply = exc
            probe = op.send({"x": reply} if probe.primaries else reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def test_the_documented_acl_is_enough(server: Standalone, admin: redis.Redis) -> None:
    """The ACL in docs/production.md (made by acl_rules()) lets a store do everything, and
    the check passes for that user."""
    config = SessionConfig(durability="replicated", min_replicas=0, retries=0)
    add_user(admin, "app", checks.acl_rules(config))
    url = url_for(server, "app", PASSWORD)
    report = checked(url, config)
    assert report.ok, report.findings
    assert not report.denied
    store = SessionStore.from_url(url, config)
    s = store.new()
    s["cart"] = ["apple"]
    s.incr("views")
    store.save(s)
    s.login("alice")
    store.save(s)
    loaded = store.load(s.token)
    assert loaded is not None and loaded["cart"] == ["apple"]
    loaded.incr("views")
    store.save(loaded)
    assert [i.session_id for i in store.sessions_for("alice")]
    assert store.revoke_user("alice") == 1
    assert store.load(s.token) is None
    store.close()
    for mode in ("evict_oldest", "refuse"):  # a cap on sessions per user: cap.lua, destroys
        capped = config.with_options(max_sessions_per_user=1, on_limit=mode)
        with SessionStore.from_url(url, capped) as store:
            outcomes = []
            for _ in range(2):
                s = store.new()
                s.login(f"bob-{mode}")
                try:
                    outcomes.append(str(store.save(s).outcome))
                except TooManySessions:
                    outcomes.append("refused")
            assert outcomes == ["saved", "saved" if mode == "evict_oldest" else "refused"]


def test_a_denied_save_is_misconfigured_and_logged_once(
    server: Standalone, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    add_user(admin, "app", "~stickless:* -@all +ping +hello +hgetall +pttl")
    store = SessionStore.from_url(url_for(server, "app", PASSWORD), SessionConfig(retries=0))
    caplog.set_level(logging.ERROR, "stickless.store")

    def refused_saves(count: int) -> list[str]:
        caplog.clear()
        for _ in range(count):
            s = store.new()
            s["a"] = 1
            with pytest.raises(StoreMisconfigured) as caught:
                store.save(s)
            assert caught.value.code == "NOPERM"
            assert "ACL" in caught.value.setting
        return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]

    first = refused_saves(3)  # EVAL (the first time, by source), then EVALSHA: two causes
    assert 1 <= len(first) <= 2 and len(set(first)) == len(first), first
    assert all("NOPERM" in m and PASSWORD not in m for m in first)
    assert refused_saves(3) == []  # each cause was logged once
    assert store.load("A" * 11 + "." + "B" * 43) is None  # reads are allowed
    store.close()


def test_a_command_denied_inside_a_script_is_misconfigured(
    server: Standalone, admin: redis.Redis
) -> None:
    """Inside a script an ACL refusal is an ERR that reads differently on each server
    (Redis 6.2, 7.0, Valkey): it is still a StoreMisconfigured, never a 500-style bug."""
    rules = checks.acl_rules(SessionConfig()).replace(" +hset ", " ")
    add_user(admin, "app", rules)
    store = SessionStore.from_url(url_for(server, "app", PASSWORD), SessionConfig(retries=0))
    s = store.new()
    s["a"] = 1
    with pytest.raises(StoreMisconfigured) as caught:
        store.save(s)
    assert caught.value.code == "NOPERM"
    report = store.check()
    assert report.denied == ["HSET"], report.findings
    store.close()


def test_wrong_password_while_serving(
    server: Standalone, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    add_user(admin, "app", "allkeys +@all")
    store = SessionStore.from_url(url_for(server, "app", "wrong-" + PASSWORD), SessionConfig())
    caplog.set_level(logging.ERROR, "stickless.store")
    for _ in range(2):
        with pytest.raises(StoreMisconfigured) as caught:
            store.load("A" * 11 + "." + "B" * 43)
        assert caught.value.applied is False
        assert isinstance(caught.value, StoreUnavailable)  # still caught as one
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "WRONGPASS" in errors[0] and PASSWORD not in errors[0]
    store.close()


def test_replicated_durability_without_replicas(stickless_url: str) -> None:
    report = checked(stickless_url, SessionConfig(durability="replicated", min_replicas=1))
    assert report.cause is not None and "min_replicas=1" in report.cause


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_evicting_policies_warn(server: Standalone, admin: redis.Redis, policy: str) -> None:
    admin.config_set("maxmemory-policy", policy)
    report = checked(url_for(server))
    assert report.ok  # a warning, not an error
    assert report.eviction_policy == policy
    assert any(policy in w and "evicts live sessions" in w for w in report.warnings)


def test_keyspace_event_flags(
    server: Standalone, admin: redis.Redis, stickless_server: object
) -> None:
    report = checked(url_for(server))
    assert report.keyspace_events == ""
    events = next(f for f in report.findings if f.topic == "events")
    assert events.level == "info"
    if "Kgxn" in events.message:  # Redis >= 7 / Valkey: enable them and look again
        admin.config_set("notify-keyspace-events", "Kgxn")
        again = next(f for f in checked(url_for(server)).findings if f.topic == "events")
        assert again.level == "ok"
    else:
        assert "Redis >= 7.0" in events.message, events


def test_the_url_names_a_replica(stickless_sentinel: SentinelSetup) -> None:
    replica = stickless_sentinel.replicas[0]
    report = checked(replica.url)
    assert report.cause is not None and "names a replica" in report.cause


def test_a_redis_url_naming_a_sentinel_or_a_cluster_node(
    stickless_sentinel: SentinelSetup, stickless_cluster: ClusterSetup
) -> None:
    sentinel = checked(stickless_sentinel.sentinels[0].url)
    assert sentinel.cause is not None and "redis+sentinel://" in sentinel.cause
    node = checked(stickless_cluster.primaries[0].url)
    assert node.cause is not None and "redis+cluster://" in node.cause


# ------------------------------------------------------------------ the command line
def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    return result.exit_code, result.stdout, result.stderr


def test_cli_check_ok(stickless_url: str) -> None:
    code, out, err = cli("check", "--url", stickless_url)
    assert code == 0, out + err
    assert "connected" in out and "every command stickless sends is allowed" in out
    assert all(len(line) <= 80 for line in out.splitlines())


def test_cli_check_exit_codes_and_one_line_cause(server: Standalone, admin: redis.Redis) -> None:
    code, _, err = cli("check", "--url", "redis://127.0.0.1:1/0")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: cannot connect")
    add_user(admin, "app", "allkeys +@all")
    code, _, err = cli("check", "--url", url_for(server, "app", "wrong"))
    assert code == 1 and "WRONGPASS" in err.strip().splitlines()[-1]
    code, _, err = cli("check", "--url", url_for(server), "--durability", "replicated")
    assert code == 1 and "min_replicas" in err
    admin.config_set("maxmemory-policy", "allkeys-lru")
    assert cli("check", "--url", url_for(server))[0] == 0
    code, _, err = cli("check", "--url", url_for(server), "--strict")
    assert code == 1 and "allkeys-lru" in err


def test_cli_check_json(stickless_url: str) -> None:
    import json

    code, out, _ = cli("check", "--url", stickless_url, "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["cause"] is None
    assert {f["topic"] for f in data["findings"]} >= {"connect", "commands"}


def test_a_url_with_an_unencoded_password_says_to_percent_encode() -> None:
    with pytest.raises(ConfigurationError, match="percent-encode"):
        SessionStore.from_url("redis://app:p@ss/w#rd@127.0.0.1:6379/0")


# ------------------------------------------------------------ clients we are given
def test_a_client_that_retries_is_refused(stickless_url: str) -> None:
    host, port = stickless_url.split("//")[1].split("/", maxsplit=1)[0].split(":")
    with pytest.raises(ConfigurationError, match=r"Retry\(NoBackoff\(\), 0\)"):
        SessionStore(redis.Redis(host=host, port=int(port)))  # redis-py retries by default
    with pytest.raises(ConfigurationError, match="resends"):
        AsyncSessionStore(redis.asyncio.Redis(host=host, port=int(port)))
    with pytest.raises(ConfigurationError, match="up to 2 time"):
        SessionStore(redis.Redis.from_url(stickless_url, retry=Retry(NoBackoff(), 2)))
    store = SessionStore(redis.Redis.from_url(stickless_url, retry=Retry(NoBackoff(), 0)))
    s = store.new()
    s["a"] = 1
    store.save(s)
    assert store.check().ok
    store.close()


# ---------------------------------------------------------------- what the ACL lists
def test_a_user_without_script_load_runs_the_legacy_scripts(
    server: Standalone, admin: redis.Redis
) -> None:
    """``+script|load`` is optional: without it the first save's probe is refused, the store
    keeps the scripts' legacy form (every save still one round trip), the check says so."""
    config = SessionConfig()
    add_user(admin, "legacy", checks.acl_rules(config).replace(" +script|load", ""))
    url = url_for(server, "legacy", PASSWORD)
    report = checked(url, config)
    assert report.ok and not report.denied, report.findings
    assert any(f.level == "info" and "SCRIPT LOAD" in f.message for f in report.findings)
    with SessionStore.from_url(url, config) as store, trips(store) as batches:
        s = store.new()
        s["a"] = 1
        store.save(s)
        s["a"] = 2
        store.save(s)
        loaded = store.load(s.token)
        assert loaded is not None and loaded["a"] == 2
    scripts = [c.script for b in batches for c in b.calls if isinstance(c, ScriptCall)]
    assert len(scripts) == 2 and scripts[1] is UPDATE.legacy  # the usual save's script


def test_without_hsetex_in_the_acl_the_usual_save_runs_its_script(
    server: Standalone,
    admin: redis.Redis,
    stickless_server: ServerBinary,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``+hsetex`` is optional (older servers refuse an ACL naming it): without it, the first
    usual save of held keys is refused NOPERM, then update.lua saves it (and every later
    one), logged at INFO, not as a misconfiguration; the check says so."""
    config = SessionConfig()
    has_it = takes_hsetex(stickless_server)
    add_user(admin, "nohsetex", checks.acl_rules(config))
    users = ["nohsetex"]
    if has_it:  # an older server refuses an ACL that names it
        add_user(admin, "hsetex", checks.acl_rules(config) + " +hsetex")
        users.append("hsetex")
    for user in users:
        report = checked(url_for(server, user, PASSWORD), config)
        assert report.ok and not report.denied, report.findings
        noted = [f for f in report.findings if "HSETEX" in f.message]
        assert bool(noted) is (user == "nohsetex" and has_it)  # unknown: nothing to say
    url = url_for(server, "nohsetex", PASSWORD)
    with SessionStore.from_url(url, config) as store, caplog.at_level(logging.INFO):
        s = store.new()
        s["a"] = 1
        store.save(s)
        for value in (2, 3):
            s["a"] = value
            with trips(store) as batches:
                assert store.save(s).outcome == "saved"
            first = batches[0].calls[0]
            assert isinstance(batches[-1].calls[0], ScriptCall)
            assert len(batches) == (2 if value == 2 and not isinstance(first, ScriptCall) else 1)
        loaded = store.load(s.token)
        assert loaded is not None and loaded["a"] == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_every_command_has_a_probe() -> None:
    needed = checks.required_commands(SessionConfig(durability="replicated"))
    assert {*needed} - {*checks._PROBE_ARGS, *checks._BUILT_PROBES} == set()


def test_the_planner_sends_only_the_listed_commands() -> None:
    """PIPELINE_COMMANDS names every command the planner sends outside its scripts (so the
    ACL in the docs stays complete when the planner changes)."""
    source = (ROOT / "src" / "stickless" / "store" / "plan.py").read_text()
    found = re.findall(r"Command\(\(\s*\"([A-Z]+)\"(?:,\s*\"([A-Z]+)\")?", source)
    direct = {f"{name}|{sub}" if sub else name for name, sub in found}
    assert direct, "the planner's Command calls were not found"
    listed = {*checks.PIPELINE_COMMANDS, *checks.OPTIONAL_COMMANDS}
    assert direct <= listed, direct - listed


def test_production_doc_has_the_acl() -> None:
    doc = (ROOT / "docs" / "production.md").read_text()
    assert checks.acl_rules(SessionConfig()) in doc
    assert checks.acl_rules(SessionConfig(durability="replicated"), cluster=True) in doc
