"""`manage.py check` reports the stickless engine's misconfigurations (django_checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from django_project.testing import configure

configure()

from django.core import checks  # noqa: E402
from django.test import override_settings  # noqa: E402

import stickless.django  # noqa: E402, F401  (registers the checks)
from stickless import SessionConfig  # noqa: E402

APPS = Path(__file__).parent / "apps"
OURS = "stickless.django.SessionMiddleware"
DJANGOS = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


def ids(**overrides: object) -> list[str]:
    with override_settings(**overrides):
        return sorted(m.id for m in checks.run_checks(tags=["stickless"]) if m.id)


def test_the_test_project_is_clean() -> None:
    assert ids(STICKLESS_URL="redis://127.0.0.1:6379/0") == []


def test_djangos_session_middleware_still_installed() -> None:
    assert ids(MIDDLEWARE=[DJANGOS, AUTH]) == ["stickless.E001"]
    assert ids(MIDDLEWARE=[DJANGOS, OURS, AUTH]) == ["stickless.E001"]
    with override_settings(MIDDLEWARE=[DJANGOS, OURS]):
        (message,) = checks.run_checks(tags=["stickless"])
    assert "twice" in message.msg and OURS in str(message.hint)


def test_no_session_middleware_at_all() -> None:
    assert ids(MIDDLEWARE=[AUTH]) == ["stickless.W001"]


def test_our_middleware_with_another_engine() -> None:
    engine = "django.contrib.sessions.backends.cache"
    assert ids(SESSION_ENGINE=engine) == ["stickless.E002"]
    assert ids(SESSION_ENGINE=engine, MIDDLEWARE=[DJANGOS]) == []  # not ours to judge


def test_url_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STICKLESS_URL", raising=False)
    assert ids(STICKLESS_URL=None) == ["stickless.E003"]
    monkeypatch.setenv("STICKLESS_URL", "redis://127.0.0.1:6379/0")
    assert ids(STICKLESS_URL=None) == []  # from the environment, as every adapter


def test_url_malformed() -> None:
    assert ids(STICKLESS_URL=6379) == ["stickless.E004"]
    assert ids(STICKLESS_URL="http://127.0.0.1:6379") == ["stickless.E004"]
    secret = "p@ss/w#rd"
    with override_settings(STICKLESS_URL=f"redis://app:{secret}@127.0.0.1:6379/0"):
        (message,) = checks.run_checks(tags=["stickless"])
    assert message.id == "stickless.E004" and "percent-encode" in message.msg
    assert "w#rd" not in message.msg and "ss/w" not in message.msg


def test_config_of_the_wrong_kind() -> None:
    assert ids(STICKLESS_CONFIG=SessionConfig()) == []
    assert ids(STICKLESS_CONFIG={"idle_timeout": 60}) == []
    assert ids(STICKLESS_CONFIG={"idle_timeout": -1}) == ["stickless.E005"]
    assert ids(STICKLESS_CONFIG={"nope": 1}) == ["stickless.E005"]
    assert ids(STICKLESS_CONFIG="redis://") == ["stickless.E005"]


def test_manage_py_check_reports_them(tmp_path: Path) -> None:
    """The real command, with "stickless.django" in INSTALLED_APPS (how the checks are
    registered before Django runs them)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(APPS)]),
        "DJANGO_SETTINGS_MODULE": "check_settings",
    }

    def check(middleware: str = "") -> subprocess.CompletedProcess[str]:
        """``django check`` with the test project's settings, the checks and ``middleware``."""
        (tmp_path / "check_settings.py").write_text(
            "from django_project.settings import *  # noqa\n"
            "INSTALLED_APPS = [*INSTALLED_APPS, 'stickless.django']\n"
            f"{middleware}"
            "STICKLESS_URL = 'redis://127.0.0.1:6379/0'\n"
        )
        command = [sys.executable, "-m", "django", "check"]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    done = check(f"MIDDLEWARE = [{DJANGOS!r}, {AUTH!r}]\n")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stickless.E001" in done.stderr and OURS in done.stderr
    done = check()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
