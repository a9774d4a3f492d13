"""Settings of the fault suite's Django project: sessions only, no database, no templates."""

from faults.apps import COOKIE, session_config, store_url

SECRET_KEY = "stickless-fault-suite-not-a-secret"  # noqa: S105  (local test processes only)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "faults.apps.django_app.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["stickless.django.SessionMiddleware"]
DATABASES: dict[str, object] = {}
USE_TZ = True
SESSION_ENGINE = "stickless.django"
SESSION_COOKIE_NAME = COOKIE
STICKLESS_URL = store_url()
STICKLESS_CONFIG = session_config()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
