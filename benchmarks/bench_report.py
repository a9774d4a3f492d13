"""Turning results into tables (console and Markdown) and PNG charts."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_apps as apps
import bench_core as core

PACKAGES = (
    "stickless",
    "redis",
    "hiredis",
    "orjson",
    "flask",
    "werkzeug",
    "flask-session",
    "msgspec",
    "starlette",
    "starsessions",
    "django",
    "django-redis",
    "gunicorn",
    "uvicorn",
    "matplotlib",
)


def machine_info() -> dict[str, Any]:
    cpu = ""
    with _suppress():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with _suppress():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    nproc = ""
    with _suppress():
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout
    return {
        "nproc": nproc.strip() or str(os.cpu_count()),
        "cpu": cpu or platform.processor(),
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], (OSError, ValueError))  # type: ignore[arg-type]


# ------------------------------------------------------------------------- analysis
class Results:
    """Lookups and derived figures over the raw results."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        inproc = raw.get("inprocess", {})
        self.cases: dict[tuple[str, str], dict[str, Any]] = {
            (c["variant"], c["kind"]): c for c in inproc.get("cases", [])
        }
        self.memory: dict[str, dict[str, dict[str, int]]] = inproc.get("memory", {})

    def has(self, variant: str, kind: str = "read") -> bool:
        return (variant, kind) in self.cases

    def us(self, variant: str, kind: str) -> float | None:
        case = self.cases.get((variant, kind))
        return statistics.median(case["us"]) if case and case["us"] else None

    def field(self, variant: str, kind: str, name: str) -> float | None:
        case = self.cases.get((variant, kind))
        return float(case[name]) if case else None

    def ratio(self, a: str, b: str, kind: str) -> float | None:
        """Median of the per-round ratios a / b."""
        ca, cb = self.cases.get((a, kind)), self.cases.get((b, kind))
        if not ca or not cb or not ca["us"] or not cb["us"]:
            return None
        pairs = [x / y for x, y in zip(ca["us"], cb["us"], strict=False) if y > 0]
        return statistics.median(pairs) if pairs else None

    def cpu_ratio(self, a: str, b: str, kinds: dict[str, float]) -> float | None:
        """Valkey CPU per request of a over b, for a mix of kinds (weights)."""
        num = den = 0.0
        for kind, weight in kinds.items():
            x, y = self.field(a, kind, "cpu_us"), self.field(b, kind, "cpu_us")
            if x is None or y is None:
                return None
            num += weight * x
            den += weight * y
        return num / den if den > 0 else None

    def overhead(self, variant: str, base: str | None, floor: str, kind: str) -> float | None:
        """Median per round of (variant - base) / one raw round trip."""
        cv, cf = self.cases.get((variant, kind)), self.cases.get((floor, core.FLOOR_KIND))
        cb = self.cases.get((base, kind)) if base else None
        if not cv or not cf or (base and not cb):
            return None
        rounds = min(len(cv["us"]), len(cf["us"]), len(cb["us"]) if cb else 10**9)
        values = [
            (cv["us"][r] - (cb["us"][r] if cb else 0.0)) / cf["us"][r]
            for r in range(rounds)
            if cf["us"][r] > 0
        ]
        return statistics.median(values) if values else None


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _rt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if abs(value - round(value)) < 0.005 else f"{value:.2f}"


SHORT = {
    "flask-session": "Flask-Session",
    "starsessions": "starsessions",
    "django-cache": "cache engine + django-redis",
    "wsgi-blob": "blob middleware",
    "blob-sync": "redis-py blob",
    "blob-async": "redis.asyncio blob",
}


