"""OpenTelemetry spans and metrics for a session store (``pip install 'stickless[otel]'``).

::

    from stickless import SessionStore
    from stickless.ops.tracing import instrument

    store = instrument(SessionStore.from_url("redis://127.0.0.1:6379/0"))

Each ``load``, ``save``, ``destroy``, ``sessions_for`` and ``revoke_user`` of that store
(``SessionStore`` or ``AsyncSessionStore``; Django's engine included) is one span,
``stickless.<operation>`` (kind INTERNAL), a child of the span current when it starts, with
the attributes of :data:`ATTRIBUTES`; each round trip under it is a CLIENT span named by its
commands (``HGETALL PTTL``, ``EVALSHA``, ``EVALSHA WAIT``...), with ``db.system.name`` =
``redis``. A failed operation's span has the ERROR status, ``error.type`` and the exception
event. Spans never hold a token, a session value, key names or Redis keys; the user id
(``user.id``) and the session id (``stickless.session_id``, the token's family) only when
asked for.

The same observations feed OpenTelemetry metrics that mirror :mod:`stickless.ops.metrics`
(the Prometheus ones): the same names (``stickless_loads_total``...,
``stickless_operation_duration_seconds``), the same attributes (``result``, ``outcome``,
``operation``, ``error``) and buckets, from one hook (:mod:`stickless.ops.observe`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover  (the extra is missing)
    raise ImportError(
        "stickless tracing needs opentelemetry-api: pip install 'stickless[otel]'"
    ) from exc

from stickless import __version__
from stickless.ops.metrics import COUNTERS, DEFAULT_BUCKETS, DURATION, DURATION_HELP, tallies
from stickless.ops.observe import Call, OwnWatch, Shared, attach_once, attached
from stickless.store.failures import Unavailable
from stickless.store.plan import Batch, ScriptCall

__all__ = [
    "ATTRIBUTES",
    "SCOPE",
    "OtelMetrics",
    "SessionTracing",
    "instrument",
    "tracing_of",
]

SCOPE = "stickless"
"""The instrumentation scope (tracer and meter name)."""

ATTRIBUTES = {
    "stickless.operation": "load, save, destroy, sessions_for, revoke_user",
    "stickless.outcome": "load: hit, miss; save: saved, unchanged, destroyed, gone; destroy: "
    "destroyed, missing; listed; revoked; on an error: unavailable, misconfigured, "
    "not_replicated, conflict, too_large, error; cancelled",
    "stickless.round_trips": "batches sent (one pipeline each), retries included",
    "stickless.topology": "standalone, sentinel, cluster",
    "stickless.durability": "none, replicated (SessionConfig.durability)",
    "stickless.renewed": "save: the session got a new token (renew, login, identity change)",
    "stickless.forwarded": "save: applied through a renew forward (an in-flight request "
    "still carrying the token a plain rotation replaced)",
    "stickless.replicas_acknowledged": "save with durability='replicated': replicas that "
    "acknowledged it (also on ReplicationTimeout)",
    "stickless.touched": "load: the idle TTL was refreshed (one more round trip)",
    "stickless.sessions": "sessions_for: live sessions listed",
    "stickless.revoked": "revoke_user: sessions destroyed",
    "error.type": "the exception's class, on a failed operation",
    "user.id": "only with record_user_id=True",
    "stickless.session_id": "only with record_session_id=True (the token's family: not a "
    "token, cannot be used as a cookie; what `stickless sessions show` takes)",
}
"""The attributes of an operation's span, and what they hold."""

_MARK = "_stickless_tracing"
S = TypeVar("S")


class SessionTracing:
    """The observer that makes the spans (and, with ``metrics``, feeds :class:`OtelMetrics`).
    Usually made by :func:`instrument`."""

    def __init__(
        self,
        tracer_provider: Any = None,
        *,
        metrics: OtelMetrics | None = None,
        round_trip_spans: bool = True,
        record_user_id: bool = False,
        record_session_id: bool = False,
    ) -> None:
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self.metrics = metrics
        self.round_trip_spans = round_trip_spans
        self.record_user_id = record_user_id
        self.record_session_id = record_session_id

    def start(self, call: Call) -> _SpanWatch:
        span = self.tracer.start_span(
            f"stickless.{call.operation}",
            kind=SpanKind.INTERNAL,
            attributes={
                "stickless.operation": call.operation,
                "stickless.topology": call.topology,
                "stickless.durability": call.durability,
            },
        )
        return _SpanWatch(self, span)


