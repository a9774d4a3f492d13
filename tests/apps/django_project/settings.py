"""Settings of the test project. ``STICKLESS_URL`` comes from the environment (servers started
by tests/test_multiprocess_django.py); in-process tests override it per test."""

import os

SECRET_KEY = "stickless-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "django_project.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",  # only for Django's own session tests (they import its model)
]
MIDDLEWARE = [
    "stickless.django.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
# The database holds auth's tables only; sessions never touch it. In memory for in-process
# tests; a file shared by the gunicorn processes when STICKLESS_TEST_DB names one.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("STICKLESS_TEST_DB", ":memory:"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
USE_TZ = True

SESSION_ENGINE = "stickless.django"
STICKLESS_URL = os.environ.get("STICKLESS_URL", "redis://127.0.0.1:6379/0")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    # SessionInterrupted (400) is expected in the logout race test: keep the output quiet.
    "loggers": {"django.security": {"handlers": ["null"], "propagate": False}},
}
