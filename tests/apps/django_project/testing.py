"""In-process use of the test project: configure Django once per pytest process; a user to
log in as."""

from __future__ import annotations

from typing import TYPE_CHECKING

import django
from django.conf import settings

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def configure() -> None:
    """Configure Django from ``django_project.settings`` unless it is configured already
    (the Django test modules share one configuration: Django allows only one per process)."""
    if not settings.configured:
        from django_project import settings as project

        settings.configure(
            **{name: getattr(project, name) for name in dir(project) if name.isupper()}
        )
    django.setup()


def user(username: str = "alice", password: str = "wonderland") -> User:
    """The project's database made (in memory) and ``username`` in it, with ``password``."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    account, _ = User.objects.get_or_create(username=username)
    account.set_password(password)
    account.save()
    return account
