"""Follow the primary that Sentinel names, for the sync and the async store alike.

redis-py asks the sentinels for the primary only when it opens a *new* connection, so
pooled connections keep talking to an old primary after a failover, and that node stays
writable for seconds (until Sentinel demotes it): every write it takes meanwhile is lost.
A :class:`Follower` fixes that:

* **Decision, no I/O** — :class:`PrimaryTracker` holds the named primary and a
  *generation* (bumped on every change), fed by sentinel announcements and polls. While a
  sentinel reports a failover away from the current primary it *pauses writes*: from
  ``+try-failover`` / ``+selected-slave`` on (before Sentinel detaches the replica it
  promotes) until ``+promoted-slave`` / ``+switch-master`` names the new primary, or the
  failover is aborted, or no sentinel confirms it any more.
* **I/O, thin** — :class:`SentinelWatch` runs daemon threads with blocking redis-py
  clients (also for the async store: the decisions are plain data shared across threads
  and event loops): one per sentinel subscribed to its announcements (reconnecting with a
  backoff, so sentinels may come and go), and one polling ``SENTINEL MASTER`` on every
  sentinel each ``primary_check_interval`` and at once after any error.
* **Pools** — :func:`sentinel_client` builds redis-py's own ``SentinelConnectionPool``
  (sync or asyncio) asking the tracker instead of the sentinels, and checking every
  connection it hands out: one to a node that stopped being the named primary is dropped
  and reconnected to the new one, so no command goes to the old primary once the switch is
  known (the pool itself also refuses such connections when they come back).
* **Executors** — :meth:`Follower.admit` before a batch (refuses writes during a failover:
  :class:`~stickless.store.failures.Unavailable`, nothing sent) and :meth:`Follower.settle`
  after it (a save that was in flight while the primary changed may have gone to the old
  one: reported as unavailable with an unknown outcome, never as saved).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from stickless.store.failures import Unavailable
from stickless.store.plan import TOUCH, Batch, Command, ScriptCall

log = logging.getLogger("stickless.store.sentinel")

Address = tuple[str, int]

FAILOVER_STARTS: Final = frozenset(
    {
        "+try-failover",
        "+elected-leader",
        "+failover-state-select-slave",
        "+selected-slave",
        "+failover-state-send-slaveof-noone",
        "+failover-state-wait-promotion",
    }
)
"""Announcements of a failover away from a primary that is still named (writes to it
from now on may be lost: Sentinel is about to detach the replica it promotes)."""
FAILOVER_ENDS: Final = frozenset({"+failover-end", "+failover-end-for-timeout"})
CHANNELS: Final = (
    *sorted(FAILOVER_STARTS),
    *sorted(FAILOVER_ENDS),
    "+promoted-slave",
    "+switch-master",
)
PATTERNS: Final = ("-failover-abort-*",)

_READS: Final = frozenset({"ZRANGE", "HMGET", "HGETALL", "HGET", "GET", "EXISTS", "PTTL", "TTL"})
_LISTEN_TIMEOUT: Final = 0.5
"""A listener wakes at least this often (seconds) to notice ``stop()``."""
_MIN_POLL_GAP: Final = 0.02
"""Polls triggered by errors are at least this far apart (seconds)."""


# ------------------------------------------------------------------------ decisions
@dataclass(frozen=True, slots=True)
class SentinelView:
    """One sentinel's answer to ``SENTINEL MASTER <service>``."""

    address: Address
    epoch: int
    """Its ``config-epoch``: the higher, the newer the configuration."""
    failing_over: bool
    """Its flags hold ``failover_in_progress`` (it leads a failover away from ``address``)."""


@dataclass(frozen=True, slots=True)
class SentinelEvent:
    """A sentinel announcement about one service."""

    kind: str
    """The channel: ``+switch-master``, ``+promoted-slave``, ``+selected-slave``..."""
    service: str
    primary: Address | None
    """The primary the announcement is about (for ``+switch-master``: the old one)."""
    new: Address | None = None
    """``+switch-master``: the new primary; ``+promoted-slave``: the promoted replica."""