def _label(variant: str) -> str:
    v = core.BY_NAME.get(variant)
    return v.label if v else variant


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def tables(raw: dict[str, Any]) -> list[Table]:
    res = Results(raw)
    out: list[Table] = []
    rounds = raw["meta"].get("rounds")
    kinds = list(core.KINDS)

    rows = []
    listed: set[str] = set()
    for fam in core.FAMILIES:
        for name in (fam.base, fam.peer, fam.stickless):
            if name and name not in listed and res.has(name):
                listed.add(name)
                rows.append(
                    [
                        fam.title,
                        _label(name),
                        *[_f(res.us(name, k)) for k in kinds],
                        " / ".join(_rt(res.field(name, k, "round_trips")) for k in kinds),
                        " / ".join(_rt(res.field(name, k, "commands")) for k in kinds),
                        " / ".join(_f(res.field(name, k, "valkey_us")) for k in kinds),
                        " / ".join(_f(res.field(name, k, "cpu_us")) for k in kinds),
                    ]
                )
    out.append(
        Table(
            f"In-process: µs per request (median of {rounds} interleaved rounds)",
            [
                "family",
                "variant",
                "untouched",
                "read",
                "write",
                "round trips u / r / w",
                "commands u / r / w",
                "Valkey µs/req u / r / w",
                "Valkey CPU µs/req u / r / w",
            ],
            rows,
            [
                "An existing 10-key session; untouched: a route that never touches it; read: "
                "one key; write: one counter bumped (s['n'] = s['n'] + 1).",
                "Round trips: the server's read events per request (a pipeline is one); "
                "commands: what clients sent (MONITOR), not counting what scripts ran. "
                "Valkey µs: INFO commandstats usec of the commands clients sent (a script's "
                "time includes what it runs). Valkey CPU: the server process's used_cpu_sys + "
                "used_cpu_user (network handling included), less the benchmark's own INFO "
                "calls and the idle server's background work. Both per request, median of "
                "the rounds' batches (each of at least n requests).",
                "Store rows: untouched = saving a session that was never loaded; the blob "
                "rows do GET (+ SET EX on write) with orjson.",
            ],
        )
    )

    mix = {"read": 0.9, "write": 0.1}
    rows = []
    for fam in core.FAMILIES:
        if not (res.has(fam.stickless) and res.has(fam.peer)):
            continue
        # the stores' untouched case has no peer equivalent (a blob not loaded costs nothing)
        r = [
            None if k == "untouched" and fam.base is None else res.ratio(fam.stickless, fam.peer, k)
            for k in kinds
        ]
        cpu = [res.cpu_ratio(fam.stickless, fam.peer, {k: 1.0}) for k in ("read", "write")]
        rows.append(
            [
                fam.title,
                _label(fam.peer),
                *[_f(x, 2) for x in r],
                *[_f(x, 2) for x in cpu],
                _f(res.cpu_ratio(fam.stickless, fam.peer, mix), 2),
                " / ".join(
                    _f(res.overhead(fam.stickless, fam.base, fam.floor, k), 1)
                    for k in ("read", "write")
                ),
                " / ".join(
                    _f(res.overhead(fam.peer, fam.base, fam.floor, k), 1) for k in ("read", "write")
                ),
            ]
        )
    out.append(
        Table(
            "stickless / peer, same family (median of per-round ratios; below 1 = stickless "
            "faster)",
            [
                "family",
                "peer",
                "untouched",
                "read",
                "write",
                "Valkey CPU read",
                "Valkey CPU write",
                "Valkey CPU 90/10 mix",
                "stickless over base, raw RTs r / w",
                "peer over base, raw RTs r / w",
            ],
            rows,
            [
                "Over base: (variant - the framework's cookie session, or no session for bare "
                "WSGI, or nothing for the stores) / one raw redis-py round trip of the same "
                "kind (sync or asyncio), median per round: the session's cost in round trips.",
                "Valkey CPU ratios: server CPU per request, stickless over the peer; the mix "
                "weighs read 0.9 and write 0.1.",
            ],
        )
    )

    rows = [
        [
            _label(v.name),
            _f(res.us(v.name, core.FLOOR_KIND)),
            _rt(res.field(v.name, core.FLOOR_KIND, "round_trips")),
            _f(res.field(v.name, core.FLOOR_KIND, "valkey_us")),
            _f(res.field(v.name, core.FLOOR_KIND, "cpu_us")),
        ]
        for v in core.VARIANTS
        if v.family == "floor" and res.has(v.name, core.FLOOR_KIND)
    ]
    out.append(
        Table(
            "Floors: raw redis-py on the 10-key JSON blob",
            ["floor", "µs/request", "round trips", "Valkey µs/req", "Valkey CPU µs/req"],
            rows,
        )
    )

    if res.memory:
        shapes = list(apps.SHAPES)
        rows = []
        for name, per_shape in res.memory.items():
            rows.append(
                [
                    _label(name),
                    *[str(per_shape[s]["session"]) for s in shapes],
                    str(max(per_shape[s]["index"] for s in shapes) or "—"),
                ]
            )
        out.append(
            Table(
                "Memory per session: MEMORY USAGE, bytes",
                ["variant", *[apps.SHAPE_LABELS[s] for s in shapes], "+ user index (login)"],
                rows,
                _memory_notes(raw),
            )
        )
        rows = []
        for fam in core.FAMILIES:
            ours, peer = res.memory.get(fam.stickless), res.memory.get(fam.peer)
            if ours and peer:
                rows.append(
                    [
                        fam.title,
                        _label(fam.peer),
                        *[
                            _f(ours[s]["session"] / peer[s]["session"], 2)
                            if peer[s]["session"]
                            else "—"
                            for s in shapes
                        ],
                    ]
                )
        flask_session = res.memory.get("flask-session")
        star = res.memory.get("starsessions")
        django = res.memory.get("django-cache")
        core_mem = res.memory.get("stickless-store")
        if core_mem:
            for peer_name, peer in (
                ("flask-session", flask_session),
                ("starsessions", star),
                ("django-cache", django),
            ):
                if peer:
                    rows.append(
                        [
                            "core store",
                            _label(peer_name),
                            *[_f(core_mem[s]["session"] / peer[s]["session"], 2) for s in shapes],
                        ]
                    )
        out.append(
            Table(
                "Memory: stickless / peer (session key only)",
                ["family", "peer", *[apps.SHAPE_LABELS[s] for s in shapes]],
                rows,
            )
        )

    lost = raw.get("lost_updates")
    if lost:
        out.append(
            Table(
                f"Lost updates: {lost['requests']} overlapping requests, each setting its own "
                "key of one session",
                ["", "stickless store", "whole-blob GET / change / SET"],
                [
                    [
                        "changes kept",
                        f"{lost['stickless']} of {lost['requests']}",
                        f"{lost['blob']} of {lost['requests']}",
                    ]
                ],
            )
        )

    http = raw.get("http")
    if http:
        out.extend(_http_tables(http))
    return out


