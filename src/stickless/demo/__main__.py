"""``python -m stickless.demo [--tour] [--topology T] [--data-dir D] [--port P ...]``.

The same as ``stickless demo`` (see :func:`stickless.demo.run`), without the CLI's extras.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stickless.demo import DEFAULT_DATA_DIR, run
from stickless.demo.launcher import TOPOLOGIES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stickless.demo",
        description="Three app servers sharing one session in Valkey (see docs/demo.md).",
    )
    parser.add_argument("--topology", choices=TOPOLOGIES, default="standalone")
    parser.add_argument("--tour", action="store_true", help="play the scripted journey")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--port",
        type=int,
        action="append",
        dest="ports",
        help="app server port: give 3, or 1 for P, P+1, P+2",
    )
    args = parser.parse_args(argv)
    return run(topology=args.topology, tour=args.tour, data_dir=args.data_dir, ports=args.ports)


if __name__ == "__main__":
    sys.exit(main())