def _address(host: object, port: object) -> Address | None:
    try:
        return (str(host), int(str(port)))
    except ValueError:
        return None


def parse_event(channel: str, data: str) -> SentinelEvent | None:
    """A sentinel pubsub message as a :class:`SentinelEvent` (None if not about a service).

    Formats: ``+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>``; for a
    primary ``master <name> <ip> <port>``; for another instance ``<type> <name> <ip> <port>
    @ <primary-name> <primary-ip> <primary-port>``."""
    words = data.split()
    if channel == "+switch-master":
        if len(words) < 5:
            return None
        return SentinelEvent(
            channel, words[0], _address(words[1], words[2]), _address(words[3], words[4])
        )
    if "@" in words:
        at = words.index("@")
        if len(words) < at + 4 or at < 4:
            return None
        instance = _address(words[2], words[3])
        return SentinelEvent(
            channel, words[at + 1], _address(words[at + 2], words[at + 3]), instance
        )
    if len(words) >= 4 and words[0] == "master":
        return SentinelEvent(channel, words[1], _address(words[2], words[3]))
    return None


def parse_master_reply(reply: object) -> SentinelView | None:
    """``SENTINEL MASTER <service>`` (a map, or a flat RESP2 list) as a view."""
    if isinstance(reply, Mapping):
        fields = {str(k): v for k, v in reply.items()}
    elif isinstance(reply, list | tuple):
        fields = {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}
    else:
        return None
    flags = fields.get("flags", "")
    names = set(flags) if isinstance(flags, set | frozenset) else set(str(flags).split(","))
    address = _address(fields.get("ip"), fields.get("port"))
    if address is None:
        return None
    try:
        epoch = int(str(fields.get("config-epoch", 0)))
    except ValueError:
        epoch = 0
    return SentinelView(address, epoch, "failover_in_progress" in names)


def writes(batch: Batch) -> bool:
    """Does ``batch`` write? (A load's touch does not count: losing one is harmless.)"""
    for call in batch.calls:
        if isinstance(call, ScriptCall):
            if call.script is not TOUCH:
                return True
        elif isinstance(call, Command) and str(call.args[0]).upper() not in _READS:
            return True
    return False


