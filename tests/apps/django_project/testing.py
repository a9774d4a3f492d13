"""In-process use of the test project: configure Django once per pytest process."""

from __future__ import annotations

import django
from django.conf import settings


def configure() -> None:
    """Configure Django from ``django_project.settings`` unless it is configured already
    (the Django test modules share one configuration: Django allows only one per process)."""
    if not settings.configured:
        from django_project import settings as project

        settings.configure(
            **{name: getattr(project, name) for name in dir(project) if name.isupper()}
        )
    django.setup()