def _rps_ratios(runs: dict[str, list[dict[str, Any]]], fam: core.Family) -> list[float]:
    """Per-round HTTP req/s of stickless over the family's peer."""
    pairs = zip(runs.get(fam.stickless, []), runs.get(fam.peer, []), strict=False)
    return [a["rps"] / b["rps"] for a, b in pairs if b["rps"]]


READ_TARGETS = {"flask": 0.8, "starlette": 0.8, "django": 1.0}
"""Read time over the peer's that the project aims at, per family (write: 0.95 for all)."""


def ratio_cell(value: float | None, limit: float) -> str:
    """``value`` with 2 decimals, or as many more (up to 6) as it takes not to show the
    limit itself for a value on one side of it (0.998 against ">= 1.0" is missed; "1.00"
    would hide that)."""
    digits = 2
    while (
        value is not None
        and value != limit
        and digits < 6
        and _f(value, digits) == _f(limit, digits)
    ):
        digits += 1
    return _f(value, digits)


def targets_table(raw: dict[str, Any]) -> Table | None:
    """Each speed and memory target against this run's ratio: met or missed."""
    res = Results(raw)
    runs = raw.get("http", {}).get("runs", {})
    mix = {"read": 0.9, "write": 0.1}
    rows = []

    def row(fam: core.Family, target: str, value: float | None, limit: float, low: bool) -> None:
        met = value is not None and (value <= limit if low else value >= limit)
        rows.append([fam.title, target, ratio_cell(value, limit), "met" if met else "**missed**"])

    for fam in core.FAMILIES:
        if fam.name not in READ_TARGETS or not (res.has(fam.stickless) and res.has(fam.peer)):
            continue
        limit = READ_TARGETS[fam.name]
        row(fam, f"read time <= {limit}x", res.ratio(fam.stickless, fam.peer, "read"), limit, True)
        row(fam, "write time <= 0.95x", res.ratio(fam.stickless, fam.peer, "write"), 0.95, True)
        for label, kinds in (("read", {"read": 1.0}), ("write", {"write": 1.0}), ("90/10", mix)):
            value = res.cpu_ratio(fam.stickless, fam.peer, kinds)
            row(fam, f"Valkey CPU per request, {label}, <= 1.1x", value, 1.1, True)
        rps = _rps_ratios(runs, fam)
        if rps:
            row(fam, "HTTP req/s >= 1.0x", statistics.median(rps), 1.0, False)
        ours, peer = res.memory.get(fam.stickless), res.memory.get(fam.peer)
        if ours and peer:
            worst = max(
                ours[shape]["session"] / peer[shape]["session"]
                for shape in ours
                if peer.get(shape, {}).get("session")
            )
            row(fam, "memory per session <= 1.2x (worst of the shapes)", worst, 1.2, True)
    if not rows:
        return None
    return Table(
        "Targets: stickless / peer in this run",
        ["family", "target", "this run", "met?"],
        rows,
        ["The ratios of the tables below (medians of per-round ratios)."],
    )


