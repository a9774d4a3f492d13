#!/usr/bin/env python
"""A minimal Django project on stickless sessions: counter, login / logout, the user's
devices and "log out everywhere". Run it with one command (needs
``pip install 'stickless[django,embedded]'``)::

    python examples/django_app/manage.py runserver

With ``STICKLESS_URL`` unset it starts an embedded Valkey first (a real ``valkey-server``
process that lives as long as this command; the runserver child process inherits its URL, so
code reloads keep the sessions). Set ``STICKLESS_URL=redis://...`` to use your own server:
then two ``runserver`` on two ports share the sessions, as app servers behind a load balancer
without sticky sessions would.
"""

from __future__ import annotations

import os
import sys

from django.core.management import execute_from_command_line

from stickless.embedded import start_standalone


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    if not os.environ.get("STICKLESS_URL"):
        valkey = start_standalone()  # stopped when this process exits
        os.environ["STICKLESS_URL"] = valkey.url
        print(f"stickless: started an embedded Valkey at {valkey.url}", file=sys.stderr)

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
