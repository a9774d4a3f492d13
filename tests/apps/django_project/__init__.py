"""A minimal Django project for stickless's Django tests (in-process and real servers)."""
