"""Prometheus metrics for a session store (optional: ``pip install 'stickless[metrics]'``).

::

    from stickless import SessionStore
    from stickless.ops.metrics import instrument

    store = SessionStore.from_url("redis://127.0.0.1:6379/0")
    instrument(store)            # or instrument(store, registry=my_registry)

:func:`instrument` wraps the store's public methods (``load``, ``save``, ``destroy``,
``sessions_for``, ``revoke_user``) on that store object, for :class:`~stickless.SessionStore`
and :class:`~stickless.AsyncSessionStore` alike. Metric names (``namespace`` defaults to
``stickless``):

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
import functools
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["DEFAULT_BUCKETS", "OPERATIONS", "SessionMetrics", "instrument"]

OPERATIONS = ("load", "save", "destroy", "sessions_for", "revoke_user")
"""The store methods :func:`instrument` wraps."""

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


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415  (optional extra)
    except ImportError as exc:
        raise ImportError(
            "stickless metrics need prometheus-client: pip install 'stickless[metrics]'"
        ) from exc
    return prometheus_client


class SessionMetrics:
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
        self.loads = prom.Counter(
            "loads", "Session loads, by result (hit or miss).", ["result"], **options
        )
        self.saves = prom.Counter(
            "saves",
            "Session saves, by outcome (saved, unchanged, destroyed, gone).",
            ["outcome"],
            **options,
        )
        self.stale_writes = prom.Counter(
            "stale_writes_refused",
            "Saves refused because the session had been destroyed or had expired (gone).",
            **options,
        )
        self.destroys = prom.Counter(
            "destroys",
            "store.destroy calls, by result (destroyed or missing).",
            ["result"],
            **options,
        )
        self.revoked = prom.Counter(
            "revoked_sessions", "Sessions destroyed by revoke_user.", **options
        )
        self.errors = prom.Counter(
            "errors",
            "Exceptions raised by store operations, by operation and exception class.",
            ["operation", "error"],
            **options,
        )
        self.duration = prom.Histogram(
            "operation_duration_seconds",
            "Duration of store operations (seconds), errors included.",
            ["operation"],
            buckets=buckets,
            **options,
        )
        # Export every series from the start (at 0), so rates work from the first scrape.
        for result in ("hit", "miss"):
            self.loads.labels(result)
        for outcome in _SAVE_OUTCOMES:
            self.saves.labels(outcome)
        for result in ("destroyed", "missing"):
            self.destroys.labels(result)
        for operation in OPERATIONS:
            self.duration.labels(operation)

    # ----------------------------------------------------------------- recording
    def record(self, operation: str, result: Any) -> None:
        """Count what a successful ``operation`` returned."""
        if operation == "load":
            self.loads.labels("miss" if result is None else "hit").inc()
        elif operation == "save":
            outcome = str(getattr(result, "outcome", "saved"))
            self.saves.labels(outcome).inc()
            if outcome == "gone":
                self.stale_writes.inc()
        elif operation == "destroy":
            self.destroys.labels("destroyed" if result else "missing").inc()
        elif operation == "revoke_user" and isinstance(result, int):
            self.revoked.inc(result)

    def failed(self, operation: str, exc: BaseException) -> None:
        self.errors.labels(operation, type(exc).__name__).inc()

    def observe(self, operation: str, seconds: float) -> None:
        self.duration.labels(operation).observe(seconds)

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

    # ------------------------------------------------------------------ wrapping
    def wrap(self, operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` (bound, sync or async) wrapped to time and count its calls."""
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.measuring(operation):
                    result = await method(*args, **kwargs)
                self.record(operation, result)
                return result

            return async_wrapper

        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.measuring(operation):
                result = method(*args, **kwargs)
            self.record(operation, result)
            return result

        return wrapper


_shared: weakref.WeakKeyDictionary[Any, dict[str, SessionMetrics]] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def _metrics_for(registry: Any, namespace: str) -> SessionMetrics:
    prom = _prometheus()
    registry = prom.REGISTRY if registry is None else registry
    with _shared_lock:
        by_namespace = _shared.setdefault(registry, {})
        metrics = by_namespace.get(namespace)
        if metrics is None:
            metrics = by_namespace[namespace] = SessionMetrics(registry, namespace=namespace)
        return metrics


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
    if getattr(store, _MARK, None) is not None:
        return store
    collectors = metrics or _metrics_for(registry, namespace)
    for operation in OPERATIONS:
        method = getattr(store, operation, None)
        if method is None:
            raise TypeError(f"{type(store).__name__} has no {operation}(): not a session store")
        setattr(store, operation, collectors.wrap(operation, method))
    setattr(store, _MARK, collectors)
    return store


def metrics_of(store: object) -> SessionMetrics | None:
    """The collectors ``store`` was instrumented with, or None."""
    found = getattr(store, _MARK, None)
    return found if isinstance(found, SessionMetrics) else None
