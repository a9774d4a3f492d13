"""Operations: look into a live store, check the servers, follow events, export metrics and
traces.

* :mod:`stickless.ops.inspect`: list / show / remove sessions, revoke users, store stats;
* :mod:`stickless.ops.health`: every node's role, latency and replication lag;
* :mod:`stickless.ops.events`: created / renewed / destroyed / expired events (best effort,
  from keyspace notifications);
* :mod:`stickless.ops.metrics`: Prometheus counters and histograms around a store
  (needs the ``metrics`` extra, imported only when used);
* :mod:`stickless.ops.tracing`: OpenTelemetry spans and the same metrics (needs the ``otel``
  extra; not imported here);
* :mod:`stickless.ops.observe`: the one hook both watch a store through.

The ``stickless`` command (:mod:`stickless.cli`) is a thin layer over these.
"""

from stickless.ops.events import EventSubscriber, NodeStatus, SessionEvent
from stickless.ops.health import HealthReport, NodeHealth, check_health
from stickless.ops.inspect import (
    MemoryStats,
    NodeStats,
    SessionDetail,
    SessionSummary,
    StoreStats,
    TtlBucket,
    destroy_by_id,
    list_sessions,
    revoke_user,
    show_session,
    store_stats,
)
from stickless.ops.metrics import SessionMetrics, instrument

__all__ = [
    "EventSubscriber",
    "HealthReport",
    "MemoryStats",
    "NodeHealth",
    "NodeStats",
    "NodeStatus",
    "SessionDetail",
    "SessionEvent",
    "SessionMetrics",
    "SessionSummary",
    "StoreStats",
    "TtlBucket",
    "check_health",
    "destroy_by_id",
    "instrument",
    "list_sessions",
    "revoke_user",
    "show_session",
    "store_stats",
]
