"""WSGI entry point of the fault suite's Django project (``gunicorn ...wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "faults.apps.django_app.settings")
application = get_wsgi_application()