def _memory_samples(raw: dict[str, Any]) -> int:
    memory = raw.get("inprocess", {}).get("memory", {})
    for per_shape in memory.values():
        for row in per_shape.values():
            return len(row.get("samples", [0]))
    return 0


def _memory_notes(raw: dict[str, Any]) -> list[str]:
    server = raw["meta"].get("server", {})
    return [
        "Shapes: login only (stickless: login(user_id); peers: a user_id key); 5 small keys; "
        "a cart whose JSON value is 200 bytes; 20 short keys. Each peer's own format: "
        "Flask-Session msgpack, starsessions JSON (with its metadata), django-redis pickle. "
        f"Median of {_memory_samples(raw)} new session(s) per shape and variant.",
        f"Server: {server.get('server', '?')} {server.get('version', '?')}, "
        f"hash-max-listpack-value {server.get('hash-max-listpack-value', '?')}, "
        f"hash-max-listpack-entries {server.get('hash-max-listpack-entries', '?')}: a hash "
        "with a value longer than hash-max-listpack-value is stored as a hashtable.",
    ]


def _spread(values: list[float]) -> str:
    """Median of per-round ratios, and their range when there are several rounds."""
    if not values:
        return "—"
    median = f"{statistics.median(values):.2f}"
    return median if len(values) < 2 else f"{median} ({min(values):.2f} to {max(values):.2f})"


