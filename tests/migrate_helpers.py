"""What the migration tests share: a pickle that would act if it were ever loaded, and the
check that logs show no token, cookie or session content."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest


class Planted:
    """A pickle whose loading creates ``path``: what an attacker who can write to the old
    store plants, hoping the app unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def planted(path: Path, protocol: int) -> bytes:
    """The pickle of a :class:`Planted` for ``path``."""
    return pickle.dumps(Planted(path), protocol=protocol)


def assert_live(tmp_path: Path, protocol: int) -> None:
    """The planted payload is real: unpickling one does create its file (so a test that
    finds no file proves the payload was never unpickled)."""
    proof = tmp_path / f"proof-{protocol}"
    pickle.loads(planted(proof, protocol))  # the point: it acts when loaded
    assert proof.exists()


PROTOCOLS = [0, 2, pickle.HIGHEST_PROTOCOL]
"""Pickle protocols to plant: 0 (text), 2 (Python 2's, ``\\x80\\x02``), the newest."""


def assert_nothing_secret_logged(caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    """None of ``texts`` (tokens, cookies, keys, values) appears in any log line."""
    messages = [record.getMessage() for record in caplog.records]
    for text in texts:
        assert text and not any(text in message for message in messages), text
