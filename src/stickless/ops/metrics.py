"""Prometheus metrics for a session store (optional: ``pip install 'stickless[metrics]'``).

::

    from stickless import SessionStore
    from stickless.ops.metrics import instrument

    store = SessionStore.from_url("redis://127.0.0.1:6379/0")
    instrument(store)            # or instrument(store, registry=my_registry)

:func:`instrument` observes the operations ``load``, ``save``, ``destroy``, ``sessions_for``
and ``revoke_user`` of that store object, for :class:`~stickless.SessionStore` and
:class:`~stickless.AsyncSessionStore` alike, and those Django's engine runs with it (through
the hook of :mod:`stickless.ops.observe`, which :mod:`stickless.ops.tracing` shares). Metric
names (``namespace`` defaults to ``stickless``):

``stickless_loads_total{result}``
    ``hit`` (a session came back) or ``miss`` (unknown, expired, destroyed, malformed or
    forged token).
``stickless_saves_total{outcome}``
    ``saved``, ``unchanged`` (nothing to write, no command sent), ``destroyed``
    (invalidated), ``gone`` (the session had been destroyed or had expired meanwhile).
``stickless_stale_writes_refused_total``
    Saves refused because their session was gone (outcome ``gone``): a late request after a
    logout that the store did not let bring the session back.
``stickless_destroys_total{result}``
    ``destroyed`` (was live) or ``missing``.
``stickless_revoked_sessions_total``
    Sessions destroyed by ``revoke_user``.
``stickless_errors_total{operation, error}``
    Exceptions raised by an operation, by class name (``StoreUnavailable``,
    ``SessionTooLarge``, ``SessionConflict``, ``ReplicationTimeout``, ...).
``stickless_operation_duration_seconds{operation}``
    Histogram of each call's duration, errors included (a save with nothing to write is
    counted too: it takes microseconds).

Several stores instrumented on one registry share the same collectors.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from stickless.ops.observe import OPERATIONS, Call, OwnWatch, Shared, attach_once, attached

__all__ = [
    "COUNTERS",
    "DEFAULT_BUCKETS",
    "OPERATIONS",
    "CounterSpec",
    "SessionMetrics",
    "instrument",
    "metrics_of",
    "tallies",
]

DEFAULT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Latency buckets (seconds): a Redis round trip is ~0.1-1 ms on a LAN, timeouts are 2 s."""

_SAVE_OUTCOMES = ("saved", "unchanged", "destroyed", "gone")
_MARK = "_stickless_metrics"

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """One counter, as both exporters define it (``stickless.ops.tracing`` mirrors these
    as OpenTelemetry counters named ``<namespace>_<name>_total``)."""

    name: str
    """Without the namespace and the ``_total`` suffix: ``loads``."""
    help: str
    labels: tuple[str, ...] = ()
    initial: tuple[tuple[str, ...], ...] = ()
    """Label values exported at 0 from the start, so rates work from the first scrape."""


COUNTERS = (
    CounterSpec(
        "loads", "Session loads, by result (hit or miss).", ("result",), (("hit",), ("miss",))
    ),
    CounterSpec(
        "saves",
        "Session saves, by outcome (saved, unchanged, destroyed, gone).",
        ("outcome",),
        tuple((outcome,) for outcome in _SAVE_OUTCOMES),
    ),
    CounterSpec(
        "stale_writes_refused",
        "Saves refused because the session had been destroyed or had expired (gone).",
    ),
    CounterSpec(
        "destroys",
        "store.destroy calls, by result (destroyed or missing).",
        ("result",),
        (("destroyed",), ("missing",)),
    ),
    CounterSpec("revoked_sessions", "Sessions destroyed by revoke_user."),
    CounterSpec(
        "errors",
        "Exceptions raised by store operations, by operation and exception class.",
        ("operation", "error"),
    ),
)
"""Every counter of the store's metrics."""

DURATION = "operation_duration_seconds"
DURATION_HELP = "Duration of store operations (seconds), errors included."


