"""The ``stickless`` command: a development server, the demo, and operations on a live store.

A thin presentation layer: the work is done by :mod:`stickless.ops` (and
:mod:`stickless.embedded` for ``server``); this module parses options and renders results
with rich tables, or as JSON with ``--json``. See docs/operations.md for every command with
sample output.

Global options (before the command): ``--url`` (or ``STICKLESS_URL``; any topology) and
``--prefix`` (or ``STICKLESS_PREFIX``; the ``key_prefix`` of the store, default
``stickless``). Exit codes: 0 success, 1 "not found" / unhealthy, 2 usage or connection
error. Session values are printed only by ``sessions show --values``; tokens never (they
are not stored: sessions are named by their id, the token's 11-character family).
Destructive commands (``sessions rm``, ``users revoke``) ask first unless ``--yes``.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import redis
import typer
from rich import box
from rich.bar import Bar
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stickless.config import SessionConfig
from stickless.errors import SticklessError
from stickless.store.sync import SessionStore

__all__ = ["app", "main"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PORT = 6379

app = typer.Typer(
    name="stickless",
    help="Distributed HTTP sessions on Redis / Valkey: dev server, demo, and operations.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
sessions_app = typer.Typer(
    help="List, show and remove sessions (SCAN over every primary).", no_args_is_help=True
)
users_app = typer.Typer(
    help="A user's sessions (the per-user index): show, log out everywhere.",
    no_args_is_help=True,
)
app.add_typer(sessions_app, name="sessions")
app.add_typer(users_app, name="users")


class Topology(enum.StrEnum):
    standalone = "standalone"
    sentinel = "sentinel"
    cluster = "cluster"


# ---------------------------------------------------------------------------- plumbing
@dataclass
class _Settings:
    url: str
    prefix: str
    _stores: list[SessionStore] = field(default_factory=list)

    def config(self) -> SessionConfig:
        return SessionConfig(key_prefix=self.prefix)

    def store(self) -> SessionStore:
        store = SessionStore.from_url(self.url, self.config())
        self._stores.append(store)
        return store

    def close(self) -> None:
        for store in self._stores:
            try:
                store.close()
            except Exception:  # noqa: S112  (closing on exit: nothing left to report)
                continue


def _settings(ctx: typer.Context) -> _Settings:
    settings = ctx.find_object(_Settings)
    if settings is None:  # pragma: no cover  (the callback always sets it)
        settings = _Settings(DEFAULT_URL, "stickless")
    return settings


def _out() -> Console:
    return Console(highlight=False, emoji=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False, emoji=False)


_UNSAFE_BEYOND_C0 = r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(rf"[\x00-\x1f{_UNSAFE_BEYOND_C0}]")
"""What a terminal may act on: C0 controls (ESC, BEL, CR...), DEL, C1 controls (an 8-bit
CSI), and the invisible characters that reorder or split a line (bidi controls, U+2028/9)."""
_UNSAFE_IN_JSON = re.compile(f"[{_UNSAFE_BEYOND_C0}]")
"""The same, less C0 controls: ``json.dumps`` escapes those itself."""


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object, style: str = "") -> Text:
    """``value`` as inert terminal text: the one way this command prints anything that
    comes from users, Redis or the command line (user ids, session ids, keys, values,
    prefixes, addresses, error messages).

    Never read as Rich markup (``[/]`` or ``[link=...]`` print as themselves), and every
    character in :data:`_UNSAFE` becomes a visible escape (ESC is printed as ``\\x1b``,
    U+202E as ``\\u202e``), so no screen clear, OSC 52 clipboard write or hidden text ever
    reaches the terminal."""
    return Text(_UNSAFE.sub(_escape, str(value)), style=style)


def _say(console: Console, *parts: str | Text | tuple[str, str]) -> None:
    """Print one line: ``str`` parts are this module's own wording, ``(text, style)`` pairs
    styled wording, :class:`Text` parts (from :func:`shown`) data. Nothing is markup."""
    console.print(Text.assemble(*parts), soft_wrap=True)


@contextmanager
def _handled() -> Iterator[None]:
    """Turn the errors a user can cause (bad URL, server down, ...) into one line on stderr
    and exit code 2, instead of a traceback."""
    try:
        yield
    except (SticklessError, redis.RedisError, OSError) as exc:
        _say(_err(), ("error:", "red"), " ", shown(exc))
        raise typer.Exit(2) from None


def _table(title: Text | None = None) -> Table:
    """A table in the command's style; its title, when given, is data (:func:`shown`)."""
    return Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1)
    )


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _print_json(value: Any, *, indent: int | None = 2) -> None:
    """JSON on stdout; characters a terminal may act on are ``\\u`` escapes (still the
    same JSON strings once parsed)."""
    text = json.dumps(_jsonable(value), indent=indent, ensure_ascii=False)
    typer.echo(_UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def _bytes(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return _duration((datetime.now(UTC) - moment).total_seconds()) + " ago"


def _until(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return "in " + _duration((moment - datetime.now(UTC)).total_seconds())


def _stamp(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# ------------------------------------------------------------------------ the callback
def _version(value: bool) -> None:
    if value:
        from stickless import __version__  # noqa: PLC0415

        typer.echo(f"stickless {__version__}")
        raise typer.Exit


@app.callback()
def _main(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="STICKLESS_URL",
            help="Store URL (redis://, rediss://, unix://, redis+sentinel://, redis+cluster://; "
            "docs/topologies.md).",
        ),
    ] = DEFAULT_URL,
    prefix: Annotated[
        str,
        typer.Option("--prefix", envvar="STICKLESS_PREFIX", help="Key prefix of the store."),
    ] = "stickless",
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Distributed HTTP sessions on Redis / Valkey: dev server, demo, and operations."""
    settings = _Settings(url, prefix)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


# ---------------------------------------------------------------------------- server
def _node_line(role: str, url: str, pid: int) -> str:
    return f"  {role:<16} {url}  (pid {pid})"


@app.command()
def server(
    port: Annotated[
        int | None,
        typer.Option(help=f"Port (standalone only; default {DEFAULT_PORT}, 0 = any free one)."),
    ] = None,
    aof: Annotated[
        bool, typer.Option("--aof/--no-aof", help="Append-only file persistence (standalone).")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Keep the data here (standalone; default: a temporary dir)."
        ),
    ] = None,
    topology: Annotated[
        Topology,
        typer.Option(
            metavar="TOPOLOGY", help="standalone, sentinel (1+2 nodes, 3 sentinels) or cluster."
        ),
    ] = Topology.standalone,
) -> None:
    """Run an embedded Valkey for development until Ctrl-C, printing its URL."""
    from stickless import embedded  # noqa: PLC0415  (needs the embedded extra)

    if topology is not Topology.standalone and (port is not None or aof or data_dir):
        _say(_err(), ("error:", "red"), " --port, --aof and --data-dir apply to standalone only")
        raise typer.Exit(2)
    out = _out()
    try:
        running: Any
        if topology is Topology.standalone:
            chosen = DEFAULT_PORT if port is None else (port or None)
            running = embedded.start_standalone(port=chosen, aof=aof, data_dir=data_dir)
        elif topology is Topology.sentinel:
            running = embedded.start_sentinel()
        else:
            running = embedded.start_cluster()
    except (RuntimeError, ValueError) as exc:
        _say(_err(), ("error:", "red"), " cannot start Valkey: ", shown(exc))
        raise typer.Exit(2) from None
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # SIGINT too: a shell may start a background job with SIGINT ignored.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for wanted in (signal.SIGINT, signal.SIGTERM):
            previous[wanted] = signal.signal(wanted, on_term)
    code = 0
    try:
        _say(out, (f"Valkey {topology.value}", "bold"), " running. Ctrl-C to stop.")
        for node in running.nodes:
            _say(out, shown(_node_line(node.role, node.url, node.pid)))
        _say(out, "URL: ", shown(running.url))
        _say(out, "export STICKLESS_URL='", shown(running.url), "'")
        reported: set[int] = set()
        while not stop.wait(0.5):
            dead = [n for n in running.nodes if not n.alive and n.pid not in reported]
            for node in dead:
                reported.add(node.pid)
                _say(_err(), shown(f"node {node.role} {node.url} exited", "yellow"))
            if topology is Topology.standalone and dead:
                code = 1
                break
    except KeyboardInterrupt:
        pass
    finally:
        _say(out, "stopping...")
        running.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
    raise typer.Exit(code)


# ------------------------------------------------------------------------------ demo
@app.command()
def demo(
    topology: Annotated[
        Topology,
        typer.Option(metavar="TOPOLOGY", help="standalone, sentinel or cluster: what it runs on."),
    ] = Topology.standalone,
    tour: Annotated[bool, typer.Option("--tour", help="Run the guided tour.")] = False,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            show_default=False,
            help="Where the demo keeps its data (default .stickless/demo-data).",
        ),
    ] = Path(".stickless/demo-data"),
    port: Annotated[
        list[int] | None,
        typer.Option("--port", help="Base port (repeat to pin several ports)."),
    ] = None,
) -> None:
    """Run the demo app (see stickless.demo)."""
    try:
        module = importlib.import_module("stickless.demo")
    except ImportError as exc:
        _say(
            _err(),
            ("error:", "red"),
            " the demo is not available (",
            shown(exc),
            "); install it with: pip install 'stickless[demo]'",
        )
        raise typer.Exit(2) from None
    run = module.run
    code = run(topology=topology.value, tour=tour, data_dir=data_dir, ports=port or None)
    raise typer.Exit(int(code or 0))


# -------------------------------------------------------------------------- sessions
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking first.")]


def _confirm(question: str, yes: bool) -> None:
    """Ask before a destructive command (exit 1 unless answered yes); ``--yes`` skips it."""
    if yes:
        return
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # no answer (end of input)
        agreed = False
    if not agreed:
        _say(_err(), "nothing done (pass --yes to skip this question)")
        raise typer.Exit(1)


@sessions_app.command("ls")
def sessions_ls(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's sessions.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="Show at most N sessions (0: all).")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List sessions: id, user, times, TTL, number of keys, size (never values)."""
    from stickless.ops.inspect import list_sessions  # noqa: PLC0415

    settings = _settings(ctx)
    with _handled():
        found = list_sessions(settings.store(), user=user, limit=limit or None)
    if as_json:
        _print_json(found)
        if limit and len(found) >= limit:
            typer.echo(f"note: stopped at --limit {limit}; --limit 0 lists all", err=True)
        return
    out = _out()
    if not found:
        _say(out, "no sessions", *((" for user ", shown(repr(user))) if user else ()))
        return
    table = _table(shown(f"sessions under {settings.prefix!r}"))
    table.add_column("session id", overflow="fold", min_width=12)
    table.add_column("user", overflow="fold")
    for name in ("created", "accessed", "expires"):
        table.add_column(name, min_width=7)
    for name in ("keys", "size", "memory"):
        table.add_column(name, justify="right", no_wrap=True)
    for s in found:
        table.add_row(
            shown(s.session_id),
            shown(s.user_id or "-"),
            _ago(s.created_at),
            _ago(s.last_access),
            "no TTL!" if s.ttl_ms is None else "in " + _duration(s.ttl_ms / 1000),
            str(s.keys),
            _bytes(s.size),
            _bytes(s.memory),
        )
    out.print(table)
    if limit and len(found) >= limit:
        _say(out, f"(first {limit} found; --limit 0 lists all)")


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    session_id: Annotated[
        str,
        typer.Argument(help="Session id (from sessions ls); one starting with '-' goes after --."),
    ],
    values: Annotated[
        bool, typer.Option("--values", help="Also print the values (personal data!).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """A session's metadata and key names (values only with --values)."""
    from stickless.ops.inspect import show_session  # noqa: PLC0415

    with _handled():
        detail = show_session(_settings(ctx).store(), session_id, values=values)
    if detail is None:
        _say(_err(), "no session ", shown(session_id))
        raise typer.Exit(1)
    if as_json:
        data = _jsonable(detail.summary)
        data["key_names"] = list(detail.key_sizes)
        data["key_sizes"] = detail.key_sizes
        if values:
            data["values"] = detail.values
            data["undecodable"] = detail.undecodable
        _print_json(data)
        return
    s = detail.summary
    out = _out()
    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="bold")
    meta.add_column(overflow="fold")
    for label, value in (
        ("session id", shown(s.session_id)),
        ("user", shown(s.user_id or "-")),
        ("created", f"{_stamp(s.created_at)} ({_ago(s.created_at)})"),
        ("last access", f"{_stamp(s.last_access)} ({_ago(s.last_access)})"),
        ("expires", "never (no TTL!)" if s.expires_at is None else _stamp(s.expires_at)),
        ("absolute deadline", _stamp(s.absolute_expires_at)),
        ("size", f"{_bytes(s.size)} in {s.keys} keys; {_bytes(s.memory)} of server memory"),
        ("node", shown(s.node)),
    ):
        meta.add_row(label, value if isinstance(value, Text) else Text(value))
    out.print(meta)
    keys = _table()
    keys.add_column("key", overflow="fold")
    keys.add_column("bytes", justify="right")
    if values:
        keys.add_column("value", overflow="fold")
    for name, size in detail.key_sizes.items():
        row = [shown(name), Text(str(size))]
        if values and detail.values is not None:
            row.append(
                Text("(not JSON)", style="yellow")
                if name in detail.undecodable
                else shown(json.dumps(detail.values.get(name), ensure_ascii=False))
            )
        keys.add_row(*row)
    if detail.key_sizes:
        out.print(keys)
    if not values:
        _say(out, "(values hidden; --values shows them)")


@sessions_app.command("rm")
def sessions_rm(
    ctx: typer.Context,
    session_ids: Annotated[
        list[str],
        typer.Argument(help="Session id(s) (from sessions ls); ids starting with '-' go after --."),
    ],
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Destroy sessions by id, as a logout would (a tombstone stops late saves)."""
    from stickless.ops.inspect import destroy_by_id  # noqa: PLC0415

    _confirm(f"Destroy {len(session_ids)} session(s)?", yes)
    results: list[dict[str, Any]] = []
    with _handled():
        store = _settings(ctx).store()
        for session_id in session_ids:
            results.append(
                {"session_id": session_id, "destroyed": destroy_by_id(store, session_id)}
            )
    if as_json:
        _print_json(results)
    else:
        for result in results:
            word = ("destroyed", "") if result["destroyed"] else ("not found", "yellow")
            _say(_out(), shown(result["session_id"]), ": ", word)
    if not all(result["destroyed"] for result in results):
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- users
@users_app.command("show")
def users_show(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="User id.")],
    as_json: JsonOption = False,
) -> None:
    """The user's live sessions, oldest first (from the per-user index, pruned on read)."""
    with _handled():
        infos = _settings(ctx).store().sessions_for(user)
    if as_json:
        _print_json(infos)
        return
    out = _out()
    if not infos:
        _say(out, "no sessions for user ", shown(repr(user)))
        return
    table = _table(shown(f"sessions of {user!r}"))
    table.add_column("session id", overflow="fold", min_width=16)
    for name in ("created", "accessed", "expires", "deadline"):
        table.add_column(name, no_wrap=True)
    for info in infos:
        table.add_row(
            shown(info.session_id),
            _ago(info.created_at),
            _ago(info.last_access),
            _until(info.expires_at),
            _until(info.absolute_expires_at),
        )
    out.print(table)


@users_app.command("revoke")
def users_revoke(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="User id.")],
    keep: Annotated[
        str | None, typer.Option(help="Session id to keep (one of the user's, see users show).")
    ] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Log the user out everywhere (but --keep); prints how many sessions were revoked."""
    from stickless.ops.inspect import revoke_user  # noqa: PLC0415

    with _handled():
        store = _settings(ctx).store()
        live = [info.session_id for info in store.sessions_for(user)]
    if keep is not None and keep not in live:
        _say(
            _err(),
            ("error:", "red"),
            " --keep ",
            shown(keep),
            " is not one of ",
            shown(repr(user)),
            "'s sessions (see: stickless users show); nothing revoked",
        )
        raise typer.Exit(1)
    others = len(live) - (keep is not None)
    kept = f", keeping {keep}" if keep is not None else ""
    _confirm(f"Log {user!r} out of {others} session(s){kept}?", yes)
    with _handled():
        count = revoke_user(store, user, keep=keep)
    if as_json:
        _print_json({"user": user, "revoked": count, "kept": keep})
    else:
        _say(_out(), f"revoked {count} session(s) of ", shown(repr(user)))


# ----------------------------------------------------------------------------- stats
@app.command()
def stats(
    ctx: typer.Context,
    sample: Annotated[
        int, typer.Option(min=0, help="Measure MEMORY USAGE on up to N session keys.")
    ] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Live sessions, memory per session, TTL histogram (per node on a cluster)."""
    from stickless.ops.inspect import store_stats  # noqa: PLC0415

    with _handled():
        result = store_stats(_settings(ctx).store(), sample=sample)
    if as_json:
        _print_json(result)
        return
    out = _out()
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    mem = result.memory
    primaries = len(result.nodes)
    summary.add_row(
        "topology",
        f"{result.topology} ({primaries} {'primary' if primaries == 1 else 'primaries'})",
    )
    summary.add_row("prefix", shown(result.prefix))
    summary.add_row("live sessions", str(result.sessions))
    summary.add_row("user indexes", str(result.user_indexes))
    summary.add_row("renew forwards", str(result.forwards))
    summary.add_row("tombstones", str(result.tombstones))
    if result.no_ttl:
        summary.add_row(Text("without TTL", style="red"), Text(str(result.no_ttl), style="red"))
    summary.add_row(
        "memory / session",
        f"mean {_bytes(mem.mean)}, median {_bytes(mem.median)}, p95 {_bytes(mem.p95)} "
        f"({mem.sampled} sampled)",
    )
    summary.add_row("memory, estimated total", _bytes(mem.estimated_total))
    out.print(summary)
    if result.sessions:
        peak = max(bucket.count for bucket in result.ttl) or 1
        histogram = _table(Text("remaining TTL"))
        histogram.add_column("TTL")
        histogram.add_column("sessions", justify="right")
        histogram.add_column("", min_width=20)
        histogram.add_column("%", justify="right")
        for bucket in result.ttl:
            histogram.add_row(
                bucket.label,
                str(bucket.count),
                Bar(size=peak, begin=0, end=bucket.count, width=40, color="cyan"),
                f"{100 * bucket.count / result.sessions:.0f}",
            )
        out.print(histogram)
    if len(result.nodes) > 1:
        nodes = _table(Text("per primary"))
        nodes.add_column("node", no_wrap=True)
        for name in ("sessions", "mean", "median", "forwards", "tombstones", "used memory"):
            nodes.add_column(name, justify="right")
        for node in result.nodes:
            nodes.add_row(
                shown(node.address),
                str(node.sessions),
                _bytes(node.memory.mean),
                _bytes(node.memory.median),
                str(node.forwards),
                str(node.tombstones),
                _bytes(node.used_memory),
            )
        out.print(nodes)


# ---------------------------------------------------------------------------- health
@app.command()
def health(
    ctx: typer.Context,
    max_lag: Annotated[
        int,
        typer.Option(min=0, help="Replication lag (bytes) above which a replica is unhealthy."),
    ] = 1024 * 1024,
    pings: Annotated[int, typer.Option(min=1, help="PINGs per node (the median is shown).")] = 3,
    as_json: JsonOption = False,
) -> None:
    """Every node's role, latency and replication lag; exit code 1 when unhealthy."""
    from stickless.ops.health import check_health  # noqa: PLC0415

    settings = _settings(ctx)
    with _handled():
        report = check_health(settings.url, settings.config(), pings=pings, max_lag=max_lag)
    if as_json:
        _print_json(report)
    else:
        out = _out()
        verdict = ("healthy", "green") if report.ok else ("UNHEALTHY", "red bold")
        where = report.address
        if not where.startswith(report.topology):
            where = f"{report.topology} {where}"
        _say(out, shown(where), ": ", verdict)
        table = _table()
        table.add_column("node", no_wrap=True)
        table.add_column("role", no_wrap=True)
        for name in ("latency", "replica of", "lag", "link", "slots", "status"):
            table.add_column(name)
        for node in report.nodes:
            table.add_row(
                shown(node.address),
                shown(node.role),
                "-" if node.latency_ms is None else f"{node.latency_ms:.2f} ms",
                shown(node.replica_of or "-"),
                "-" if node.lag_bytes is None else _bytes(node.lag_bytes),
                shown(node.link or "-"),
                "-" if node.slots is None else str(node.slots),
                Text("ok", style="green") if node.ok else Text("problem", style="red"),
            )
        out.print(table)
        for problem in report.problems:
            _say(out, ("-", "red"), " ", shown(problem))
    if not report.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- check
_LEVEL_STYLE = {"ok": "green", "info": "cyan", "warning": "yellow", "error": "red bold"}


@app.command()
def check(
    ctx: typer.Context,
    *,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Store URL (default: the global --url / STICKLESS_URL)."),
    ] = None,
    durability: Annotated[
        str, typer.Option(help="none, or replicated: also WAIT and the number of replicas.")
    ] = "none",
    min_replicas: Annotated[
        int, typer.Option(min=0, help="Replicas a replicated save needs (with replicated).")
    ] = 1,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too (exit 1).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Will this server work for stickless? Exit 0 usable, 1 misconfigured, 2 unreachable.

    Connects as the app would, then reports the server and its version, the topology, the
    eviction policy, the keyspace-event flags and every command the URL's user must be
    allowed; the cause of a failure is the last line."""
    settings = _settings(ctx)
    config = SessionConfig(
        key_prefix=settings.prefix,
        durability="replicated" if durability == "replicated" else "none",
        min_replicas=min_replicas,
    )
    if durability not in ("none", "replicated"):
        _say(_err(), ("error:", "red"), " --durability is none or replicated")
        raise typer.Exit(2)
    with _handled():
        store = SessionStore.from_url(url or settings.url, config)
        settings._stores.append(store)
        report = store.check()
    if as_json:
        data = _jsonable(report)
        data.pop("error", None)
        data.update(ok=report.ok, cause=report.cause)
        _print_json(data)
    else:
        out = _out()
        _say(out, "stickless check ", shown(report.address))
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for finding in report.findings:
            table.add_row(
                Text(finding.level, style=_LEVEL_STYLE[finding.level]),
                finding.topic,
                shown(finding.message),
            )
        out.print(table)
    failed = not report.ok or (strict and bool(report.warnings))
    if failed:
        cause = report.cause or f"warnings (--strict): {report.warnings[0]}"
        _say(_err(), ("error:", "red"), " ", shown(cause))
        connect_failed = report.error is not None and not isinstance(
            _misconfigured(report.error), Exception
        )
        raise typer.Exit(2 if connect_failed else 1)


def _misconfigured(error: BaseException) -> object:
    from stickless.store.failures import misconfiguration  # noqa: PLC0415

    return misconfiguration(error)


# ---------------------------------------------------------------------------- events
_KIND_STYLE = {"created": "green", "renewed": "cyan", "destroyed": "yellow", "expired": "magenta"}


@app.command()
def events(
    ctx: typer.Context,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after N events.")] = None,
    timeout: Annotated[float | None, typer.Option(min=0, help="Stop after S seconds.")] = None,
    enable: Annotated[
        bool,
        typer.Option(
            "--enable/--no-enable",
            help="Turn keyspace notifications on (CONFIG SET) where they are off.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Tail created / renewed / destroyed / expired events (best effort)."""
    from stickless.ops.events import REQUIRED_FLAGS, EventSubscriber  # noqa: PLC0415

    settings = _settings(ctx)
    err = _err()
    with _handled():
        subscriber = EventSubscriber(settings.url, settings.config(), enable=enable)
        subscriber.start()
    try:
        statuses = subscriber.nodes
        for status in statuses:
            if status.enabled is not True:
                state = "not enabled" if status.enabled is False else "cannot be checked"
                _say(
                    err,
                    ("warning:", "yellow"),
                    " ",
                    shown(status.node),
                    f": keyspace notifications {state} (",
                    shown(status.error or "flags " + status.flags),
                    f"); they need {REQUIRED_FLAGS!r} in notify-keyspace-events",
                )
        if statuses and all(status.enabled is False for status in statuses):
            _say(err, ("error:", "red"), " no node publishes the events")
            raise typer.Exit(2)
        _say(
            err,
            f"listening on {len(statuses)} node(s) for sessions under ",
            shown(repr(settings.prefix)),
            "" if timeout is not None or count is not None else " (Ctrl-C to stop)",
        )
        out = _out()
        for event in subscriber.listen(timeout=timeout, count=count):
            if as_json:
                _print_json(event, indent=None)
            else:
                _say(
                    out,
                    f"{event.at.isoformat(timespec='milliseconds')}  ",
                    shown(f"{event.kind:<9}", _KIND_STYLE.get(event.kind, "")),
                    "  ",
                    shown(event.session_id),
                    "  ",
                    shown(event.node),
                )
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.close()


def main() -> None:
    """Entry point of the ``stickless`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
