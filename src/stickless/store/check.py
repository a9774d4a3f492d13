"""``store.check()`` and ``stickless check``: will this server work for stickless, and if not,
why (one line).

It connects and authenticates with the store's own client (same URL, TLS, timeouts,
Sentinel discovery), then reports the server and its version, the topology, the role of the
node (a replica cannot take saves), the eviction policy (``allkeys-*`` and ``volatile-*``
evict live sessions: every session key has a TTL), the keyspace-event flags (for
``stickless events``), and whether every command stickless sends is allowed for the URL's
user: with ``ACL DRYRUN`` where the server has it (Redis >= 7.0, Valkey) and the user may
run it, nothing is written; otherwise each command is tried, inside one script, on keys no
session uses (``<prefix>:?:{stickless-check}``), deleted before the script ends.
``durability="replicated"`` adds ``WAIT`` and the number of replicas.

One sans-IO plan (:func:`plan`) is shared by both stores: it yields :class:`Probe` objects
(a command, and where to send it) and is sent back each reply, or the exception the command
raised. ``SessionStore.check`` runs it with :func:`run`, ``AsyncSessionStore.check`` with
:func:`arun`; neither decides anything.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, Literal

from stickless.config import SessionConfig
from stickless.errors import ConfigurationError, StoreUnavailable
from stickless.store.failures import error_code, is_acl_refusal, misconfiguration
from stickless.store.keys import KeyLayout

__all__ = [
    "OPTIONAL_COMMANDS",
    "PIPELINE_COMMANDS",
    "CheckReport",
    "Finding",
    "Probe",
    "acl_rules",
    "arun",
    "ensure_no_retries",
    "plan",
    "required_commands",
    "run",
    "script_commands",
]

Level = Literal["ok", "info", "warning", "error"]

PIPELINE_COMMANDS: Final = (
    "EVAL",
    "EVALSHA",
    "SCRIPT|LOAD",
    "HGETALL",
    "PTTL",
    "HMGET",
    "ZRANGE",
    "EXISTS",
)
"""What the store sends outside its scripts (the planner's ``Command`` calls, and the
scripts themselves: by source the first time, by SHA after). ``SCRIPT LOAD`` goes once per
process, with the first save, to learn whether the server runs the scripts' faster
``#!lua`` form (refused, e.g. by an ACL: the store keeps the legacy form)."""

OPTIONAL_COMMANDS: Final = ("HSETEX",)
"""Sent when the server takes them, not required: ``HSETEX`` (Valkey >= 9, Redis >= 8) makes
the usual save one command without a script; refused or unknown, the store uses
``update.lua``. Not in :func:`acl_rules` (older servers refuse an ACL naming it)."""

CLUSTER_COMMANDS: Final = ("CLUSTER|SLOTS", "CLUSTER|SHARDS", "COMMAND")
"""What redis-py's cluster client sends to learn the slot map and the commands' keys."""

EVICTING: Final = ("allkeys-", "volatile-")
"""``maxmemory-policy`` prefixes that evict session keys under memory pressure (every
session key has a TTL, so the ``volatile-*`` policies pick sessions too)."""

CHECK_TAG: Final = "stickless-check"
"""The hash tag (and family / user id) of the keys the check uses: no session has it (a
session's family is 11 base64 characters)."""

_FUTURE_MS: Final = 4102444800000  # 2100-01-01, for PEXPIREAT
_PROBE_ARGS: Final[dict[str, tuple[str | int, ...]]] = {
    # a command -> arguments that run it harmlessly on the check's keys: {d} a session hash,
    # {f} a forward key, {t} a tombstone, {u} a user index (all in one slot)
    "HSET": ("{d}", "check", "1"),
    "HSETNX": ("{d}", "check-default", "1"),
    "HGETALL": ("{d}",),
    "HMGET": ("{d}", "check"),
    "HGET": ("{d}", "check"),
    "HLEN": ("{d}",),
    "HEXISTS": ("{d}", "check"),
    "HINCRBY": ("{d}", "check", 1),
    "EXISTS": ("{d}",),
    "TYPE": ("{d}",),
    "PTTL": ("{d}",),
    "PEXPIRE": ("{d}", 60000),
    "PEXPIREAT": ("{d}", _FUTURE_MS),
    "EXPIRE": ("{d}", 60),
    "PERSIST": ("{d}",),
    "SET": ("{f}", "1", "PX", 60000),
    "GET": ("{f}",),
    "RENAME": ("{f}", "{t}"),
    "TIME": (),
    "ZADD": ("{u}", 1, "check"),
    "ZCARD": ("{u}",),
    "ZSCORE": ("{u}", "check"),
    "ZRANGE": ("{u}", 0, -1),
    "ZREM": ("{u}", "check"),
    "ZREMRANGEBYSCORE": ("{u}", "-inf", "+inf"),
    "HSETEX": ("{d}", "FXX", "FIELDS", 1, "check", "1"),
    "HDEL": ("{d}", "check"),
    "UNLINK": ("{d}", "{f}", "{t}", "{u}"),
    "DEL": ("{d}", "{f}", "{t}", "{u}"),
}
"""In the order the try-script runs them (writes first, deletes last)."""


