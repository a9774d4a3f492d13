"""Settings of the demo: no database at all, sessions in Redis / Valkey."""

import os

DEBUG = True
SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-not-a-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "demo_site.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}

MIDDLEWARE = [
    "stickless.django.SessionMiddleware",  # instead of Django's: 503 when Redis is down
    "django.middleware.csrf.CsrfViewMiddleware",
]

SESSION_ENGINE = "stickless.django"
STICKLESS_URL = os.environ["STICKLESS_URL"]  # manage.py sets it (embedded Valkey) if unset
SESSION_COOKIE_AGE = 30 * 60  # the idle timeout (the absolute one defaults to 24 h)
