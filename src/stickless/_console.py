"""The ``stickless`` console script: the CLI when the ``cli`` extra is installed, else one
line saying how to install it (the library itself needs neither typer nor rich)."""

from __future__ import annotations

import sys

CLI_PACKAGES = frozenset({"typer", "rich", "click"})
"""What the CLI needs beyond the library (the ``cli`` extra: typer, which brings click, and
rich)."""


def main() -> None:
    """Entry point of the ``stickless`` console script."""
    try:
        from stickless.cli import main as cli_main  # noqa: PLC0415
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in CLI_PACKAGES:
            raise
        sys.stderr.write(
            f"the stickless command needs the cli extra ({missing} is not installed): "
            "pip install 'stickless[cli]'\n"
        )
        raise SystemExit(1) from None
    cli_main()
