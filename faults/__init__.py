"""stickless's fault-injection suite: real topologies, real app processes, real faults.

Run it all with ``.venv/bin/python -m faults`` (or ``python faults/run.py``); ``--help``
lists the options, ``--list`` the scenarios, ``--short`` runs the CI subset. Results go to
the terminal, optionally to JSON (``--json``) and to docs/reliability.md (``--write-docs``).

Modules: :mod:`faults.topology` (Valkey topologies from :mod:`stickless.embedded`),
:mod:`faults.farm` (uvicorn / gunicorn app processes serving :mod:`faults.apps`),
:mod:`faults.load` (the round-robin load generator), :mod:`faults.scenarios` (the faults),
:mod:`faults.runner` (one run), :mod:`faults.report` (what it measured), :mod:`faults.run`
(the command line).
"""