# ------------------------------------------------------------------ what is needed
def script_commands() -> tuple[str, ...]:
    """Every command the bundled Lua scripts call (read from the scripts themselves)."""
    found: set[str] = set()
    for entry in resources.files("stickless.store").joinpath("lua").iterdir():
        if entry.name.endswith(".lua"):
            text = entry.read_text()
            found |= {m.upper() for m in re.findall(r"redis\.p?call\(\s*'(\w+)'", text)}
    return tuple(sorted(found))


def required_commands(config: SessionConfig | None = None) -> tuple[str, ...]:
    """Every command the store sends, directly or from its scripts (``WAIT`` with
    ``durability="replicated"``)."""
    config = config or SessionConfig()
    wanted = {*PIPELINE_COMMANDS, *script_commands()}
    if config.durability == "replicated":
        wanted.add("WAIT")
    return tuple(sorted(wanted))


def acl_rules(config: SessionConfig | None = None, *, cluster: bool = False) -> str:
    """The ACL rules a stickless user needs (after ``ACL SETUSER name on >password``): its
    keys, no channels, nothing but the commands it sends (``PING`` and ``HELLO`` for
    connecting; the cluster client's slot-map commands with ``cluster=True``)."""
    config = config or SessionConfig()
    commands = ["PING", "HELLO", *required_commands(config)]
    if cluster:
        commands += CLUSTER_COMMANDS
    allowed = " ".join(f"+{c.lower()}" for c in commands)
    return f"resetkeys ~{config.key_prefix}:* resetchannels -@all {allowed}"


# ------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report."""

    level: Level
    topic: str
    """``connect``, ``server``, ``role``, ``replicas``, ``eviction``, ``memory``, ``events``,
    ``commands``."""
    message: str


@dataclass
class CheckReport:
    """What :func:`plan` found. ``ok`` is False when any finding is an error; ``cause`` is
    the first error, in one line."""

    address: str
    topology: str
    server: str | None = None
    """``"Valkey 9.1.0"``, ``"Redis 7.0.15"``; None when INFO was refused."""
    version: tuple[int, int, int] | None = None
    role: str | None = None
    replicas: int | None = None
    eviction_policy: str | None = None
    maxmemory: int | None = None
    keyspace_events: str | None = None
    """``notify-keyspace-events`` (None: unknown, e.g. CONFIG refused)."""
    acl_method: str | None = None
    """``"ACL DRYRUN"`` or ``"tried"``: how the commands were checked."""
    denied: list[str] = field(default_factory=list)
    """Commands the URL's user may not run."""
    findings: list[Finding] = field(default_factory=list)
    error: BaseException | None = None
    """The exception behind a connection or authentication failure."""

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    @property
    def cause(self) -> str | None:
        return next((f.message for f in self.findings if f.level == "error"), None)

    @property
    def warnings(self) -> list[str]:
        return [f.message for f in self.findings if f.level == "warning"]

    def add(self, level: Level, topic: str, message: str) -> None:
        self.findings.append(Finding(level, topic, message))

    def raise_for_errors(self) -> None:
        """Raise when the check found an error: :class:`~stickless.StoreUnavailable` (a
        :class:`~stickless.StoreMisconfigured` for credentials and permissions) when the
        server could not be used, :class:`~stickless.ConfigurationError` otherwise."""
        if self.ok:
            return
        if self.error is not None:
            raise StoreUnavailable(self.address, self.error)
        raise ConfigurationError(f"session store at {self.address}: {self.cause}")


