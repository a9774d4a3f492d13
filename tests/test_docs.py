"""The documentation's examples marked ``<!-- runs in CI ... -->`` run as written: a block
with tests runs under pytest in a project of its own (pytest-asyncio's default strict mode,
as in a user's project), any other block as a script with ``STICKLESS_URL`` set. Blocks whose
marker also says ``mypy --strict`` must pass it (with this project's mypy settings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- runs in CI"
BLOCK = re.compile(r"<!-- runs in CI[^\n]*-->\n```python\n(.*?)```", re.DOTALL)
TYPED = re.compile(r"<!-- runs in CI[^\n]*mypy --strict[^\n]*-->\n```python\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        for i, code in enumerate(BLOCK.findall(doc.read_text())):
            found.append((f"{doc.relative_to(ROOT)}#{i + 1}", code))
    return found


EXAMPLES = examples()


def typed_examples() -> list[tuple[str, str]]:
    found = []
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        for i, code in enumerate(TYPED.findall(doc.read_text())):
            found.append((f"{doc.relative_to(ROOT)}#typed{i + 1}", code))
    return found


def test_the_marked_examples_are_found() -> None:
    marked = sum(doc.read_text().count(MARKER) for doc in (ROOT / "docs").rglob("*.md"))
    assert marked == len(EXAMPLES) >= 3, [name for name, _ in EXAMPLES]


@pytest.mark.parametrize(("name", "code"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_example_runs(name: str, code: str, stickless_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "STICKLESS_URL": stickless_url}
    if "def test_" in code:
        (tmp_path / "pytest.ini").write_text("[pytest]\n")  # a user's project: strict mode
        (tmp_path / "test_example.py").write_text(code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        command += ["-W", "ignore::DeprecationWarning", str(tmp_path / "test_example.py")]
    else:
        (tmp_path / "example.py").write_text(code)
        command = [sys.executable, str(tmp_path / "example.py")]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"{name}:\n{done.stdout}\n{done.stderr}"
    if "def test_" in code:
        assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout


def test_typed_examples_pass_mypy_strict(tmp_path: Path) -> None:
    typed = typed_examples()
    assert len(typed) >= 3 and all(code in dict(EXAMPLES).values() for _, code in typed)
    files = []
    for i, (_, code) in enumerate(typed):
        files.append(tmp_path / f"typed_example_{i + 1}.py")
        files[-1].write_text(code)
    command = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *map(str, files)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    names = {f"typed_example_{i + 1}.py": name for i, (name, _) in enumerate(typed)}
    report = done.stdout
    for file, name in names.items():
        report = report.replace(str(tmp_path / file), name)
    assert done.returncode == 0, report + done.stderr
