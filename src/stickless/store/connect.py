"""URL -> redis-py client, for every topology, sync and async alike.

Supported URLs::

    redis://[[user]:password@]host[:port][/db]          standalone (TCP)
    rediss://...                                         standalone over TLS
    unix://[[user]:password@]/path/to/socket[?db=0]      standalone (Unix socket)
    redis+sentinel://[[user]:password@]h1:p1,h2:p2/service_name[/db]
    redis+cluster://[[user]:password@]h1:p1,h2:p2        cluster (seed nodes)
    (rediss+sentinel:// and rediss+cluster:// use TLS to the data nodes)

Client settings come from :class:`~stickless.config.SessionConfig`: socket and connect
timeouts, pool size (a *blocking* pool for standalone), and **no retries inside redis-py**:
a resent save could apply an increment twice, so the store's plan retries only what is
idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff

from stickless.config import SessionConfig
from stickless.errors import ConfigurationError
from stickless.store import pools
from stickless.store.sentinel import Follower, sentinel_client

_STANDALONE = {"redis", "rediss", "unix"}
_SENTINEL = {"redis+sentinel", "rediss+sentinel"}
_CLUSTER = {"redis+cluster", "rediss+cluster"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed store URL."""

    kind: str
    """``"standalone"``, ``"sentinel"`` or ``"cluster"``."""
    url: str
    hosts: tuple[tuple[str, int], ...]
    service: str | None
    db: int
    username: str | None
    password: str | None
    tls: bool

    @property
    def address(self) -> str:
        """For messages: the servers, without credentials."""
        if self.kind == "standalone":
            parts = urlsplit(self.url)
            where = parts.path if parts.scheme == "unix" else parts.netloc.rpartition("@")[2]
            return f"{parts.scheme}://{where}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        return f"{self.kind} {hosts}" + (f" service {self.service}" if self.service else "")


def _split_hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts: list[tuple[str, int]] = []
    for raw_item in netloc.split(","):
        item = raw_item.strip()
        if not item:
            continue
        if item.startswith("["):  # [::1]:port
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":") or str(default_port)
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", str(default_port))
        try:
            hosts.append((host, int(port)))
        except ValueError:
            raise ConfigurationError(f"bad port in {item!r}") from None
    if not hosts:
        raise ConfigurationError("no host given")
    return tuple(hosts)


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, hosts = rest.rpartition("@")
    if not sep or not at:
        return url
    user = creds.partition(":")[0]
    return f"{scheme}://{user}:***@{hosts}"


def _refuse_unencoded_credentials(url: str) -> None:
    """A ``/``, ``?`` or ``#`` before the last ``@`` ends the URL's host part early: the user
    name or password holds a character the URL reserves and was not percent-encoded."""
    rest = url.split("://", 1)[1]
    at = rest.rfind("@")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=-1)
    if at >= 0 and 0 <= cut < at:
        scheme = url.split("://", 1)[0]
        raise ConfigurationError(  # not echoed: where the password ends is unknown
            f"the {scheme}:// store URL looks cut short by a character of its user name or "
            "password (/ ? # @ : %): percent-encode them, e.g. "
            "urllib.parse.quote(password, safe='')"
        )


def parse_url(url: str) -> Endpoint:
    """Parse and validate a store URL; raises ConfigurationError with the reason (the
    message never contains the password)."""
    if not isinstance(url, str) or "://" not in url:
        # not echoed: it may be a secret passed in the wrong place (Starlette's second
        # positional argument is secret_key; ours is url)
        raise ConfigurationError(
            "not a store URL (expected e.g. redis://host:6379/0; pass secret_key= by keyword)"
        )
    scheme = url.split("://", 1)[0].lower()
    _refuse_unencoded_credentials(url)
    if scheme in _STANDALONE:
        parts = urlsplit(url)
        db_text = (
            parts.path.lstrip("/")
            if scheme != "unix"
            else parse_qs(parts.query).get("db", ["0"])[0]
        )
        try:
            db = int(db_text or 0)
        except ValueError:
            raise ConfigurationError(f"bad database number in {redact(url)!r}") from None
        try:
            _ = parts.port
        except ValueError:
            raise ConfigurationError(f"bad port in {redact(url)!r}") from None
        return Endpoint(
            "standalone",
            url,
            (),
            None,
            db,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            scheme == "rediss",
        )
    if scheme not in _SENTINEL | _CLUSTER:
        raise ConfigurationError(
            f"unsupported URL scheme {scheme!r}; use redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster://"
        )
    rest = url.split("://", 1)[1]
    creds, _, rest = rest.rpartition("@")
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0]
    username, _, password = creds.partition(":") if creds else ("", "", "")
    segments = [s for s in path.split("/") if s]
    kind = "sentinel" if scheme in _SENTINEL else "cluster"
    service = None
    db = 0
    if kind == "sentinel":
        if not segments:
            raise ConfigurationError(
                f"sentinel URL needs a service name: redis+sentinel://h1:p1,h2:p2/<service>, "
                f"got {redact(url)!r}"
            )
        service = segments[0]
        if len(segments) > 1:
            try:
                db = int(segments[1])
            except ValueError:
                raise ConfigurationError(f"bad database number in {redact(url)!r}") from None
    return Endpoint(
        kind,
        url,
        _split_hosts(netloc, 26379 if kind == "sentinel" else 6379),
        service,
        db,
        unquote(username) or None,
        unquote(password) or None,
        scheme.startswith("rediss"),
    )


