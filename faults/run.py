"""The command line of the fault-injection suite.

::

    .venv/bin/python -m faults                      # every scenario, both durabilities
    .venv/bin/python -m faults --short              # the CI subset
    .venv/bin/python -m faults -s sentinel-kill9 -d replicated
    .venv/bin/python -m faults --list
    .venv/bin/python -m faults --write-docs         # also update docs/reliability.md

Exit status: 0 when every run completed (and, with ``--check``, met the targets: no
acknowledged write lost with ``replicated``, no 5xx other than 503, every app process
recovered by itself), 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a file: python faults/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faults.farm import KINDS
from faults.report import (
    COMMIT_ENV,
    REPO,
    Result,
    describe,
    log_digest,
    machine,
    meta_text,
    table,
    write_docs,
    write_json,
)

if TYPE_CHECKING:  # imported in main() only: --ref must not import the working tree's library
    from faults.runner import Options
    from faults.scenarios import Scenario

DOCS = REPO / "docs" / "reliability.md"


def violations(result: Result) -> list[str]:
    """Where ``result`` misses the targets of issue 8."""
    problems = []
    if result.error:
        problems.append("the run failed")
    if result.durability == "replicated" and result.lost:
        problems.append(f"{result.lost} acknowledged writes lost")
    if result.other_5xx:
        problems.append(f"{result.other_5xx} answers 5xx other than 503")
    if not result.error and not result.recovered:
        problems.append("an app process did not recover")
    return problems


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-s",
        "--scenario",
        action="append",
        metavar="NAME",
        help="run only these (repeatable; --list shows them)",
    )
    parser.add_argument(
        "-t",
        "--topology",
        action="append",
        choices=["standalone", "sentinel", "cluster"],
        help="only scenarios on these topologies",
    )
    parser.add_argument(
        "-d", "--durability", choices=["none", "replicated", "both"], default="both"
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="the CI subset: Sentinel and Cluster kill -9, replicated",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument(
        "--think", type=float, default=0.1, help="seconds between a client's requests (default 0.1)"
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--max-after", type=float, default=25.0, help="longest run after the fault (s)"
    )
    parser.add_argument(
        "--apps", default=",".join(KINDS), help="app processes, e.g. asgi,flask,django (default)"
    )
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="run each scenario this many times")
    parser.add_argument("--json", type=Path, help="write every result to this JSON file")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"update the table in {DOCS.relative_to(REPO)}"
    )
    parser.add_argument(
        "--logs", type=Path, help="keep the app servers' logs and each run's requests.csv here"
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=DOCS,
        help="the page --write-docs updates (default: %(default)s)",
    )
    parser.add_argument(
        "--ref",
        help="run against a clean export of this git commit (e.g. HEAD) instead of the working "
        "tree, so that edits in progress cannot change the library during the run",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a run misses the targets")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 200 or args.think < 0.01 or not 1 <= args.repeat <= 10:
        parser.error("--clients 1..200, --think >= 0.01, --repeat 1..10")
    args.apps = tuple(a.strip() for a in args.apps.split(",") if a.strip())
    if not args.apps or any(a not in KINDS for a in args.apps):
        parser.error(f"--apps: a comma-separated list of {', '.join(KINDS)}")
    return args


def selected(args: argparse.Namespace) -> list[tuple[Scenario, str]]:
    from faults.scenarios import SCENARIOS  # noqa: PLC0415  (see TYPE_CHECKING above)

    unknown = sorted(set(args.scenario or ()) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)} (see --list)")
    runs = []
    for scenario in SCENARIOS.values():
        if args.short and not scenario.short:
            continue
        if args.scenario and scenario.name not in args.scenario:
            continue
        if args.topology and scenario.topology not in args.topology:
            continue
        for durability in scenario.durabilities:
            if args.short and durability != "replicated":
                continue
            if args.durability in (durability, "both"):
                runs.extend([(scenario, durability)] * args.repeat)
    return runs


async def run_all(runs: list[tuple[Scenario, str]], options: Options) -> list[Result]:
    from faults.runner import run_scenario  # noqa: PLC0415

    results = []
    for i, (scenario, durability) in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {scenario.name} ({durability}) ...", flush=True)
        result = await run_scenario(scenario, durability, options)
        print(describe(result), flush=True)
        results.append(result)
    return results


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the suite like Ctrl-C: every process by PID


def run_exported(args: argparse.Namespace, argv: list[str]) -> int:
    """``--ref``: export the commit with ``git archive`` to a temporary directory and run the
    suite from there (its ``faults`` and its ``src/stickless``, for this process and every
    app process), writing the JSON and the docs where this command was asked to."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{args.ref}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        print(f"--ref {args.ref}: not a commit of {REPO}", file=sys.stderr)
        return 2
    export = Path(tempfile.mkdtemp(prefix="stickless-faults-ref-"))
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", args.ref], cwd=REPO, capture_output=True, check=True
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(export, filter="data")
        rest = _without_ref(argv)
        rest += ["--docs", str(args.docs.resolve())]
        if args.json:
            rest += ["--json", str(args.json.resolve())]
        if args.logs:
            rest += ["--logs", str(args.logs.resolve())]
        path = os.pathsep.join([str(export / "src"), str(export)])
        env = {**os.environ, "PYTHONPATH": path, COMMIT_ENV: commit.stdout.strip()}
        print(f"running against a clean export of {args.ref} ({commit.stdout.strip()})", flush=True)
        child = subprocess.Popen([sys.executable, "-m", "faults", *rest], cwd=export, env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()
    finally:
        shutil.rmtree(export, ignore_errors=True)


def _without_ref(argv: list[str]) -> list[str]:
    """``argv`` without ``--ref X`` / ``--ref=X`` and the path options that are re-added."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--ref", "--docs", "--json", "--logs"):
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.ref:
        return run_exported(args, argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    from faults.runner import Options  # noqa: PLC0415
    from faults.scenarios import SCENARIOS  # noqa: PLC0415

    if args.list:
        for scenario in SCENARIOS.values():
            short = " (short subset)" if scenario.short else ""
            print(
                f"{scenario.name:20} {'/'.join(scenario.durabilities):16} {scenario.title}{short}"
            )
        return 0
    runs = selected(args)
    if not runs:
        print("no scenario matches", file=sys.stderr)
        return 2
    options = Options(
        clients=args.clients,
        think=args.think,
        warmup=args.warmup,
        max_after=args.max_after,
        apps=args.apps,
        min_replicas=args.min_replicas,
        log_dir=args.logs,
    )
    meta = machine()
    print(f"fault-injection suite: {len(runs)} run(s); {meta_text(meta)}", flush=True)
    print(f"load: {options.describe()}", flush=True)
    try:
        results = asyncio.run(run_all(runs, options))
    except KeyboardInterrupt:
        print("interrupted: stopping every process this run started", file=sys.stderr)
        return 130
    print("\n" + table(results))
    if args.json:
        write_json(args.json, results, meta)
    if args.write_docs:
        write_docs(args.docs, results, meta, options.describe())
        print(f"wrote {args.docs}")
    failed = [r for r in results if r.error]
    missed = [(r, violations(r)) for r in results if violations(r)]
    if args.check and missed:
        for r, problems in missed:
            print(f"target missed: {r.scenario} [{r.durability}]: {'; '.join(problems)}")
        if args.logs:
            print(log_digest(args.logs))
    return 1 if failed or (args.check and missed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