# ---------------------------------------------------------------------------- the plan
@dataclass(frozen=True, slots=True)
class Probe:
    """One command to send. ``primaries``: to every primary of a cluster (the reply is then
    a ``{node: reply}`` mapping, on any topology). ``key``: in a cluster, to the node owning
    that key (scripts are routed by their keys anyway)."""

    args: tuple[str | int, ...]
    primaries: bool = False
    key: str | None = None


CheckPlan = Generator[Probe, Any, CheckReport]


def plan(
    config: SessionConfig, address: str, topology: str, username: str | None = None
) -> CheckPlan:
    """The check, as a generator of :class:`Probe` (see the module's docstring).
    ``username``: the URL's user (None: ask the server, else ``default``)."""
    report = CheckReport(address, topology)
    reply = yield Probe(("PING",))
    if isinstance(reply, BaseException):
        report.error = reply
        wrong = misconfiguration(reply)
        if wrong is not None:
            report.add("error", "connect", wrong.detail or str(reply))
        else:
            report.add(
                "error", "connect", f"cannot connect to {address}: {type(reply).__name__}: {reply}"
            )
        return report
    report.add("ok", "connect", "connected" + (f" as {username!r}" if username else ""))
    yield from _server(report, config)
    yield from _events(report)
    yield from _commands(report, config, username)
    return report


def _server(report: CheckReport, config: SessionConfig) -> Generator[Probe, Any, None]:
    servers = yield Probe(("INFO", "server"), primaries=True)
    if _refused(servers):
        report.add(
            "info",
            "server",
            f"INFO refused ({_reason(servers)}): server version, role, replicas and eviction "
            "policy not checked (allow +info to see them)",
        )
        return
    server = _first(servers)
    name = "Valkey" if "valkey_version" in server else "Redis"
    text = str(server.get("valkey_version") or server.get("redis_version", "?"))
    report.server = f"{name} {text}"
    numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
    if len(numbers) == 3:
        report.version = (numbers[0], numbers[1], numbers[2])
    mode = str(server.get("server_mode") or server.get("redis_mode") or "standalone")
    wanted = {"standalone": "standalone", "sentinel": "standalone", "cluster": "cluster"}
    if mode == "sentinel":
        report.add(
            "error",
            "server",
            "this is a Sentinel, not a data node: use redis+sentinel://HOST:26379/SERVICE",
        )
        return
    if mode != wanted.get(report.topology, mode):
        scheme = "redis+cluster://" if mode == "cluster" else "redis:// (or redis+sentinel://)"
        report.add("error", "server", f"the server runs in {mode} mode: use a {scheme} URL")
        return
    report.add("ok", "server", f"{report.server} ({_topology(report, servers)})")
    yield from _replication(report, config, servers)
    yield from _memory(report)


def _topology(report: CheckReport, servers: Mapping[str, Any]) -> str:
    if report.topology == "cluster":
        return f"cluster of {len(servers)} primaries"
    return report.topology


def _replication(
    report: CheckReport, config: SessionConfig, servers: Mapping[str, Any]
) -> Generator[Probe, Any, None]:
    replication = yield Probe(("INFO", "replication"), primaries=True)
    if _refused(replication):
        return
    roles = {str(info.get("role")) for info in replication.values()}
    counts = [int(info.get("connected_slaves", 0)) for info in replication.values()]
    report.role = "replica" if "slave" in roles else "primary"
    report.replicas = min(counts) if counts else 0
    if report.role == "replica":
        report.add(
            "error",
            "role",
            "the URL names a replica (read-only): every save would fail with READONLY; "
            "point it at the primary (or use redis+sentinel://)",
        )
        return
    where = "each primary has" if len(servers) > 1 else "the primary has"
    if config.durability == "replicated" and report.replicas < config.min_replicas:
        report.add(
            "error",
            "replicas",
            f'durability="replicated" needs min_replicas={config.min_replicas}, but {where} '
            f"{report.replicas} replica(s): every save would raise ReplicationTimeout",
        )
    else:
        report.add("ok", "replicas", f"{where} {report.replicas} replica(s)")


