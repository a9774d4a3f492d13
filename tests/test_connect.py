"""URLs, unreachable servers, Unix sockets: connections behave as documented."""

from __future__ import annotations

import time
from typing import Any

import pytest

from stickless import ConfigurationError, SessionConfig, StoreUnavailable, processes
from stickless.store.connect import parse_url


@pytest.mark.parametrize(
    ("url", "kind", "hosts", "service", "db"),
    [
        ("redis://127.0.0.1:6379/2", "standalone", (), None, 2),
        ("rediss://u:p@127.0.0.1:6380", "standalone", (), None, 0),
        ("unix:///tmp/v.sock?db=3", "standalone", (), None, 3),
        (
            "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster",
            "sentinel",
            (("127.0.0.1", 1), ("127.0.0.1", 2)),
            "mymaster",
            0,
        ),
        ("redis+sentinel://h1,h2:5/svc/4", "sentinel", (("h1", 26379), ("h2", 5)), "svc", 4),
        (
            "redis+cluster://[::1]:7000,127.0.0.1:7001",
            "cluster",
            (("::1", 7000), ("127.0.0.1", 7001)),
            None,
            0,
        ),
    ],
)
def test_urls_parse(
    url: str, kind: str, hosts: tuple[Any, ...], service: str | None, db: int
) -> None:
    endpoint = parse_url(url)
    assert (endpoint.kind, endpoint.hosts, endpoint.service, endpoint.db) == (
        kind,
        hosts,
        service,
        db,
    )


def test_credentials_never_appear_in_the_address() -> None:
    assert "hunter2" not in parse_url("redis://user:hunter2@127.0.0.1:6379/0").address
    assert "hunter2" not in parse_url("redis+cluster://:hunter2@127.0.0.1:7000").address
    assert parse_url("redis+sentinel://:pw@127.0.0.1:1/s").password == "pw"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "localhost:6379",
        "http://x",
        "redis+sentinel://127.0.0.1:1",
        "redis://h:notaport/0",
        "redis://127.0.0.1:6379/x",
        "redis+cluster:///",
    ],
)
def test_bad_urls_raise_a_clear_configuration_error(url: str) -> None:
    from stickless import SessionStore

    with pytest.raises(ConfigurationError):
        SessionStore.from_url(url).load("A" * 11 + "." + "B" * 43)


def test_bad_config_raises() -> None:
    with pytest.raises(ConfigurationError, match="absolute_timeout"):
        SessionConfig(idle_timeout=100, absolute_timeout=10)
    with pytest.raises(ConfigurationError, match="durability"):
        SessionConfig(durability="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["redis://127.0.0.1:{}/0", "redis+cluster://127.0.0.1:{}"])
def test_unreachable_server_raises_store_unavailable_in_bounded_time(
    store_factory: Any, prefix: str
) -> None:
    port = processes.free_ports(1)[0]
    config = SessionConfig(connect_timeout=0.5, socket_timeout=0.5, retries=2, retry_backoff=0.01)
    started = time.monotonic()
    with pytest.raises((StoreUnavailable, Exception)) as info:
        store = store_factory(prefix.format(port), config)
        s = store.new()
        s["a"] = 1
        store.save(s)
    elapsed = time.monotonic() - started
    assert isinstance(info.value, StoreUnavailable), repr(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert elapsed < 5


def test_load_retries_then_reports_the_address_and_cause(store_factory: Any) -> None:
    port = processes.free_ports(1)[0]
    store = store_factory(
        f"redis://127.0.0.1:{port}/0",
        SessionConfig(connect_timeout=0.3, socket_timeout=0.3, retries=2, retry_backoff=0.01),
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=rf"127\.0\.0\.1:{port}.*Connection") as info:
        store.load("A" * 11 + "." + "B" * 43)
    assert time.monotonic() - started < 3
    assert info.value.cause is not None


def test_recovers_when_the_server_comes_back(store_factory: Any) -> None:
    from stickless.embedded import start_standalone

    port = processes.free_ports(1)[0]
    config = SessionConfig(connect_timeout=0.3, socket_timeout=0.3, retries=0)
    store = store_factory(f"redis://127.0.0.1:{port}/0", config)
    with pytest.raises(StoreUnavailable):
        store.load("A" * 11 + "." + "B" * 43)
    with start_standalone(port=port):
        s = store.new()
        s["back"] = True
        store.save(s)
        assert store.load(s.token)["back"] is True


def test_unix_socket(tmp_path: Any, store_factory: Any) -> None:
    from stickless.embedded import start_standalone

    path = tmp_path / "v.sock"
    with start_standalone(extra_args=["--unixsocket", str(path), "--unixsocketperm", "700"]):
        store = store_factory(f"unix://{path}?db=1")
        s = store.new()
        s["via"] = "unix"
        store.save(s)
        assert store.load(s.token)["via"] == "unix"


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:hunter2@127.0.0.1:6379/x",
        "redis://:hunter2@h:port/0",
        "redis+sentinel://:hunter2@127.0.0.1:1",
        "redis+sentinel://:hunter2@h:1/s/x",
    ],
)
def test_configuration_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url(url)
    assert "hunter2" not in str(info.value)


def test_a_secret_passed_as_url_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError, match="secret_key= by keyword") as info:
        parse_url("my-very-secret-key")
    assert "my-very-secret" not in str(info.value)