def _http_tables(http: dict[str, Any]) -> list[Table]:
    runs: dict[str, list[dict[str, Any]]] = http["runs"]
    rows = []
    ratio_rows = []

    def med(name: str, key: str) -> float | None:
        values = [r[key] for r in runs.get(name, []) if r.get(key) is not None]
        return statistics.median(values) if values else None

    listed: set[str] = set()
    for fam in core.FAMILIES:
        for name in (fam.base, fam.peer, fam.stickless):
            if name and name not in listed and name in runs:
                listed.add(name)
                rows.append(
                    [
                        fam.title,
                        _label(name),
                        _f(med(name, "rps"), 0),
                        _f(med(name, "p50_ms"), 2),
                        _f(med(name, "p99_ms"), 2),
                        str(sum(r["errors"] for r in runs[name])),
                        _f(med(name, "round_trips"), 2),
                        _f(med(name, "cpu_us"), 1),
                    ]
                )
        if fam.stickless in runs and fam.peer in runs:
            ours, theirs = runs[fam.stickless], runs[fam.peer]
            pairs = list(zip(ours, theirs, strict=False))
            rps = _rps_ratios(runs, fam)
            p99 = [a["p99_ms"] / b["p99_ms"] for a, b in pairs if b["p99_ms"]]
            cpu = [a["cpu_us"] / b["cpu_us"] for a, b in pairs if b.get("cpu_us")]
            ratio_rows.append(
                [fam.title, _label(fam.peer), _spread(rps), _spread(p99), _spread(cpu)]
            )
    conf = http["config"]
    notes = [
        f"{conf['workers']} app processes per variant ({conf['servers']}), "
        f"{conf['tool']} with {conf['connections']} connections, "
        f"{conf['seconds']:g} s per variant per round, {conf['rounds']} interleaved rounds "
        f"(medians), {conf['sessions']} sessions per variant, "
        f"{round(conf['write_share'] * 100)} % POST /write, the rest GET /read.",
        "The connections keep every process busy: this is throughput at saturation, and the "
        "latencies include queueing.",
        "Errors: non-2xx answers and socket errors. Round trips and Valkey CPU (used_cpu_sys + "
        "used_cpu_user, less the idle server) per request served, over the whole run.",
    ]
    return [
        Table(
            "Over HTTP: requests per second and latency",
            [
                "family",
                "variant",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "round trips/req",
                "Valkey CPU µs/req",
            ],
            rows,
            notes,
        ),
        Table(
            "Over HTTP: stickless / peer (median of per-round ratios, their range in brackets)",
            [
                "family",
                "peer",
                "req/s (above 1 = stickless faster)",
                "p99 latency",
                "Valkey CPU per request",
            ],
            ratio_rows,
        ),
    ]


# ---------------------------------------------------------------------------- output
def print_console(raw: dict[str, Any], console: Any) -> None:
    from rich.table import Table as RichTable

    for t in tables(raw):
        table = RichTable(title=t.title, title_justify="left", show_lines=False)
        for i, h in enumerate(t.headers):
            table.add_column(h, justify="left" if i < 2 else "right")
        for row in t.rows:
            table.add_row(*row)
        console.print(table)
        for note in t.notes:
            console.print(f"  [dim]{note}[/dim]", highlight=False)
    skipped = raw.get("skipped") or {}
    for name, why in skipped.items():
        console.print(f"[yellow]skipped {name}: {why}[/yellow]")


