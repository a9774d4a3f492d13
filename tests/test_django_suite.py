"""Django's own session-backend test suite, run against ``stickless.django.SessionStore``.

The tests are not copied into this repository: the sdist of the *installed* Django version is
downloaded from PyPI (``pip download --no-binary :all: --no-deps django==X``) into
``.stickless/django-suite/`` (ignored by git) the first time, and ``tests/sessions_tests`` is
extracted from it (:func:`framework_suites.fetch_sdist`). Then ``SessionTestsMixin`` (the
contract every backend of Django passes) and ``SessionMiddlewareTests`` run with our engine,
through unittest, inside one pytest test that prints how many ran, passed, were skipped (and
why) and failed.
"""

from __future__ import annotations

import importlib
import io
import sys
import unittest
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent / "apps"))

from django_project.testing import configure

configure()

import django  # noqa: E402
from django.conf import settings  # noqa: E402
from django.test import SimpleTestCase, override_settings  # noqa: E402
from django.test.utils import setup_test_environment, teardown_test_environment  # noqa: E402

from framework_suites import fetch_sdist  # noqa: E402
from stickless.django import SessionStore  # noqa: E402

PACKAGE = "sessions_tests"

SKIPPED_MIDDLEWARE_TESTS = {
    "test_session_update_error_redirect": (
        "builds a django.contrib.sessions.backends.db session inside the view (database "
        "backend, not the engine under test); the same contract for stickless is "
        "tests/test_django.py::test_session_deleted_during_the_request_is_not_resurrected"
    ),
    "test_empty_session_saved": (
        "reads the stored data through django.contrib.sessions.models.Session (the database "
        "backend's model); the same contract for stickless is "
        "tests/test_django.py::test_emptied_session_is_still_saved"
    ),
}


def fetch_suite() -> Path:
    """Directory holding ``sessions_tests/`` of the installed Django (downloaded once)."""
    return fetch_sdist("django", django.get_version(), [f"tests/{PACKAGE}/"]) / "tests"


def skip_test(reason: str) -> Any:
    @unittest.skip(reason)
    def skipped(self: Any) -> None:
        pass

    return skipped


def build_suite(module: Any) -> unittest.TestSuite:
    class SticklessSessionTests(module.SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
        """Every test of Django's backend contract; SimpleTestCase: any query would fail."""

        backend = SessionStore

    @override_settings(USE_TZ=False)
    class SticklessSessionNaiveTimeTests(SticklessSessionTests):
        """The same with naive datetimes (set_expiry with a datetime)."""

    middleware_skips = {name: skip_test(why) for name, why in SKIPPED_MIDDLEWARE_TESTS.items()}
    SticklessMiddlewareTests = type(
        "SticklessMiddlewareTests",
        (module.SessionMiddlewareTests,),
        middleware_skips,
    )

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for case in (SticklessSessionTests, SticklessSessionNaiveTimeTests, SticklessMiddlewareTests):
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite


def test_django_session_suite(stickless_url: str) -> None:
    root = fetch_suite()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    apps = [*settings.INSTALLED_APPS, PACKAGE]
    own_environment = not hasattr(django.test.utils, "_TestState") or not hasattr(
        django.test.utils._TestState, "saved_data"
    )
    if own_environment:
        setup_test_environment()
    try:
        with override_settings(
            INSTALLED_APPS=apps,
            STICKLESS_URL=stickless_url,
            SESSION_ENGINE="stickless.django",
        ):
            module = importlib.import_module(f"{PACKAGE}.tests")
            suite = build_suite(module)
            stream = io.StringIO()
            result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
    finally:
        if own_environment:
            teardown_test_environment()

    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped) - len(result.expectedFailures)
    print(
        f"\nDjango {django.get_version()} sessions_tests against stickless.django: "
        f"ran {result.testsRun}, passed {passed}, skipped {len(result.skipped)}, "
        f"failed {failed}"
    )
    for test, reason in result.skipped:
        print(f"  skipped {test.id().rsplit('.', 1)[-1]}: {reason}")
    for test, trace in [*result.failures, *result.errors]:
        print(f"  FAILED {test.id()}\n{trace}")
    assert failed == 0, stream.getvalue()[-5000:]
    skipped = {test.id().rsplit(".", 1)[-1] for test, _ in result.skipped}
    assert skipped == set(SKIPPED_MIDDLEWARE_TESTS)
    assert result.testsRun >= 130  # the mixin (64 tests in 5.2) twice + the middleware tests