class PrimaryTracker:
    """Which node Sentinel names as the primary of ``service``: decisions only, no I/O.

    Thread-safe (listeners and the poller feed it from their threads); ``primary`` and
    ``generation`` can be read without the lock. ``hold``: how long (seconds) writes stay
    paused after a failover announcement that nothing confirms or ends."""

    def __init__(
        self, service: str, *, hold: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.service = service
        self.primary: Address | None = None
        """The named primary; None until first learnt."""
        self.generation = 0
        """Bumped whenever ``primary`` moves from one node to another."""
        self._hold = hold
        self._clock = clock
        self._lock = threading.Lock()
        self._pause_until = 0.0
        self._pause_from: Address | None = None
        self._epoch_seen = -1
        self._event_epoch = -1
        self._event_until = 0.0

    # ---------------------------------------------------------------- reading
    @property
    def paused(self) -> bool:
        """Are writes paused (a failover away from the current primary is under way)?"""
        return self._pause_from == self.primary and self._clock() < self._pause_until

    def is_current(self, address: Address) -> bool:
        """Is ``address`` the named primary (True as long as none is known)?"""
        return self.primary is None or self.primary == address

    # ---------------------------------------------------------------- feeding
    def on_event(self, channel: str, data: str) -> bool:
        """Feed one announcement. True when a poll should confirm what it implies."""
        event = parse_event(channel, data)
        if event is None or event.service != self.service:
            return False
        with self._lock:
            about_ours = self.primary is None or event.primary == self.primary
            if event.kind in FAILOVER_STARTS:
                if about_ours and event.primary is not None:
                    self._pause(event.primary)
                return True
            if event.kind in ("+promoted-slave", "+switch-master") and event.new is not None:
                if not about_ours:  # not about the primary we know: let a poll decide
                    return True
                self._switch(event.new)
                self._event_epoch, self._event_until = self._epoch_seen, self._clock() + self._hold
                return True
            if (event.kind in FAILOVER_ENDS or event.kind.startswith("-failover-abort")) and (
                about_ours
            ):
                self._pause_until = 0.0
                return True
        return False

    def on_views(self, views: Sequence[SentinelView]) -> None:
        """Feed a poll: the answers of the sentinels that replied.

        The newest configuration (highest config epoch) among sentinels not in the middle of
        a failover names the primary (ties: the most named; the current one if it is among
        them). Right after an announcement moved the primary, views no newer than what was
        known then are ignored (they lag behind it). A sentinel failing over away from the
        current primary pauses writes; none doing so ends a pause."""
        if not views:
            return
        with self._lock:
            now = self._clock()
            stable = [v for v in views if not v.failing_over]
            if stable:
                top = max(v.epoch for v in stable)
                named = Counter(v.address for v in stable if v.epoch == top).most_common()
                best = named[0][1]
                leaders = [address for address, count in named if count == best]
                address = self.primary if self.primary in leaders else leaders[0]
                lagging = now < self._event_until and top <= self._event_epoch
                if address != self.primary and not lagging:
                    self._switch(address)
                self._epoch_seen = max(self._epoch_seen, top)
            self._epoch_seen = max(self._epoch_seen, *(v.epoch for v in views))
            if self.primary is None:  # only failing-over answers, at start: take theirs
                self._switch(views[0].address)
            if any(v.failing_over and v.address == self.primary for v in views):
                assert self.primary is not None
                self._pause(self.primary)
            elif not any(v.failing_over for v in views):
                self._pause_until = 0.0

    def _pause(self, primary: Address) -> None:
        self._pause_from = primary
        self._pause_until = self._clock() + self._hold

    def _switch(self, address: Address) -> None:
        if address == self.primary:
            return
        if self.primary is not None:  # (learning the first primary is no switch)
            log.warning(
                "sentinel service %s: primary %s:%s -> %s:%s", self.service, *self.primary, *address
            )
            self.generation += 1
        self.primary = address


# ------------------------------------------------------------------------------ I/O
def _sentinel_client(
    address: Address, timeout: float, options: Mapping[str, Any], **extra: Any
) -> redis.Redis:
    return redis.Redis(
        host=address[0],
        port=address[1],
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        **{**options, **extra},
    )


class SentinelWatch:
    """Daemon threads keeping a :class:`PrimaryTracker` up to date (blocking redis-py).

    One thread per sentinel listens to its announcements (resubscribing after any error,
    with a backoff of up to 2 s; a poll follows every (re)subscription, as announcements
    may have been missed meanwhile); one thread polls every sentinel each ``interval``
    seconds, and at once after :meth:`check_soon`. ``timeout`` bounds each sentinel
    command. Threads start on first use, again in a forked child, and end within half a
    second after :meth:`stop` or once the watch is garbage collected."""

    def __init__(
        self,
        tracker: PrimaryTracker,
        sentinels: Sequence[Address],
        *,
        interval: float,
        timeout: float,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.tracker = tracker
        self.sentinels = tuple(sentinels)
        self.interval = interval
        self.timeout = timeout
        self._options = dict(client_options or {})
        self._lock = threading.Lock()
        self._pid = -1
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._clients: dict[Address, redis.Redis] = {}

    @property
    def running(self) -> bool:
        """Do the threads run (in this process)?"""
        return self._pid == os.getpid() and not self._stop.is_set()

    def ensure_running(self) -> None:
        """Start the threads unless they run (in this process)."""
        if self.running:
            return
        with self._lock:
            if self.running:
                return
            self._pid = os.getpid()
            self._stop = stop = threading.Event()
            self._clients = {}
            weakref.finalize(self, stop.set)  # a forgotten store does not leave threads
            for address in self.sentinels:
                threading.Thread(
                    target=_listen,
                    args=(address, self.tracker),
                    kwargs={
                        "wake": self._wake,
                        "stop": stop,
                        "timeout": self.timeout,
                        "options": self._options,
                        "health_check": max(1.0, self.interval * 4),
                    },
                    name=f"stickless-sentinel-{address[0]}:{address[1]}",
                    daemon=True,
                ).start()
            threading.Thread(
                target=_poll_loop,
                args=(weakref.ref(self), self._wake, stop, self.interval),
                name=f"stickless-sentinel-poll-{self.tracker.service}",
                daemon=True,
            ).start()

    def stop(self) -> None:
        """Stop the threads (they end within half a second) and close the poll clients."""
        with self._lock:
            self._stop.set()
            self._wake.set()
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def check_soon(self) -> None:
        """Ask the poller for a poll now (it coalesces requests)."""
        self._wake.set()

    def poll_once(self) -> bool:
        """Ask every sentinel now (in the calling thread); True if any answered."""
        views: list[SentinelView] = []
        for address in self.sentinels:
            client = self._clients.get(address)
            if client is None:
                client = self._clients.setdefault(
                    address, _sentinel_client(address, self.timeout, self._options)
                )
            try:
                reply = client.execute_command("SENTINEL", "MASTER", self.tracker.service)  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError) as exc:
                log.debug("sentinel %s:%s: %s", *address, exc)
                continue
            view = parse_master_reply(reply)
            if view is not None:
                views.append(view)
        self.tracker.on_views(views)
        return bool(views)


def _poll_loop(
    ref: weakref.ref[SentinelWatch], wake: threading.Event, stop: threading.Event, interval: float
) -> None:
    while not stop.is_set():
        watch = ref()
        if watch is None:
            return
        try:
            watch.poll_once()
        except Exception:  # never die: the store depends on this thread
            log.exception("sentinel poll failed")
        del watch
        stop.wait(_MIN_POLL_GAP)
        wake.wait(interval)
        wake.clear()


def _listen(
    address: Address,
    tracker: PrimaryTracker,
    *,
    wake: threading.Event,
    stop: threading.Event,
    timeout: float,
    options: Mapping[str, Any],
    health_check: float,
) -> None:
    backoff = 0.1
    while not stop.is_set():
        client = _sentinel_client(address, timeout, options, health_check_interval=health_check)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
        try:
            pubsub.subscribe(*CHANNELS)
            pubsub.psubscribe(*PATTERNS)
            wake.set()  # announcements may have been missed while not listening: poll
            backoff = 0.1
            while not stop.is_set():
                message = pubsub.get_message(timeout=_LISTEN_TIMEOUT)
                if (
                    message
                    and message.get("type") in ("message", "pmessage")
                    and tracker.on_event(str(message["channel"]), str(message["data"]))
                ):
                    wake.set()
        except Exception as exc:  # a sentinel went away: try again later
            log.debug("sentinel %s:%s listener: %r", *address, exc)
            stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)
        finally:
            try:
                pubsub.close()
                client.close()
            except Exception:  # noqa: S110
                pass