def _markdown(t: Table) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        f"### {t.title}",
        "",
        "| " + " | ".join(cell(h) for h in t.headers) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(t.headers))) + "|",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    if t.notes:
        lines.append("")
        lines += [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


def write_docs(raw: dict[str, Any], docs: Path) -> Path:
    charts_dir = docs / "benchmarks"
    charts_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(raw, charts_dir)
    meta = raw["meta"]
    server = meta.get("server", {})
    versions = meta["versions"]
    all_tables = tables(raw)
    parts = [
        "# Benchmarks",
        "",
        "Written by `.venv/bin/python benchmarks/run.py"
        + (" --http" if raw.get("http") else "")
        + " --write-docs` (rerun it on your machine; `--url redis://...` for your own "
        "server, `--quick` for a smoke run). Every variant runs the same app "
        "(`benchmarks/bench_apps.py`) in the same process against the same server, "
        "interleaved round by round, so machine noise hits all alike: read the ratios, "
        "not the absolute numbers. [performance.md](performance.md) says what bounds the "
        "ratios a target misses, and how far they move between runs on a shared machine.",
        "",
        f"- Date: {meta['started']}; run took {meta.get('seconds', '?')} s"
        + (" (quick mode: numbers are not meaningful)" if meta.get("quick") else ""),
        f"- Machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['memory']} memory, "
        f"{meta['os']}; load average {_load(meta.get('load_before'))} before, "
        f"{_load(meta.get('load_after'))} after (the machine may be shared: the load "
        "counts other work too)",
        f"- Server: {server.get('server')} {server.get('version')}"
        + (" (embedded, stickless.embedded)" if meta.get("embedded") else " (--url)")
        + f", io-threads {server.get('io_threads')}, hash-max-listpack-value "
        f"{server.get('hash-max-listpack-value')}, hash-max-listpack-entries "
        f"{server.get('hash-max-listpack-entries')}",
        f"- Valkey CPU corrections: one INFO of the benchmark costs "
        f"{meta.get('probe_info_cpu_us', '?')} µs, the idle server "
        f"{meta.get('idle_cpu_us_per_s', '?')} µs per second (both taken out of each batch)",
        f"- Python {meta['python']}; " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
    ]
    if raw.get("skipped"):
        parts += [f"- Skipped: {k} ({v})" for k, v in raw["skipped"].items()] + [""]
    parts.append("## Results\n")
    targets = targets_table(raw)
    if targets is not None:
        parts.append(_markdown(targets))
    for t in all_tables:
        parts.append(_markdown(t))
    if charts:
        parts.append("## Charts\n")
        parts += [f"![{c.stem}](benchmarks/{c.name})\n" for c in charts]
    parts.append(
        "The raw results of this run (every round of every variant) are in "
        "[benchmarks/results.json](benchmarks/results.json); "
        "`benchmarks/run.py --from-json docs/benchmarks/results.json --write-docs` "
        "renders this page again from them.\n"
    )
    parts.append(_METHOD)
    path = docs / "benchmarks.md"
    path.write_text("\n".join(parts))
    (charts_dir / "results.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    return path


def _load(value: Sequence[float] | None) -> str:
    return " / ".join(f"{x:.2f}" for x in value) if value else "?"


_METHOD = """## How it is measured

- **In-process.** Each web variant is called directly through WSGI (Flask, Django, bare
  WSGI) or ASGI (Starlette, in one asyncio loop): the whole framework and middleware path
  runs, without a test client on top; the response's session cookie is sent back on the
  next request as a browser would. The stores and floors are called directly. Each batch
  runs n requests of one kind (n calibrated once so a batch lasts about 0.25 s, at least
  400 requests); a round runs every variant once per kind, members of one family next to
  each other, their order rotated each round. Ratios are medians of the per-round ratios.
- **Round trips** are the server's `total_reads_processed` delta (one read event per
  request a client sends; a pipeline is one), and **commands** come from MONITOR, in a
  separate counting pass: exact, independent of timing.
- **Valkey time** is the `usec` delta of `INFO commandstats` for the commands clients sent
  (a script's usec includes the commands it runs, which are not added again); **Valkey
  CPU** is the server process's `used_cpu_sys + used_cpu_user` delta over each timed
  batch, less what the benchmark's own `INFO` call and the idle server cost (both
  measured at start, in the page's header): it includes reading and writing sockets,
  the cost that grows with round trips. Both are per request, the median over the
  rounds (a spike of a shared machine hits one round, not the result); the totals over
  all timed requests are in the `--json` output.
- **Memory** is `MEMORY USAGE key SAMPLES 0` of what each variant stores for a new session
  of each shape, written through its own app (the peers' blobs in their own formats);
  each figure is the median of the new sessions measured (see the table's notes).
- **Over HTTP** (`--http`), each variant runs as its own server with 3 worker processes
  (gunicorn sync workers for Flask and Django, uvicorn for Starlette) on 127.0.0.1; wrk
  (Debian's package, installed with apt-get when missing) drives a 90 % read / 10 % write
  mix over many existing sessions, variants interleaved in rounds of a fixed duration.
  Cookie-session variants get their cookie from the session's creation and keep it (wrk
  does not update cookies), which changes nothing in their cost.
- Peers run with their documented defaults: Flask-Session's redis backend (msgpack,
  refresh on every request), starsessions' RedisStore with explicit `load_session`
  (its lazy default) and a rolling 14-day lifetime, Django's cache engine on django-redis
  (pickle). stickless runs with its defaults (Flask and Django: token signing from
  `SECRET_KEY` as documented).
"""


def write_charts(raw: dict[str, Any], directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    res = Results(raw)
    written: list[Path] = []
    colors = {"base": "#9e9e9e", "peer": "#e07b39", "stickless": "#2b7bba"}

    families = [f for f in core.FAMILIES if res.has(f.stickless)]
    if families:
        fig, axes = plt.subplots(1, len(families), figsize=(3.2 * len(families), 4.2))
        axes_list = list(axes) if len(families) > 1 else [axes]
        for ax, fam in zip(axes_list, families, strict=True):
            names = [n for n in (fam.base, fam.peer, fam.stickless) if n and res.has(n)]
            width = 0.8 / max(1, len(names))
            for i, name in enumerate(names):
                values = [res.us(name, k) or 0.0 for k in core.KINDS]
                role = core.BY_NAME[name].role
                ax.bar(
                    [x + i * width for x in range(len(core.KINDS))],
                    values,
                    width,
                    label=_label(name),
                    color=colors.get(role),
                )
            ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(core.KINDS))])
            ax.set_xticklabels(core.KINDS)
            ax.set_title(fam.title)
            ax.set_ylabel("µs per request")
            ax.legend(fontsize=7)
        fig.suptitle("In-process: µs per request (lower is better)")
        fig.tight_layout()
        written.append(_save(fig, directory / "inprocess.png", plt))

        fig, ax = plt.subplots(figsize=(10, 4.2))
        width = 0.38
        for i, kind in enumerate(("read", "write")):  # untouched: 0 vs 2 round trips, off scale
            values = [res.ratio(f.stickless, f.peer, kind) or 0.0 for f in families]
            xs = [x + i * width for x in range(len(families))]
            bars = ax.bar(xs, values, width, label=kind, color=("#2b7bba", "#e07b39")[i])
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([x + width / 2 for x in range(len(families))])
        ax.set_xticklabels(
            [f"{f.title}\nvs {SHORT.get(f.peer, f.peer)}" for f in families], fontsize=8
        )
        ax.set_ylabel("stickless / peer")
        ax.set_title(
            "In-process: stickless / peer, read and write (median of per-round "
            "ratios; below 1 is faster)"
        )
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, directory / "ratios.png", plt))

    if res.memory:
        shapes = list(apps.SHAPES)
        palette = {
            "flask-session": "#e07b39",
            "starsessions": "#c9a227",
            "django-cache": "#8c564b",
            "wsgi-blob": "#9e9e9e",
            "stickless-store": "#2b7bba",
        }
        names = [n for n in palette if n in res.memory]
        fig, ax = plt.subplots(figsize=(9, 4.2))
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            values = [res.memory[name][s]["session"] for s in shapes]
            label = "stickless (core store)" if name == "stickless-store" else _label(name)
            ax.bar(
                [x + i * width for x in range(len(shapes))],
                values,
                width,
                label=label,
                color=palette[name],
            )
        ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(shapes))])
        ax.set_xticklabels([apps.SHAPE_LABELS[s] for s in shapes])
        ax.set_ylabel("bytes (MEMORY USAGE)")
        ax.set_title("Memory per session (lower is better)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, directory / "memory.png", plt))

    http = raw.get("http")
    if http:
        runs = http["runs"]
        fams = [f for f in core.FAMILIES if f.stickless in runs]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, key, title in (
            (axes[0], "rps", "requests per second (higher is better)"),
            (axes[1], "p99_ms", "p99 latency, ms (lower is better)"),
        ):
            width = 0.27
            for i, role in enumerate(("base", "peer", "stickless")):
                values = []
                for fam in fams:
                    member = {"base": fam.base, "peer": fam.peer, "stickless": fam.stickless}
                    vals = [r[key] for r in runs.get(member[role] or "", [])]
                    values.append(statistics.median(vals) if vals else 0.0)
                ax.bar(
                    [x + i * width for x in range(len(fams))],
                    values,
                    width,
                    label=role,
                    color=colors[role],
                )
            ax.set_xticks([x + width for x in range(len(fams))])
            ax.set_xticklabels([f.title for f in fams])
            ax.set_title(title)
            ax.legend(fontsize=7)
        fig.suptitle("Over HTTP: 3 processes per variant, 90 % read / 10 % write")
        fig.tight_layout()
        written.append(_save(fig, directory / "http.png", plt))
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
