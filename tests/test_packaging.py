"""Packaging: one version, the CLI in its own extra (the command says how to get it).
The wheel itself is built and installed into a fresh venv by `python3 dev.py test`."""

from __future__ import annotations

import builtins
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import stickless
from stickless import _console

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert metadata.version("stickless") == stickless.__version__


def test_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT")
    classifiers = set(project["classifiers"])
    for wanted in (
        "Framework :: Django",
        "Framework :: Flask",
        "Framework :: FastAPI",
        "Framework :: AsyncIO",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.13",
    ):
        assert wanted in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: the expression
    deps = " ".join(project["dependencies"])
    assert "typer" not in deps and "rich" not in deps  # the library needs neither
    assert project["optional-dependencies"]["cli"]


def test_the_command_says_how_to_install_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = builtins.__import__

    def without_typer(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "typer" or name.startswith("typer."):
            raise ImportError("No module named 'typer'", name="typer")
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "stickless.cli", raising=False)
    monkeypatch.setattr(builtins, "__import__", without_typer)
    with pytest.raises(SystemExit) as exited:
        _console.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "pip install 'stickless[cli]'" in err and "typer" in err
    assert len(err.strip().splitlines()) == 1