# ---------------------------------------------------------------------- the follower
class Follower:
    """Follows the primary of one Sentinel service for a store (all its clients, sync or
    async, every event loop). See the module docstring."""

    def __init__(
        self,
        sentinels: Sequence[Address],
        service: str,
        *,
        interval: float,
        timeout: float,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.service = service
        self.tracker = PrimaryTracker(service, hold=max(2.0, 3 * interval))
        self.watch = SentinelWatch(
            self.tracker,
            sentinels,
            interval=interval,
            timeout=timeout,
            client_options=client_options,
        )

    # ------------------------------------------------- used by the connection pools
    def primary_address(self) -> Address:
        """The named primary, asking the sentinels now (in this thread) if none is known
        yet. Raises redis-py's ``MasterNotFoundError`` when none answers."""
        self.watch.ensure_running()
        primary = self.tracker.primary
        if primary is None:
            self.watch.poll_once()
            primary = self.tracker.primary
        if primary is None:
            raise redis.sentinel.MasterNotFoundError(
                f"no sentinel of {', '.join(f'{h}:{p}' for h, p in self.watch.sentinels)} "
                f"names a primary for {self.service!r}"
            )
        return primary

    def is_current(self, host: object, port: object) -> bool:
        """Is a connection to ``host:port`` one to the named primary?"""
        address = _address(host, port)
        return address is not None and self.tracker.is_current(address)

    # --------------------------------------------------------- used by the executors
    def admit(self, batch: Batch) -> int:
        """Before sending ``batch``: the generation it is sent under. Raises
        :class:`Unavailable` (nothing sent) for a writing batch while a failover is under
        way."""
        self.watch.ensure_running()
        if self.tracker.paused and writes(batch):
            raise Unavailable(
                None,
                f"a Sentinel failover of {self.service!r} is under way; the write was not "
                "sent (retry in a moment)",
                applied=False,
            )
        return self.tracker.generation

    def settle(self, ticket: int, batch: Batch) -> None:
        """After ``batch`` was answered: a save that was in flight while the named primary
        changed may have been applied on the old primary, and be lost: raise
        :class:`Unavailable` (outcome unknown) instead of reporting it saved. A read in
        flight then may have been answered by the old primary, with data the new one has
        moved past: :class:`Unavailable` too, so the planner sends it again (to the new
        primary), as any idempotent batch (a destroy, a touch) that straddled the switch."""
        if ticket == self.tracker.generation:
            return
        self.watch.check_soon()
        lost = "" if batch.idempotent else "; it may have been applied there and be lost"
        raise Unavailable(  # an idempotent batch is sent again, to the new primary
            None,
            f"the primary of {self.service!r} changed while this request was in flight{lost}",
            applied=None,
        )

    def failed(self, verdict: BaseException) -> None:
        """After any error: re-check the named primary now."""
        self.watch.check_soon()

    def close(self) -> None:
        """Stop the background threads (restarted by any later use)."""
        self.watch.stop()


class _Lookup:
    """What redis-py's ``SentinelConnectionPool`` asks for addresses (its
    ``sentinel_manager``): the follower's primary; replicas are never used."""

    def __init__(self, follower: Follower) -> None:
        self.follower = follower

    def discover_master(self, service_name: str) -> Address:
        return self.follower.primary_address()

    def discover_slaves(self, service_name: str) -> list[Address]:
        return []


class _AsyncLookup(_Lookup):
    async def discover_master(self, service_name: str) -> Address:  # type: ignore[override]
        if self.follower.tracker.primary is not None:
            return self.follower.primary_address()
        return await asyncio.to_thread(self.follower.primary_address)

    async def discover_slaves(self, service_name: str) -> list[Address]:  # type: ignore[override]
        return []


class FollowingPool(redis.sentinel.SentinelConnectionPool):
    """redis-py's Sentinel pool, on the follower's primary; a connection it hands out that
    points at another node is reconnected to the named primary first."""

    def __init__(self, follower: Follower, **kwargs: Any) -> None:
        super().__init__(follower.service, _Lookup(follower), **kwargs)  # type: ignore[no-untyped-call]
        self.follower = follower

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = super().get_connection(*args, **kwargs)
        if not self.follower.is_current(connection.host, connection.port):
            try:
                connection.disconnect()  # type: ignore[no-untyped-call]
                connection.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                self.release(connection)
                raise
        return connection


class AsyncFollowingPool(redis.asyncio.sentinel.SentinelConnectionPool):
    """The asyncio flavour of :class:`FollowingPool`."""

    def __init__(self, follower: Follower, **kwargs: Any) -> None:
        super().__init__(follower.service, _AsyncLookup(follower), **kwargs)  # type: ignore[no-untyped-call]
        self.follower = follower

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        if not self.follower.is_current(connection.host, connection.port):
            try:
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection


def sentinel_client(follower: Follower, flavour: ModuleType, **pool_options: Any) -> Any:
    """A client of ``flavour`` (``redis`` or ``redis.asyncio``) on the followed primary."""
    pool_class = AsyncFollowingPool if flavour is redis.asyncio else FollowingPool
    pool = pool_class(follower, is_master=True, check_connection=True, **pool_options)
    return flavour.Redis.from_pool(pool)
