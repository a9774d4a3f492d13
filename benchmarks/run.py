"""stickless against its peers, side by side and interleaved: one command.

    .venv/bin/python benchmarks/run.py [--url redis://...] [--rounds 9] [--quick] [--http]
                                       [--only flask,django,...] [--json out.json]
                                       [--write-docs]

Without ``--url`` it starts an embedded Valkey (stickless.embedded.start_standalone). With
``--url``, use a quiet standalone server: round trips and Valkey time are read from the
server's own counters, so other clients' traffic would be counted too. Keys are written
under ``slb<run id>.*`` and deleted at the end.

What it measures (see docs/benchmarks.md for the last full run):

* in-process: the Flask, Starlette (ASGI), Django and WSGI adapters and both stores against
  Flask-Session, starsessions, Django's cache engine on django-redis, a hand-written blob
  middleware, each framework's cookie session, and raw redis-py floors: µs per request for
  an untouched route, a read and a write on an existing 10-key session, per-round ratios
  against the family's peer (median), round trips, Valkey time and Valkey CPU per request;
* memory per session (MEMORY USAGE) for four shapes;
* lost updates: 50 overlapping writes of different keys to one session;
* with ``--http``: 3 app processes per variant (gunicorn for Flask and Django, uvicorn for
  Starlette) under wrk, 90 % reads / 10 % writes over many sessions: requests per second,
  p50 and p99 latency.

The peers are in the ``bench`` extra: ``.venv/bin/pip install -e '.[bench]'``; a variant
whose package is missing is skipped (and said so). ``--quick`` is a smoke run of a few
seconds whose numbers mean little.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_core as core  # noqa: E402
import bench_memory  # noqa: E402
import bench_report as report  # noqa: E402
import redis  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

REPO = HERE.parent
DOCS = REPO / "docs"


class PhaseProgress(Progress):
    """rich's progress bar; where the console is no terminal (a pipe, a CI log), one plain
    line per phase instead of a live bar."""

    _phase = ""

    def update(self, task_id: TaskID, **fields: Any) -> None:
        description = fields.get("description")
        if description and not self.console.is_terminal:
            words = str(description).split()
            phase = " ".join(words[: 3 if len(words) > 1 and words[1] == "round" else 2])
            if phase != self._phase:
                self._phase = phase
                self.console.print(f"{time.strftime('%H:%M:%S')} {phase}", highlight=False)
        super().update(task_id, **fields)


def run_inprocess(
    ctx: core.Context,
    probe: core.Probe,
    plan: core.Plan,
    variants: list[core.Variant],
    progress: Progress,
) -> dict[str, Any]:
    built: dict[str, core.Built] = {}
    results: dict[tuple[str, str], core.CaseResult] = {}
    cases = [(v, kind) for v in variants for kind in v.kinds]
    steps = len(variants) + 2 * len(cases) + plan.rounds * len(cases)
    task = progress.add_task("in-process", total=steps)
    try:
        for variant in variants:
            progress.update(task, description=f"in-process: building {variant.name}")
            built[variant.name] = core.build(variant, ctx)
            progress.advance(task)
        warm = max(10, min(plan.min_n, 100))
        for variant, kind in cases:  # warm up (scripts cached, pools open) and calibrate
            progress.update(task, description=f"in-process: warming {variant.name} {kind}")
            run = built[variant.name].runners[kind]
            run(warm)
            per_request = run(warm) / warm
            n = round(plan.target_s / max(per_request, 1e-7))
            results[variant.name, kind] = core.CaseResult(
                variant.name, kind, n=max(plan.min_n, min(plan.max_n, n))
            )
            progress.advance(task)
        with probe.monitor() as count:  # round trips and commands, exact
            for variant, kind in cases:
                progress.update(task, description=f"in-process: counting {variant.name} {kind}")
                counted = count(built[variant.name].runners[kind], plan.count_n)
                result = results[variant.name, kind]
                result.round_trips = counted.round_trips
                result.commands = counted.commands
                result.script_commands = sum(counted.lua.values()) / counted.n
                result.top_share = {c: counted.share(c) for c in counted.top | counted.lua}
                progress.advance(task)
        kinds = [*core.KINDS, core.FLOOR_KIND]
        for r in range(plan.rounds):  # interleaved: round by round, neighbours compared
            for kind in kinds:
                for family in core.FAMILY_NAMES:
                    members = [v for v in variants if v.family == family and kind in v.kinds]
                    if not members:
                        continue
                    shift = r % len(members)
                    for variant in members[shift:] + members[:shift]:
                        progress.update(
                            task,
                            description=f"in-process: round {r + 1}/{plan.rounds} "
                            f"{variant.name} {kind}",
                        )
                        result = results[variant.name, kind]
                        before = probe.snapshot()
                        elapsed = built[variant.name].runners[kind](result.n)
                        delta = probe.snapshot().minus(before)
                        result.add_round(elapsed, delta, probe.net_cpu(delta, elapsed))
                        progress.advance(task)
        memory = {}
        client = redis.Redis.from_url(ctx.url, decode_responses=True)
        try:
            for variant in variants:
                make = built[variant.name].shape
                if variant.stores and make is not None:
                    progress.update(task, description=f"memory: {variant.name}")
                    memory[variant.name] = bench_memory.measure(
                        client, ctx.prefix(variant.name), make
                    )
        finally:
            client.close()
    finally:
        for b in built.values():
            with contextlib.suppress(Exception):
                b.close()
    return {
        "cases": [r.as_dict() for r in results.values()],
        "memory": memory,
    }


def cleanup(url: str, run_id: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        batch = []
        for key in client.scan_iter(match=f"slb{run_id}.*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="stickless vs its peers, side by side (see docs/benchmarks.md)"
    )
    parser.add_argument("--url", help="a standalone Redis/Valkey (default: embedded Valkey)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15; --quick 3)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: smoke run")
    parser.add_argument("--http", action="store_true", help="also over real HTTP (wrk)")
    parser.add_argument(
        "--http-seconds", type=float, help="seconds per variant per round (default 6)"
    )
    parser.add_argument("--http-rounds", type=int, help="interleaved HTTP rounds (default 5)")
    parser.add_argument(
        "--only",
        help="comma-separated families: " + ",".join(core.FAMILY_NAMES) + " (default all)",
    )
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write docs/benchmarks.md and docs/benchmarks/*.png",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="measure nothing: print (and with --write-docs, write) the results saved by --json",
    )
    parser.add_argument("--docs-dir", type=Path, default=DOCS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        report.print_console(saved, Console(width=None if sys.stdout.isatty() else 180))
        if args.write_docs:
            Console(stderr=True).print(f"wrote {report.write_docs(saved, args.docs_dir)}")
        return 0

    plan = core.QUICK if args.quick else core.FULL
    if args.rounds:
        if args.rounds < 1:
            parser.error("--rounds must be >= 1")
        plan = core.Plan(args.rounds, plan.target_s, plan.min_n, plan.max_n, plan.count_n)
    families = set(core.FAMILY_NAMES)
    if args.only:
        families = {f.strip() for f in args.only.split(",") if f.strip()}
        unknown = families - set(core.FAMILY_NAMES)
        if unknown:
            parser.error(f"unknown families: {', '.join(sorted(unknown))}")
        families.add("floor")  # the floors are the yardstick of every family
    wanted = [v for v in core.VARIANTS if v.family in families]
    skipped = {
        v.name: "not installed (pip install -e '.[bench]')" for v in wanted if not v.available()
    }
    variants = [v for v in wanted if v.name not in skipped]

    console = Console(stderr=True)
    run_id = uuid.uuid4().hex[:8]
    meta = report.machine_info()
    meta.update(
        quick=args.quick,
        rounds=plan.rounds,
        run_id=run_id,
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        load_before=os.getloadavg(),
    )
    results: dict[str, Any] = {"meta": meta, "skipped": skipped}
    started = time.monotonic()
    with core.valkey(args.url) as (url, server_pid):
        meta["embedded"] = server_pid is not None
        probe = core.Probe(url)
        meta["server"] = probe.server_info()
        probe.calibrate(0.3 if args.quick else 2.0)
        meta["probe_info_cpu_us"] = round(probe.info_cpu * 1e6, 1)
        meta["idle_cpu_us_per_s"] = round(probe.idle_cpu_per_s * 1e6, 1)
        loop = core.new_loop()
        ctx = core.Context(url=url, run_id=run_id, loop=loop)
        progress = PhaseProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        try:
            with progress:
                results["inprocess"] = run_inprocess(ctx, probe, plan, variants, progress)
                results["lost_updates"] = core.lost_updates(url, run_id)
                if args.http:
                    import bench_http

                    results["http"] = bench_http.run(
                        url,
                        run_id,
                        probe,
                        progress,
                        families=families,
                        seconds=args.http_seconds or (2.0 if args.quick else 6.0),
                        rounds=args.http_rounds or (1 if args.quick else 5),
                        console=console,
                    )
        finally:
            loop.close()
            with contextlib.suppress(Exception):
                cleanup(url, run_id)
            probe.client.close()
    meta["load_after"] = os.getloadavg()
    meta["seconds"] = round(time.monotonic() - started, 1)
    report.print_console(results, Console(width=None if sys.stdout.isatty() else 180))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.write_docs:
        path = report.write_docs(results, args.docs_dir)
        console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