def tallies(call: Call) -> list[tuple[str, tuple[str, ...], int]]:
    """The counters an observed operation moves: ``(counter name, label values, amount)``
    (its duration is observed apart, for every call). One place for both exporters."""
    if call.cancelled:
        return []
    if call.error is not None:
        if not isinstance(call.error, Exception):  # KeyboardInterrupt...: not the store's
            return []
        return [("errors", (call.operation, type(call.error).__name__), 1)]
    outcome = call.outcome
    if call.operation == "load":
        return [("loads", (outcome,), 1)]
    if call.operation == "save":
        gone = [("stale_writes_refused", (), 1)] if outcome == "gone" else []
        return [("saves", (outcome,), 1), *gone]
    if call.operation == "destroy":
        return [("destroys", (outcome,), 1)]
    if call.operation == "revoke_user" and call.count:
        return [("revoked_sessions", (), call.count)]
    return []


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415  (optional extra)
    except ImportError as exc:
        raise ImportError(
            "stickless metrics need prometheus-client: pip install 'stickless[metrics]'"
        ) from exc
    return prometheus_client


class SessionMetrics(OwnWatch):
    """The collectors, registered on ``registry`` (default: prometheus_client's global
    ``REGISTRY``). Usually made by :func:`instrument`; build one yourself to choose the
    ``namespace`` or the histogram ``buckets``."""

    def __init__(
        self,
        registry: Any = None,
        *,
        namespace: str = "stickless",
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        prom = _prometheus()
        self.registry = prom.REGISTRY if registry is None else registry
        self.namespace = namespace
        options: dict[str, Any] = {"namespace": namespace, "registry": self.registry}
        self.counters: dict[str, Any] = {}
        for spec in COUNTERS:
            counter = self.counters[spec.name] = prom.Counter(
                spec.name, spec.help, list(spec.labels), **options
            )
            for values in spec.initial:  # exported at 0 from the start
                counter.labels(*values)
        self.duration = prom.Histogram(
            DURATION, DURATION_HELP, ["operation"], buckets=buckets, **options
        )
        for operation in OPERATIONS:
            self.duration.labels(operation)
        self.loads = self.counters["loads"]
        self.saves = self.counters["saves"]
        self.stale_writes = self.counters["stale_writes_refused"]
        self.destroys = self.counters["destroys"]
        self.revoked = self.counters["revoked_sessions"]
        self.errors = self.counters["errors"]

    # ----------------------------------------------------------------- recording
    def record(self, operation: str, result: Any) -> None:
        """Count what a successful ``operation`` returned."""
        self._count(Call(operation, "", "", result=result))

    def failed(self, operation: str, exc: BaseException) -> None:
        self.errors.labels(operation, type(exc).__name__).inc()

    def observe(self, operation: str, seconds: float) -> None:
        self.duration.labels(operation).observe(seconds)

    def _count(self, call: Call) -> None:
        for name, values, amount in tallies(call):
            counter = self.counters[name]
            (counter.labels(*values) if values else counter).inc(amount)

    @contextlib.contextmanager
    def measuring(self, operation: str) -> Iterator[None]:
        """Time the block and count its exception (if any) for ``operation``."""
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.failed(operation, exc)
            raise
        finally:
            self.observe(operation, time.perf_counter() - start)

    # ------------------------- observer (ops.observe): its own watch, the collectors
    def finish(self, call: Call) -> None:
        """Count and time an observed operation (errors by class; a cancelled one is only
        timed)."""
        self.observe(call.operation, call.seconds)
        self._count(call)


_shared = Shared(lambda registry, namespace: SessionMetrics(registry, namespace=namespace))


def _metrics_for(registry: Any, namespace: str) -> SessionMetrics:
    prom = _prometheus()  # ImportError first, whatever the registry
    return _shared.get(prom.REGISTRY if registry is None else registry, namespace)


def instrument(
    store: S,
    *,
    registry: Any = None,
    namespace: str = "stickless",
    metrics: SessionMetrics | None = None,
) -> S:
    """Count and time ``store``'s operations (``SessionStore`` or ``AsyncSessionStore``);
    returns the same store object.

    ``registry``: a ``prometheus_client.CollectorRegistry`` (default: the global
    ``REGISTRY``). Stores instrumented on the same registry and ``namespace`` share one set
    of collectors; pass ``metrics=SessionMetrics(...)`` to use your own. Instrumenting a
    store twice does nothing the second time. Raises ImportError (with the ``pip install``
    line) when prometheus-client is missing.
    """
    return attach_once(store, _MARK, lambda: metrics or _metrics_for(registry, namespace))


def metrics_of(store: object) -> SessionMetrics | None:
    """The collectors ``store`` was instrumented with, or None."""
    return attached(store, _MARK, SessionMetrics)
