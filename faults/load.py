"""The round-robin load generator: N clients, each with its own session, hopping between the
app servers as a plain load balancer would.

Client ``c`` sends its request number ``k`` (``k`` = 1, 2, ...) as ``POST /w?i=k`` to server
``(c + k) % len(servers)``, waits for the answer, pauses ``think`` seconds and goes on. Each
request increments the session's counter and appends ``k`` to its cart, so at the end the
cart tells exactly which requests the store kept. Nothing is retried: a request that was not
answered 200 is simply not acknowledged (it may or may not have been applied).

The HTTP/1.1 client is a few lines over asyncio streams (keep-alive, one connection per
client and server), cheaper on CPU than a general-purpose client: the suite shares its
machine with the servers it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Final

REQUEST_TIMEOUT: Final = 10.0
"""Seconds a request may take before the client gives up on it (status 0, "timeout")."""
TRANSPORT_ERROR: Final = 0
"""The status recorded for a request that got no HTTP answer."""


@dataclass(slots=True)
class Record:
    """One request, as the client saw it. Times are ``time.monotonic()`` seconds."""

    client: int
    seq: int
    server: int
    start: float
    end: float
    status: int
    """HTTP status, or :data:`TRANSPORT_ERROR` (refused, reset, timeout: see ``error``)."""
    error: str = ""


@dataclass
class ClientState:
    """What one client knows at the end: its token, its acknowledged and other requests."""

    index: int
    token: str | None = None
    tokens: int = 0
    """How many different tokens the servers gave this client (1 unless its session was
    lost and a new one started)."""
    acked: list[int] = field(default_factory=list)
    unacked: list[int] = field(default_factory=list)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Response:
    __slots__ = ("close", "cookie", "status")

    def __init__(self, status: int, cookie: str | None, close: bool) -> None:
        self.status, self.cookie, self.close = status, cookie, close


async def _read_response(reader: asyncio.StreamReader, cookie_name: str) -> _Response:
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("connection closed before an answer")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ConnectionError(f"not an HTTP answer: {line[:40]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = close = False
    cookie = None
    prefix = cookie_name.encode() + b"="
    while True:
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and value.lower() == b"close":
            close = True
        elif name == b"set-cookie" and value.startswith(prefix):
            cookie = value[len(prefix) :].split(b";", 1)[0].strip(b'"').decode("latin-1")
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    return _Response(status, cookie, close)


class LoadGenerator:
    """``clients`` sequential clients against ``servers`` (``(host, port)``), until stopped."""

    def __init__(
        self,
        servers: list[tuple[str, int]],
        *,
        clients: int = 30,
        think: float = 0.1,
        cookie_name: str = "fsid",
        max_requests: int = 200_000,
    ) -> None:
        self.servers = servers
        self.think = think
        self.cookie_name = cookie_name
        self.max_requests = max_requests
        self.records: list[Record] = []
        self.clients = [ClientState(i) for i in range(clients)]
        self.started = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.started = time.monotonic()
        self._tasks = [asyncio.create_task(self._run(c)) for c in self.clients]

    async def stop(self) -> None:
        """Stop after each client's request in flight (bounded by :data:`REQUEST_TIMEOUT`)."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, state: ClientState) -> None:
        connections: dict[int, _Connection] = {}
        seq = 0
        # spread the clients' first requests over one think time
        await asyncio.sleep(self.think * state.index / max(1, len(self.clients)))
        try:
            while not self._stop.is_set() and len(self.records) < self.max_requests:
                seq += 1
                server = (state.index + seq) % len(self.servers)
                record = await self._one(state, seq, server, connections)
                self.records.append(record)
                (state.acked if record.status == 200 else state.unacked).append(seq)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.think)
        finally:
            for connection in connections.values():
                connection.close()

    async def _one(
        self, state: ClientState, seq: int, server: int, connections: dict[int, _Connection]
    ) -> Record:
        host, port = self.servers[server]
        cookie = f"Cookie: {self.cookie_name}={state.token}\r\n" if state.token else ""
        request = (
            f"POST /w?i={seq} HTTP/1.1\r\nHost: {host}:{port}\r\n{cookie}Content-Length: 0\r\n\r\n"
        ).encode("latin-1")
        start = time.monotonic()
        connection = connections.pop(server, None)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if connection is None:
                    connection = _Connection(*await asyncio.open_connection(host, port))
                connection.writer.write(request)
                await connection.writer.drain()
                response = await _read_response(connection.reader, self.cookie_name)
        except (
            OSError,
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            ValueError,
        ) as exc:
            if connection is not None:
                connection.close()
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            return Record(state.index, seq, server, start, time.monotonic(), TRANSPORT_ERROR, kind)
        end = time.monotonic()
        if response.close:
            connection.close()
        else:
            connections[server] = connection
        if response.cookie and response.cookie != state.token:
            state.token = response.cookie
            state.tokens += 1
        return Record(state.index, seq, server, start, end, response.status)
