"""What a run measured, computed from the client's records and what the store holds.

Definitions (also in docs/reliability.md):

* **acknowledged writes lost**: per client, the larger of two counts: requests answered 200
  whose sequence number is not in the client's cart at the end (each request appends its
  number, so the cart says which requests the store kept), and how many acknowledged
  increments the counter lacks (acknowledged requests minus ``n``: a lower bound, since
  applied unacknowledged writes raise ``n``). The second catches a write whose append was
  carried over by a later request that read a stale primary while its increment was lost.
  A client whose session vanished and who got a new one loses all it had acknowledged
  before: those count too.
* **applied, not acknowledged**: numbers in the cart of requests that were *not* answered
  200 (503 after the write was applied, a timeout, a reset): not a loss, but what a client
  that retries would see twice.
* **counter**: the session's ``n`` (``incr``) must equal the cart's length; a difference is
  reported as a mismatch.
* **error window**: from the first to the last answer that was not a 200 (answers arriving
  after the first fault, including transport errors), in seconds.
* **slowest answer**: the longest request (sent to answered) among those answered after the
  first fault: what a stall costs a user even when nothing fails.
* **recovery** (per app process): from a fault to the first 200 that app process answered
  after its last failure among the requests sent in that fault's span (up to the next
  fault; a request in flight at the first fault counts there); 0 when it never failed.
  "never" when no 200 followed its last failure. A process still failing when the next
  fault comes recovers from the earlier fault only with its first 200 after that (its
  outage runs on through the next fault). The run's figure is the worst over the faults.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from faults.load import TRANSPORT_ERROR, ClientState, Record

REPO: Final = Path(__file__).resolve().parents[1]
DOCS_START: Final = "<!-- faults:results:start -->"
DOCS_END: Final = "<!-- faults:results:end -->"


@dataclass
class Stored:
    """What the store holds for one client at the end."""

    found: bool
    counter: int | None
    cart: list[int]


@dataclass
class Result:
    scenario: str
    title: str
    topology: str
    durability: str
    apps: list[str]
    requests: int = 0
    ok: int = 0
    unavailable: int = 0
    """503 answers."""
    other_5xx: int = 0
    other: int = 0
    """4xx and other non-200 answers that are not 5xx."""
    transport: int = 0
    """No HTTP answer (refused, reset, timeout)."""
    lost: int = 0
    lost_clients: int = 0
    lost_from_cart: int = 0
    """Acknowledged numbers missing from the carts."""
    lost_from_counter: int = 0
    """Acknowledged increments the counters lack (a lower bound)."""
    applied_unacked: int = 0
    counter_mismatch: int = 0
    sessions_replaced: int = 0
    slowest: float | None = None
    """Longest request answered after the first fault (seconds)."""
    window: tuple[float, float] | None = None
    """(first, last) non-200 answer, seconds after the first fault."""
    recovery: list[float | None] = field(default_factory=list)
    """Per app process (same order as ``apps``): worst recovery over the faults."""
    recovery_per_fault: list[list[float | None]] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    """(seconds after the load started, label)."""
    notes: list[tuple[float, str]] = field(default_factory=list)
    duration: float = 0.0
    rate: float = 0.0
    failovers: int = 0
    """Failovers the servers logged (Sentinel ``+switch-master``, cluster elections won)."""
    failover_log: list[str] = field(default_factory=list)
    settled: str = ""
    error: str | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    statuses_by_app: list[dict[str, int]] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    """Each acknowledged request missing from its cart, with the client's requests around
    it (app, status, when sent and answered after the first fault): where to look."""

    @property
    def error_window(self) -> float | None:
        return None if self.window is None else self.window[1] - self.window[0]

    @property
    def recovered(self) -> bool:
        return self.error is None and all(r is not None for r in self.recovery)


def analyse(
    result: Result,
    *,
    records: Sequence[Record],
    clients: Sequence[ClientState],
    stored: dict[int, Stored],
    fault_times: Sequence[float],
    servers: int,
) -> Result:
    """Fill ``result`` from the records, the client states and the stored sessions."""
    result.requests = len(records)
    statuses: dict[str, int] = {}
    by_app: list[dict[str, int]] = [{} for _ in range(servers)]
    for record in records:
        key = str(record.status) if record.status != TRANSPORT_ERROR else record.error
        statuses[key] = statuses.get(key, 0) + 1
        by_app[record.server][key] = by_app[record.server].get(key, 0) + 1
        if record.status == 200:
            result.ok += 1
        elif record.status == 503:
            result.unavailable += 1
        elif record.status >= 500:
            result.other_5xx += 1
        elif record.status == TRANSPORT_ERROR:
            result.transport += 1
        else:
            result.other += 1
    result.statuses = dict(sorted(statuses.items()))
    result.statuses_by_app = [dict(sorted(counts.items())) for counts in by_app]

    for client in clients:
        held = stored.get(client.index, Stored(False, None, []))
        kept = set(held.cart)
        from_cart = sum(1 for seq in client.acked if seq not in kept)
        counter = (held.counter or 0) if held.found else 0
        from_counter = max(0, len(client.acked) - counter)
        lost = max(from_cart, from_counter)
        result.lost += lost
        result.lost_clients += bool(lost)
        result.lost_from_cart += from_cart
        result.lost_from_counter += from_counter
        if from_cart:
            mine = {r.seq: r for r in records if r.client == client.index}
            first = fault_times[0] if fault_times else 0.0
            for seq in (s for s in client.acked if s not in kept):
                around = (mine[n] for n in range(seq - 1, seq + 3) if n in mine)
                result.losses.append(
                    f"client {client.index}: #{seq} missing; "
                    + ", ".join(_request_text(r, first, result.apps) for r in around)
                )
        result.applied_unacked += len(kept.difference(client.acked))
        if held.found and (held.counter or 0) != len(held.cart):
            result.counter_mismatch += 1
        result.sessions_replaced += max(0, client.tokens - 1)

    if fault_times:
        first = fault_times[0]
        bad = [r.end - first for r in records if r.status != 200 and r.end >= first]
        if bad:
            result.window = (min(bad), max(bad))
        result.slowest = max((r.end - r.start for r in records if r.end >= first), default=None)
        per_fault: list[list[float | None]] = []
        bounds = [*fault_times[1:], float("inf")]
        answered = [r for r in records if r.end >= first]
        for start, stop in zip(fault_times, bounds, strict=True):
            # a request belongs to the fault it was sent under (in flight at the first
            # fault: the first), however late its answer comes
            span = [r for r in answered if start <= max(r.start, first) < stop]
            later = [r for r in records if r.end >= start]
            per_fault.append([_recovery(span, later, app, start) for app in range(servers)])
        result.recovery_per_fault = per_fault
        result.recovery = [
            None
            if any(row[app] is None for row in per_fault)
            else max(row[app] or 0.0 for row in per_fault)
            for app in range(servers)
        ]
    return result


def _request_text(record: Record, first: float, app_names: Sequence[str]) -> str:
    app = app_names[record.server] if record.server < len(app_names) else record.server
    return (
        f"#{record.seq} {app} {record.status or record.error} "
        f"{record.start - first:+.3f}..{record.end - first:+.3f} s"
    )


def _recovery(
    span: Sequence[Record], later: Sequence[Record], app: int, fault: float
) -> float | None:
    """From ``fault`` to ``app``'s first 200 after its last failure in ``span`` (the
    requests sent under the fault), that 200 looked for in ``later`` (every answer from
    the fault on):
    a process still failing when the next fault comes recovers when it answers 200 again,
    whichever fault that follows."""
    failures = [r.end for r in span if r.server == app and r.status != 200]
    if not failures:
        return 0.0
    last = max(failures)
    ok = (r.end for r in later if r.server == app and r.status == 200 and r.end > last)
    after = min(ok, default=None)
    return None if after is None else after - fault


def write_requests(
    path: Path,
    records: Sequence[Record],
    started: float,
    apps: Sequence[str],
    marks: Sequence[tuple[float, str]],
) -> None:
    """Every request of a run as CSV, for reading a run afterwards: times in seconds since
    the load started, the app that answered, the status (0: no HTTP answer) and error; then
    the faults and notes of the timeline (``marks``, same clock) as rows of their own."""
    with path.open("w", newline="") as out:
        rows = csv.writer(out)
        rows.writerow(["start_s", "end_s", "client", "seq", "app", "status", "error"])
        for r in sorted(records, key=lambda r: r.end):
            app = apps[r.server] if r.server < len(apps) else str(r.server)
            start, end = f"{r.start - started:.3f}", f"{r.end - started:.3f}"
            rows.writerow([start, end, r.client, r.seq, app, r.status, r.error])
        for at, label in marks:
            rows.writerow([f"{at:.3f}", f"{at:.3f}", "", "", "timeline", "", label])


# ------------------------------------------------------------------------------ printing
def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def window_text(result: Result) -> str:
    if result.window is None:
        return "none"
    first, last = result.window
    return f"{last - first:.1f} s (+{first:.1f} to +{last:.1f})"


def recovery_text(result: Result) -> str:
    if not result.recovery:
        return "-"
    return " / ".join(_seconds(r) for r in result.recovery)


def describe(result: Result) -> str:
    """A few lines for the terminal."""
    lines = [f"== {result.scenario} [{result.durability}] {result.title}"]
    if result.error:
        lines.append(f"   ERROR: {result.error}")
    for at, label in sorted([*result.faults, *((t, "  " + n) for t, n in result.notes)]):
        lines.append(f"   t={at:6.2f} s  {label}")
    lines.append(
        f"   requests {result.requests} in {result.duration:.1f} s ({result.rate:.0f}/s): "
        f"200: {result.ok}, 503: {result.unavailable}, other 5xx: {result.other_5xx}, "
        f"other: {result.other}, no answer: {result.transport}"
    )
    for name, counts in zip(result.apps, result.statuses_by_app, strict=False):
        lines.append(f"     {name:7} {counts}")
    lines.append(
        f"   acknowledged writes lost: {result.lost} (in {result.lost_clients} sessions; "
        f"missing from carts {result.lost_from_cart}, from counters {result.lost_from_counter}); "
        f"applied but not acknowledged: {result.applied_unacked}; "
        f"counter mismatches: {result.counter_mismatch}; "
        f"sessions replaced: {result.sessions_replaced}"
    )
    lines.append(
        f"   error window: {window_text(result)}; slowest answer: {_seconds(result.slowest)}"
    )
    apps = ", ".join(
        f"{name} {_seconds(r)}" for name, r in zip(result.apps, result.recovery, strict=False)
    )
    lines.append(f"   recovery: {apps or '-'}")
    if len(result.recovery_per_fault) > 1:
        for i, row in enumerate(result.recovery_per_fault, 1):
            lines.append(f"     after fault {i}: " + " / ".join(_seconds(r) for r in row))
    if result.settled:
        lines.append(
            f"   settled: {result.settled}; failovers logged by the servers: {result.failovers}"
        )
    lines.extend(f"     {line[:140]}" for line in result.failover_log)
    lines.extend(f"   lost: {line}" for line in result.losses)
    return "\n".join(lines)


def table_header(apps: Sequence[str]) -> str:
    return (
        "| scenario | durability | requests | 200 | 503 | other 5xx | other / no answer "
        "| acknowledged writes lost | applied, not acknowledged | error window | slowest answer "
        f"| recovery ({' / '.join(apps) or 'per app'}) | failovers |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|\n"
    )


def table(results: Sequence[Result]) -> str:
    """The Markdown results table."""
    rows = []
    for r in results:
        if r.error:
            reason = r.error.splitlines()[0].replace("|", "/")
            rows.append(f"| {r.scenario} | {r.durability} | run failed: {reason} |||||||||||\n")
            continue
        lost = f"**{r.lost}**" if r.lost else "0"
        other5 = f"**{r.other_5xx}**" if r.other_5xx else "0"
        rows.append(
            f"| {r.scenario} | {r.durability} | {r.requests} | {r.ok} | {r.unavailable} | {other5} "
            f"| {r.other + r.transport} | {lost} | {r.applied_unacked} | {window_text(r)} "
            f"| {_seconds(r.slowest)} | {recovery_text(r)} | {r.failovers} |\n"
        )
    apps = next((r.apps for r in results if r.apps), [])
    return table_header(apps) + "".join(rows)


def log_digest(log_dir: Path, limit: int = 12) -> str:
    """The distinct error lines of the app servers' logs under ``log_dir``, most frequent
    first (for a failed check: which exception became which answer)."""
    lines = []
    for log in sorted(log_dir.rglob("*.log")):
        counts: dict[str, int] = {}
        for line in log.read_text(errors="replace").splitlines():
            if re.search(r"Error|Exception|error|failed", line) and not line.startswith(" "):
                key = re.sub(r"\b\d{4,5}\b", "N", line.strip())[:240]
                counts[key] = counts.get(key, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        if top:
            lines.append(f"--- {log.relative_to(log_dir)}")
            lines.extend(f"{n:5} x {text}" for text, n in top)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- metadata
def _run(*args: str) -> str:
    try:
        out = subprocess.run(
            args, capture_output=True, text=True, timeout=10, check=False, cwd=REPO
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


COMMIT_ENV: Final = "STICKLESS_FAULTS_COMMIT"
"""Set by ``--ref``: the commit the exported tree was made from."""


def library_commit() -> str:
    """``<short hash>`` of HEAD, with a note when src/stickless has uncommitted changes (or
    the commit a ``--ref`` export was made from, a clean tree)."""
    exported = os.environ.get(COMMIT_ENV)
    if exported:
        return f"{exported} (clean export)"
    head = _run("git", "rev-parse", "--short", "HEAD") or "unknown"
    dirty = _run("git", "status", "--porcelain", "--", "src/stickless")
    return f"{head} + uncommitted changes in src/stickless" if dirty else head


def machine() -> dict[str, str]:
    """Where and with what the suite ran."""
    from importlib.metadata import version  # noqa: PLC0415

    from stickless.embedded import valkey_binary  # noqa: PLC0415

    cpu = platform.processor() or platform.machine()
    with_cpu = Path("/proc/cpuinfo")
    if with_cpu.exists():
        match = re.search(r"model name\s*:\s*(.+)", with_cpu.read_text())
        if match:
            cpu = match.group(1).strip()
    valkey = _run(str(valkey_binary()), "--version")
    match = re.search(r"v=(\S+)", valkey)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "valkey": match.group(1) if match else valkey or "unknown",
        "redis-py": version("redis"),
        "stickless": library_commit(),
    }


def meta_text(meta: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in meta.items())


# -------------------------------------------------------------------------------- output
def write_json(path: Path, results: Sequence[Result], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )


DOCS_SKELETON: Final = """# Reliability

What stickless keeps through failures, measured from outside by the fault-injection suite
in `faults/` (see the end of this page for how to run it).

## Measured results

{start}
{end}
"""


def write_docs(path: Path, results: Sequence[Result], meta: dict[str, Any], settings: str) -> None:
    """Replace the results block of ``path`` (between the markers), creating the page or the
    block if missing; the rest of the page is left as it is."""
    block = (
        f"{DOCS_START}\nRun: {meta_text(meta)}.\nLoad: {settings}.\n\n{table(results)}{DOCS_END}"
    )
    text = (
        path.read_text() if path.exists() else DOCS_SKELETON.format(start=DOCS_START, end=DOCS_END)
    )
    if DOCS_START in text and DOCS_END in text:
        head, _, rest = text.partition(DOCS_START)
        _, _, tail = rest.partition(DOCS_END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Measured results\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