def _memory(report: CheckReport) -> Generator[Probe, Any, None]:
    memory = yield Probe(("INFO", "memory"), primaries=True)
    if _refused(memory):
        return
    policies = sorted({str(info.get("maxmemory_policy", "?")) for info in memory.values()})
    limits = [int(info.get("maxmemory", 0)) for info in memory.values()]
    used = [int(info.get("used_memory", 0)) for info in memory.values()]
    report.eviction_policy = ",".join(policies)
    report.maxmemory = min(limits) if limits else None
    evicting = [p for p in policies if p.startswith(EVICTING)]
    if evicting:
        later = " (not yet in effect: maxmemory is 0)" if not any(limits) else ""
        report.add(
            "warning",
            "eviction",
            f"maxmemory-policy {','.join(evicting)} evicts live sessions when memory is full"
            f"{later}: set noeviction (saves then fail with OOM, answered 503) and size "
            "maxmemory for the sessions",
        )
    else:
        report.add("ok", "eviction", f"maxmemory-policy {report.eviction_policy}")
    for limit, use in zip(limits, used, strict=False):
        if limit and use > 0.9 * limit:
            report.add(
                "warning", "memory", f"memory {use * 100 // limit}% full ({use} of {limit} bytes)"
            )
            break


def _events(report: CheckReport) -> Generator[Probe, Any, None]:
    from stickless.ops.events import REQUIRED_FLAGS, merge_flags  # noqa: PLC0415

    reply = yield Probe(("CONFIG", "GET", "notify-keyspace-events"), primaries=True)
    if _refused(reply):
        report.add(
            "info",
            "events",
            f"CONFIG GET refused ({_reason(reply)}): keyspace events unknown (managed "
            f"services set notify-keyspace-events, {REQUIRED_FLAGS!r} for stickless events, "
            "in their parameter group / configuration)",
        )
        return
    flags = sorted({_config_value(r, "notify-keyspace-events") for r in reply.values()})
    report.keyspace_events = ",".join(flags)
    old = report.version is not None and report.version < (7, 0, 0)
    if old and report.server and report.server.startswith("Redis"):
        report.add(
            "info",
            "events",
            f"stickless events needs Redis >= 7.0 or Valkey (the n flag); this is {report.server}",
        )
        return
    lacking = [f for f in flags if merge_flags(f) != f]
    if lacking:
        report.add(
            "info",
            "events",
            f"notify-keyspace-events {report.keyspace_events!r} lacks some of "
            f"{REQUIRED_FLAGS!r}: `stickless events` adds them (CONFIG SET), or set them",
        )
    else:
        report.add("ok", "events", f"notify-keyspace-events {report.keyspace_events!r}")


def _commands(
    report: CheckReport, config: SessionConfig, username: str | None
) -> Generator[Probe, Any, None]:
    layout = KeyLayout(config.key_prefix)
    keys = {
        "d": layout.data(CHECK_TAG),
        "f": layout.forward(CHECK_TAG),
        "t": layout.tombstone(CHECK_TAG),
        "u": layout.user_index(CHECK_TAG),
    }
    needed = required_commands(config)
    inner = [c for c in script_commands() if c in _PROBE_ARGS]
    unknown = [c for c in needed if c not in _PROBE_ARGS and c not in _BUILT_PROBES]
    if username is None:
        who = yield Probe(("ACL", "WHOAMI"))
        username = "default" if _refused(who) else _text(who)
    dry = yield Probe(("ACL", "DRYRUN", username, "PING"))
    if not _refused(dry) and _text(dry) == "OK":
        report.acl_method = "ACL DRYRUN"
        for command in [c for c in needed if c not in unknown]:
            args = _args(command, keys)
            reply = yield Probe(("ACL", "DRYRUN", username, *args))
            if _refused(reply) or _text(reply) != "OK":
                report.denied.append(command)
    else:
        report.acl_method = "tried"
        yield from _try(report, config, keys, inner)
    if "SCRIPT|LOAD" in report.denied:  # optional: the legacy form of the scripts then
        report.denied.remove("SCRIPT|LOAD")
        report.add(
            "info",
            "commands",
            f"user {username!r} may not run SCRIPT LOAD: the store runs its scripts in their "
            "legacy form (about 2 µs more per command they run); grant +script|load",
        )
    if report.denied:
        report.add(
            "error",
            "commands",
            f"user {username!r} may not run {', '.join(report.denied)} "
            f"(checked with {report.acl_method}): grant them (docs/production.md)",
        )
    else:
        report.add(
            "ok",
            "commands",
            f"every command stickless sends is allowed ({report.acl_method})",
        )
    if unknown:
        report.add("info", "commands", f"not checked (no probe for): {', '.join(unknown)}")
    for command in OPTIONAL_COMMANDS:  # harmless: FXX on the check's empty hash sets nothing
        reply = yield Probe(_args(command, keys), key=keys["d"])
        if _refused(reply) and is_acl_refusal(_reason(reply)):  # unknown: an older server
            report.add(
                "info",
                "commands",
                f"user {username!r} may not run {command}: the usual save runs update.lua "
                f"(a script, more server time); grant +{command.lower()}",
            )


