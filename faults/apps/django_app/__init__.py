"""The Django project of the fault suite, served by gunicorn. See :mod:`faults.apps`."""