class _SpanWatch:
    """One operation's span."""

    def __init__(self, tracing: SessionTracing, span: trace.Span) -> None:
        self.tracing = tracing
        self.span = span

    @contextlib.contextmanager
    def sending(self, batch: Batch) -> Iterator[None]:
        """Around one round trip: its CLIENT span is current (or, without round-trip spans,
        the operation's), so redis-py's own instrumentation nests under it."""
        if not self.tracing.round_trip_spans:
            with trace.use_span(self.span, record_exception=False, set_status_on_exception=False):
                yield
            return
        names = _command_names(batch)
        attributes: dict[str, Any] = {
            "db.system.name": "redis",
            "db.system": "redis",
            "db.operation.name": " ".join(dict.fromkeys(names)),
        }
        if len(names) > 1:
            attributes["db.operation.batch.size"] = len(names)
        scripts = [call.script.name for call in batch.calls if isinstance(call, ScriptCall)]
        if scripts:
            attributes["stickless.scripts"] = list(dict.fromkeys(scripts))
        with self.tracing.tracer.start_as_current_span(
            attributes["db.operation.name"],
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                error = _error_type(exc)
                span.set_attribute("error.type", error)
                span.set_status(Status(StatusCode.ERROR, error))
                raise

    def finish(self, call: Call) -> None:
        span = self.span
        try:
            if span.is_recording():
                span.set_attributes(self._attributes(call))
                error = call.error
                if isinstance(error, Exception):
                    span.set_attribute("error.type", type(error).__name__)
                    span.record_exception(error, escaped=True)
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        finally:
            span.end()
            if self.tracing.metrics is not None:
                self.tracing.metrics.finish(call)

    def _attributes(self, call: Call) -> dict[str, Any]:
        found: dict[str, Any] = {
            "stickless.outcome": call.outcome,
            "stickless.round_trips": call.round_trips,
        }
        if call.operation == "save":
            found["stickless.renewed"] = bool(call.renewed)
            found["stickless.forwarded"] = bool(call.forwarded)
            if call.replicas is not None:
                found["stickless.replicas_acknowledged"] = call.replicas
        elif call.operation == "load" and call.error is None:
            found["stickless.touched"] = call.touched
        elif call.count is not None:
            kind = "sessions" if call.operation == "sessions_for" else "revoked"
            found[f"stickless.{kind}"] = call.count
        if self.tracing.record_user_id and (user := call.user_id()) is not None:
            found["user.id"] = user
        if self.tracing.record_session_id and (session_id := call.session_id()) is not None:
            found["stickless.session_id"] = session_id
        return found


def _command_names(batch: Batch) -> list[str]:
    names = [
        ("EVAL" if call.by_source else "EVALSHA")
        if isinstance(call, ScriptCall)
        else str(call.args[0]).upper()
        for call in batch.calls
    ]
    if batch.wait is not None:
        names.insert(1, "WAIT")
    return names


def _error_type(exc: BaseException) -> str:
    """The class of what failed a round trip (the executor's verdict stands for its cause)."""
    if isinstance(exc, Unavailable) and exc.cause is not None:
        return type(exc.cause).__name__
    return type(exc).__name__


class OtelMetrics(OwnWatch):
    """OpenTelemetry instruments mirroring :class:`stickless.ops.metrics.SessionMetrics`:
    counters ``<namespace>_<name>_total`` with the same attributes, and the histogram
    ``<namespace>_operation_duration_seconds`` (unit ``s``, the same buckets), from
    ``meter_provider`` (default: the global one). Usually made by :func:`instrument`;
    stores instrumented with the same provider and ``namespace`` share them. An observer of
    its own too (metrics without spans)."""

    def __init__(
        self,
        meter_provider: Any = None,
        *,
        namespace: str = "stickless",
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        meter = otel_metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self.namespace = namespace
        self.labels = {spec.name: spec.labels for spec in COUNTERS}
        self.counters: dict[str, otel_metrics.Counter] = {}
        for spec in COUNTERS:
            counter = self.counters[spec.name] = meter.create_counter(
                f"{namespace}_{spec.name}_total", unit="1", description=spec.help
            )
            # exported at 0 from the start, as Prometheus does
            for values in spec.initial if spec.labels else ((),):
                counter.add(0, dict(zip(spec.labels, values, strict=True)))
        self.duration = meter.create_histogram(
            f"{namespace}_{DURATION}",
            unit="s",
            description=DURATION_HELP,
            explicit_bucket_boundaries_advisory=list(buckets),
        )

    def finish(self, call: Call) -> None:
        self.duration.record(call.seconds, {"operation": call.operation})
        for name, values, amount in tallies(call):
            attributes = dict(zip(self.labels[name], values, strict=True))
            self.counters[name].add(amount, attributes)


_shared = Shared(lambda provider, namespace: OtelMetrics(provider, namespace=namespace))


def _metrics_for(meter_provider: Any, namespace: str) -> OtelMetrics:
    provider = otel_metrics.get_meter_provider() if meter_provider is None else meter_provider
    return _shared.get(provider, namespace)


def instrument(
    store: S,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    metrics: bool | OtelMetrics = True,
    round_trip_spans: bool = True,
    record_user_id: bool = False,
    record_session_id: bool = False,
    namespace: str = "stickless",
) -> S:
    """Trace ``store``'s operations (``SessionStore`` or ``AsyncSessionStore``) and, unless
    ``metrics=False``, record the OpenTelemetry mirror of the Prometheus metrics; returns the
    same store object.

    ``tracer_provider`` / ``meter_provider``: default the global ones (set by the SDK or
    ``opentelemetry-instrument``). ``metrics``: True (instruments shared per provider and
    ``namespace``), False, or your own :class:`OtelMetrics`. ``round_trip_spans=False``: no
    CLIENT span per round trip (the operation's span counts them, and redis-py's
    instrumentation, if any, nests directly under it). ``record_user_id`` /
    ``record_session_id``: add ``user.id`` / ``stickless.session_id`` (off by default;
    tokens and values are never recorded). Instrumenting a store twice does nothing the
    second time; Prometheus metrics (:func:`stickless.ops.metrics.instrument`) may be on the
    same store: both observe through the same hook.
    """

    def make() -> SessionTracing:
        collectors: OtelMetrics | None = None
        if isinstance(metrics, OtelMetrics):
            collectors = metrics
        elif metrics:
            collectors = _metrics_for(meter_provider, namespace)
        return SessionTracing(
            tracer_provider,
            metrics=collectors,
            round_trip_spans=round_trip_spans,
            record_user_id=record_user_id,
            record_session_id=record_session_id,
        )

    return attach_once(store, _MARK, make)


def tracing_of(store: object) -> SessionTracing | None:
    """The tracing observer ``store`` was instrumented with, or None."""
    return attached(store, _MARK, SessionTracing)