def _try(
    report: CheckReport, config: SessionConfig, keys: dict[str, str], inner: list[str]
) -> Generator[Probe, Any, None]:
    """Try every command: the scripts' ones inside one script (EVAL, then EVALSHA of it),
    the direct ones on the check's (empty) keys."""
    source = _probe_script(inner, keys)
    key_list = tuple(keys.values())
    failures: dict[str, str] = {}
    evaluated = yield Probe(("EVAL", source, len(key_list), *key_list))
    if _refused(evaluated):
        failures["EVAL"] = _reason(evaluated)
    else:
        for line in evaluated or ():
            command, _, why = _text(line).partition(" ")
            failures[command] = why
        again = yield Probe(("EVALSHA", _sha1(source), len(key_list), *key_list))
        if _refused(again):
            failures["EVALSHA"] = _reason(again)
    direct = [c for c in PIPELINE_COMMANDS if c not in ("EVAL", "EVALSHA")]
    for command in direct:
        reply = yield Probe(_args(command, keys), key=keys["d"])
        if _refused(reply):
            failures[command] = _reason(reply)
    if config.durability == "replicated":
        reply = yield Probe(("WAIT", 0, 0), key=keys["d"])
        if _refused(reply):
            failures["WAIT"] = _reason(reply)
    for command, why in failures.items():
        if is_acl_refusal(why):
            report.denied.append(command)
        else:
            report.add("error", "commands", f"{command} failed on {report.address}: {why}")


def _probe_script(commands: Iterable[str], keys: Mapping[str, str]) -> str:
    """A script running each of ``commands`` on the check's keys (``KEYS[1..4]``), returning
    ``"COMMAND error"`` for each that failed; every key is deleted at the end."""
    index = {name: i + 1 for i, name in enumerate(keys)}

    def lua(value: str | int) -> str:
        if isinstance(value, int):
            return str(value)
        if value.startswith("{") and value.endswith("}"):
            return f"KEYS[{index[value[1:-1]]}]"
        return "'" + value + "'"

    ordered = [c for c in _PROBE_ARGS if c in set(commands)]
    calls = ",\n  ".join(
        "{" + ", ".join([f"'{c}'", *(lua(a) for a in _PROBE_ARGS[c])]) + "}" for c in ordered
    )
    return (
        "-- stickless check: the commands of the stickless scripts, on keys no session uses\n"
        f"local probes = {{\n  {calls}\n}}\n"
        "local failed = {}\n"
        "for _, probe in ipairs(probes) do\n"
        "  local reply = redis.pcall(unpack(probe))\n"
        "  if type(reply) == 'table' and reply.err then\n"
        "    failed[#failed + 1] = probe[1] .. ' ' .. reply.err\n"
        "  end\n"
        "end\n"
        "redis.pcall('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])\n"
        "return failed\n"
    )