def _client_options(
    endpoint: Endpoint | None, config: SessionConfig, flavour: ModuleType
) -> dict[str, Any]:
    # A replicated save blocks in WAIT for up to wait_timeout: the socket must wait longer.
    waiting = config.wait_timeout if config.durability == "replicated" else 0.0
    return {
        "socket_timeout": config.socket_timeout + waiting,
        "socket_connect_timeout": config.connect_timeout,
        "retry": flavour.retry.Retry(NoBackoff(), 0),
        "username": endpoint.username if endpoint else None,
        "password": endpoint.password if endpoint else None,
        **config.client_options,
    }


def node_client(
    endpoint: Endpoint | None, config: SessionConfig, flavour: ModuleType, host: str, port: int
) -> Any:
    """A plain client for one cluster node (used to pipeline a save with its ``WAIT`` on
    the connection of the node that owns the slot)."""
    options = _client_options(endpoint, config, flavour)
    if endpoint is not None and endpoint.tls:
        options["ssl"] = True
    return flavour.Redis(host=host, port=port, **options)


def node_client_like(node: Any, flavour: ModuleType) -> Any:
    """A plain client for one node of a ready cluster client (a store built on one: no URL),
    with the connection settings that client gave its nodes (credentials, TLS, timeouts).
    ``node`` is redis-py's ``ClusterNode`` of ``flavour``."""
    if flavour is redis:
        return node.redis_connection
    pool = flavour.ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    return flavour.Redis(connection_pool=pool)


def follower_for(endpoint: Endpoint, config: SessionConfig) -> Follower | None:
    """For a Sentinel URL, what follows the named primary for one store (see
    :mod:`stickless.store.sentinel`); None for the other topologies."""
    if endpoint.kind != "sentinel" or endpoint.service is None:
        return None
    return Follower(
        endpoint.hosts,
        endpoint.service,
        interval=config.primary_check_interval,
        timeout=min(config.socket_timeout, config.connect_timeout, 1.0),
    )


def create_client(
    endpoint: Endpoint,
    config: SessionConfig,
    flavour: ModuleType,
    follower: Follower | None = None,
) -> Any:
    """A redis-py client for ``endpoint``. ``flavour`` is ``redis`` or ``redis.asyncio``
    (their class names match, so both are built by this one function). A Sentinel client
    follows the primary through ``follower`` (a new one if not given: share one per store,
    sync and async clients alike)."""
    common = _client_options(endpoint, config, flavour)
    if endpoint.kind == "standalone":
        pool = pools.blocking_pool_class(flavour).from_url(
            endpoint.url,
            max_connections=config.max_connections,
            timeout=config.connect_timeout,
            **{k: v for k, v in common.items() if v is not None},
        )
        return flavour.Redis(connection_pool=pool)
    if endpoint.tls:
        common["ssl"] = True
    if endpoint.kind == "sentinel":
        follower = follower or follower_for(endpoint, config)
        assert follower is not None
        return sentinel_client(
            follower,
            flavour,
            db=endpoint.db,
            max_connections=config.max_connections,
            **common,
        )
    nodes = [flavour.cluster.ClusterNode(host, port) for host, port in endpoint.hosts]
    return flavour.cluster.RedisCluster(
        startup_nodes=nodes,
        max_connections=config.max_connections,
        **common,
    )
