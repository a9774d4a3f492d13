"""``CLUSTER NODES``, parsed once for everyone who reads it (the embedded cluster's set-up,
``stickless health``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

_UNSETTLED = frozenset({"fail", "fail?", "noaddr", "handshake"})


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``: a node as the answering node sees it."""

    id: str
    address: str
    """``host:port`` (the bus port and hostname left out)."""
    flags: frozenset[str]
    primary: str
    """The primary's id for a replica, ``"-"`` for a primary."""
    slots: int
    """How many slots it serves (slots being migrated or imported not counted)."""

    @property
    def replica(self) -> bool:
        return "slave" in self.flags

    @property
    def failed(self) -> bool:
        """Failing, unreachable, or still joining (``fail``, ``fail?``, ``noaddr``,
        ``handshake``)."""
        return bool(self.flags & _UNSETTLED)


def parse_cluster_nodes(listing: str) -> Iterator[ClusterNode]:
    """The nodes of a ``CLUSTER NODES`` reply (malformed lines are skipped)."""
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@", 1)[0].split(",", 1)[0]
        slots = 0
        for item in fields[8:]:
            if item.startswith("["):
                continue  # a slot being migrated / imported
            first, _, last = item.partition("-")
            slots += int(last or first) - int(first) + 1
        yield ClusterNode(fields[0], address, frozenset(fields[2].split(",")), fields[3], slots)