def _sha1(text: str) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324  (the script cache's name)


_BUILT_PROBES: Final = ("EVAL", "EVALSHA", "WAIT", "SCRIPT|LOAD")
"""Commands whose probe :func:`_args` builds itself (not from ``_PROBE_ARGS``)."""


def _args(command: str, keys: Mapping[str, str]) -> tuple[str | int, ...]:
    if command in ("EVAL", "EVALSHA"):
        script = "return 1" if command == "EVAL" else _sha1("return 1")
        return (command, script, 1, keys["d"])
    if command == "WAIT":
        return ("WAIT", 0, 0)
    if command == "SCRIPT|LOAD":
        return ("SCRIPT", "LOAD", "return 1")
    values = [
        keys[a[1:-1]] if isinstance(a, str) and a.startswith("{") and a.endswith("}") else a
        for a in _PROBE_ARGS.get(command, ())
    ]
    return (command, *values)


def _refused(reply: Any) -> bool:
    if isinstance(reply, BaseException):
        return True
    if isinstance(reply, Mapping):
        return any(isinstance(v, BaseException) for v in reply.values())
    return False


def _reason(reply: Any) -> str:
    if isinstance(reply, Mapping):
        reply = next(v for v in reply.values() if isinstance(v, BaseException))
    code = error_code(reply) if isinstance(reply, BaseException) else None
    text = str(reply)
    return text if code is None or text.startswith(code) else f"{code} {text}"


def _first(replies: Mapping[str, Any]) -> Mapping[str, Any]:
    value = next(iter(replies.values()))
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config_value(reply: Any, name: str) -> str:
    if isinstance(reply, Mapping):
        for key, value in reply.items():
            if _text(key) == name:
                return _text(value)
    if isinstance(reply, list | tuple) and len(reply) >= 2:
        return _text(reply[1])
    return ""


# ------------------------------------------------------------------------ executors
def _targets(client: Any, cluster: bool, probe: Probe) -> list[tuple[str, dict[str, Any]]]:
    """Where ``probe`` goes: ``(node name, execute_command options)`` for each target."""
    if cluster and probe.primaries:
        return [(node.name, {"target_nodes": node}) for node in client.get_primaries()]
    if not cluster or probe.args[0] in ("EVAL", "EVALSHA"):  # scripts: routed by their keys
        return [("", {})]
    if probe.key is not None:
        return [("", {"target_nodes": client.get_node_from_key(probe.key)})]
    return [("", {"target_nodes": client.get_default_node() or client.get_primaries()[0]})]


def _start(store: Any) -> tuple[CheckPlan, Any, bool, str]:
    endpoint = getattr(store, "_endpoint", None)
    address = str(getattr(getattr(store, "_plan", None), "address", "the store"))
    client = store.client
    cluster = bool(store.is_cluster)
    topology = endpoint.kind if endpoint is not None else "cluster" if cluster else "standalone"
    username = endpoint.username if endpoint is not None else None
    return plan(store.config, address, topology, username), client, cluster, address


def run(store: Any) -> CheckReport:
    """Run the check with a :class:`~stickless.SessionStore`'s client."""
    from redis.exceptions import RedisError  # noqa: PLC0415

    op, client, cluster, address = _start(store)
    try:
        probe = next(op)
        while True:
            replies: dict[str, Any] = {}
            try:
                targets = _targets(client, cluster, probe)
            except (RedisError, OSError) as exc:
                targets, replies[address] = [], exc
            for name, options in targets:
                try:
                    replies[name or address] = client.execute_command(*probe.args, **options)
                except (RedisError, OSError) as exc:
                    replies[name or address] = exc
            probe = op.send(replies if probe.primaries else next(iter(replies.values())))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def arun(store: Any) -> CheckReport:
    """Run the check with an :class:`~stickless.AsyncSessionStore`'s client (of the
    running event loop)."""
    from redis.exceptions import RedisError  # noqa: PLC0415

    op, client, cluster, address = _start(store)
    try:
        probe = next(op)
        while True:
            replies: dict[str, Any] = {}
            try:
                if cluster:
                    await client.initialize()  # the slot map (a no-op once known)
                targets = _targets(client, cluster, probe)
            except (RedisError, OSError) as exc:
                targets, replies[address] = [], exc
            for name, options in targets:
                try:
                    replies[name or address] = await client.execute_command(*probe.args, **options)
                except (RedisError, OSError) as exc:
                    replies[name or address] = exc
            probe = op.send(replies if probe.primaries else next(iter(replies.values())))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


# ------------------------------------------------------------------ clients we are given
def ensure_no_retries(client: Any) -> None:
    """Refuse a redis-py client that resends commands (its ``Retry`` allows retries): a
    resent save applies twice (an ``incr`` counts twice). The store retries only what is
    idempotent, itself. Raises :class:`~stickless.ConfigurationError` saying how to build
    one that does not."""
    retry = getattr(client, "retry", None) if hasattr(client, "nodes_manager") else None
    if retry is None and hasattr(client, "get_retry"):
        retry = client.get_retry()
    retries = retry.get_retries() if retry is not None else 0
    node_kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None)
    if isinstance(node_kwargs, dict) and node_kwargs.get("retry") is not None:
        retries = max(retries, node_kwargs["retry"].get_retries())
    if retries:
        raise ConfigurationError(
            f"this redis-py client resends a failed command up to {retries} time(s), and a "
            "resent save could apply twice (an incr would count twice): pass "
            "retry=Retry(NoBackoff(), 0) (redis.retry.Retry, redis.backoff.NoBackoff) when "
            "you build it, or use SessionStore.from_url(url), whose clients never resend "
            "(the store retries idempotent operations itself, SessionConfig.retries)"
        )
