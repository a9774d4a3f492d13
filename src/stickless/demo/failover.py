"""The demo's "fail over now" button and its live write counter.

A person presses the button and watches, on the same page, a stream of writes go through the
failover: how many the servers acknowledged (answered 200) and how many the store holds.

* :func:`request_failover` asks the demo's own embedded topology for a *planned* failover,
  over the wire: ``SENTINEL FAILOVER <service>`` on the first sentinel that accepts it, or
  ``CLUSTER FAILOVER`` on a replica of the primary owning the visitor's session (its slot
  comes from the token's family, the keys' hash tag). Only loopback addresses are ever
  contacted, and only when the launcher enabled it (``STICKLESS_DEMO_FAILOVER=1``, set for
  the sentinel and cluster topologies).
* :func:`current_primary` says which node holds the visitor's session now (shown live).
* The counter: the page's script writes sequence numbers one at a time
  (``POST /api/watch/write``: the session's ``watch:n`` is incremented with
  :meth:`Session.incr` and the number appended to ``watch:seqs``), counts the answers, and
  polls ``GET /api/watch`` for what the store holds; "acknowledged but missing" is the number
  of acknowledged writes the store does not have (0 is the promise), "applied without an
  acknowledgement" those answered with an error that the store kept anyway.

Every POST carries the session's CSRF token (a form field or the ``X-CSRF-Token`` header,
compared in constant time), and the session cookie is ``SameSite=Lax``, so another site
cannot press the button for the visitor.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.crc import key_slot

from stickless.session import Session
from stickless.store.connect import parse_url

CSRF_KEY: Final = "csrf"
"""Session key of the visitor's CSRF token (made when the page is first rendered)."""
WATCH_RUN: Final = "watch:run"
WATCH_COUNT: Final = "watch:n"
WATCH_SEQS: Final = "watch:seqs"
WATCH_MAX: Final = 3000
"""Writes one run may make (the browser stops there; about 3 minutes at its pace)."""
_TIMEOUT: Final = 2.0


class FailoverError(RuntimeError):
    """The failover could not be requested (the message says why; shown to the visitor)."""


@dataclass(frozen=True, slots=True)
class FailoverStarted:
    command: str
    """What was sent, e.g. ``SENTINEL FAILOVER stickless``."""
    old_primary: str
    """``host:port`` of the primary being replaced."""
    target: str
    """Where the command went (a sentinel, or the replica taking over)."""


# --------------------------------------------------------------------------------- CSRF
def csrf_token(session: Session) -> str:
    """The session's CSRF token, created on first use (saved with the session)."""
    token = session.get(CSRF_KEY)
    if not isinstance(token, str) or len(token) < 16:
        token = secrets.token_urlsafe(24)
        session[CSRF_KEY] = token
    return token


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Does ``presented`` match the session's token? (Never for a session without one.)"""
    expected = session.get(CSRF_KEY)
    if not isinstance(expected, str) or not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def same_origin(origin: str | None, allowed: set[str]) -> bool:
    """True when the browser sent no ``Origin`` (old browsers, same-origin GET-like forms)
    or one of ``allowed`` (the demo's own servers)."""
    return origin is None or origin.rstrip("/") in allowed


# ------------------------------------------------------------------------------ topology
def topology_of(url: str) -> str:
    """``standalone``, ``sentinel`` or ``cluster``."""
    return parse_url(url).kind


def _loopback(host: str) -> str:
    address = "127.0.0.1" if host == "localhost" else host
    try:
        if ipaddress.ip_address(address).is_loopback:
            return address
    except ValueError:
        pass
    raise FailoverError(
        f"the demo only fails over its own embedded Valkey on 127.0.0.1, not {host}"
    )


def _client(host: str, port: int) -> redis.Redis:
    return redis.Redis(
        host=_loopback(host),
        port=port,
        socket_timeout=_TIMEOUT,
        socket_connect_timeout=_TIMEOUT,
        decode_responses=True,
    )


def _ask(host: str, port: int, *args: str | int) -> Any:
    client = _client(host, port)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class _ClusterNode:
    id: str
    host: str
    port: int
    primary_id: str | None
    healthy: bool
    slots: tuple[tuple[int, int], ...]


def _cluster_nodes(hosts: tuple[tuple[str, int], ...]) -> list[_ClusterNode]:
    """``CLUSTER NODES`` as seen by the first listed node that answers."""
    errors = []
    for host, port in hosts:
        try:
            raw = str(_ask(host, port, "CLUSTER", "NODES"))
        except (redis.RedisError, OSError) as exc:
            errors.append(f"{host}:{port}: {exc}")
            continue
        nodes = []
        for line in raw.splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            address = fields[1].split(",", 1)[0].split("@", 1)[0]  # ip:port@bus,hostname
            node_host, _, node_port = address.rpartition(":")
            flags = set(fields[2].split(","))
            slots = []
            for item in fields[8:]:
                if item.startswith("["):
                    continue  # a slot being migrated
                first, _, last = item.partition("-")
                slots.append((int(first), int(last or first)))
            nodes.append(
                _ClusterNode(
                    id=fields[0],
                    host=node_host,
                    port=int(node_port),
                    primary_id=None if fields[3] == "-" else fields[3],
                    healthy=not flags & {"fail", "fail?", "handshake", "noaddr"}
                    and fields[7] == "connected",
                    slots=tuple(slots),
                )
            )
        return nodes
    raise FailoverError("no cluster node answered: " + "; ".join(errors))


def _slot_owner(nodes: list[_ClusterNode], slot: int) -> _ClusterNode:
    for node in nodes:
        if node.primary_id is None and any(a <= slot <= b for a, b in node.slots):
            return node
    raise FailoverError(f"no primary serves slot {slot} right now")


def _cluster_hosts(url: str) -> tuple[tuple[str, int], ...]:
    """Every node of the cluster that the URL's nodes know (so a dead seed does not matter)."""
    listed = parse_url(url).hosts
    try:
        return tuple((n.host, n.port) for n in _cluster_nodes(listed) if n.healthy) or listed
    except FailoverError:
        return listed


def session_slot(family: str) -> int:
    """The cluster slot of every key of the session of ``family`` (its hash tag)."""
    return int(key_slot(family.encode()))


def current_primary(url: str, family: str | None) -> str | None:
    """``host:port`` of the primary holding the session of ``family`` (Sentinel: the primary;
    Cluster: the owner of the session's slot; None when not known right now)."""
    endpoint = parse_url(url)
    try:
        if endpoint.kind == "sentinel":
            for host, port in endpoint.hosts:
                try:
                    reply = _ask(
                        host, port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", str(endpoint.service)
                    )
                except (redis.RedisError, OSError):
                    continue
                if reply:
                    return f"{reply[0]}:{reply[1]}"
            return None
        if endpoint.kind == "cluster" and family is not None:
            owner = _slot_owner(_cluster_nodes(_cluster_hosts(url)), session_slot(family))
            return f"{owner.host}:{owner.port}"
    except FailoverError:
        return None
    return None


def request_failover(url: str, family: str | None) -> FailoverStarted:
    """Ask for a planned failover of the primary holding the session of ``family`` (any
    primary of a Sentinel setup); returns at once, the promotion follows within seconds.
    FailoverError when it cannot be requested (standalone, nobody accepts, no replica)."""
    endpoint = parse_url(url)
    if endpoint.kind == "sentinel":
        service = str(endpoint.service)
        old = current_primary(url, None) or "unknown"
        errors = []
        for host, port in endpoint.hosts:
            try:
                _ask(host, port, "SENTINEL", "FAILOVER", service)
            except (redis.RedisError, OSError) as exc:  # INPROG: a failover is under way
                errors.append(str(exc))
                continue
            return FailoverStarted(f"SENTINEL FAILOVER {service}", old, f"sentinel {host}:{port}")
        raise FailoverError("no sentinel accepted the failover: " + "; ".join(sorted(set(errors))))
    if endpoint.kind == "cluster":
        if family is None:
            raise FailoverError("there is no session yet: add something to the cart first")
        nodes = _cluster_nodes(_cluster_hosts(url))
        owner = _slot_owner(nodes, session_slot(family))
        replicas = [n for n in nodes if n.primary_id == owner.id and n.healthy]
        if not replicas:
            raise FailoverError(f"the primary {owner.host}:{owner.port} has no healthy replica")
        replica = replicas[0]
        try:
            _ask(replica.host, replica.port, "CLUSTER", "FAILOVER")
        except (redis.RedisError, OSError) as exc:
            raise FailoverError(
                f"CLUSTER FAILOVER refused by {replica.host}:{replica.port}: {exc}"
            ) from exc
        return FailoverStarted(
            "CLUSTER FAILOVER",
            f"{owner.host}:{owner.port}",
            f"replica {replica.host}:{replica.port}",
        )
    raise FailoverError("a standalone Valkey has no replica to fail over to")


# --------------------------------------------------------------------------- the counter
def watch_state(session: Session) -> dict[str, Any]:
    """What the store holds of the current run (the session as loaded by this request)."""
    seqs = session.get(WATCH_SEQS)
    count = session.get(WATCH_COUNT)
    return {
        "run": session.get(WATCH_RUN),
        "stored": [s for s in seqs if isinstance(s, int)] if isinstance(seqs, list) else [],
        "counter": count if isinstance(count, int) else 0,
    }


def start_run(session: Session) -> str:
    """Start a new run (the previous one's numbers are dropped); returns its id."""
    run = secrets.token_hex(6)
    session[WATCH_RUN] = run
    session[WATCH_SEQS] = []
    session[WATCH_COUNT] = 0
    return run


def record_write(session: Session, run: str, seq: int) -> int | None:
    """One write of run ``run``: the counter goes up (``incr``), ``seq`` is appended. None when
    ``run`` is not the session's current run or the run is full."""
    if session.get(WATCH_RUN) != run:
        return None
    seqs = session.get(WATCH_SEQS)
    seqs = list(seqs) if isinstance(seqs, list) else []
    if len(seqs) >= WATCH_MAX:
        return None
    count = session.incr(WATCH_COUNT)
    session[WATCH_SEQS] = [*seqs, seq]
    return count


# ------------------------------------------------------------------------------ the panel
PANEL_CSS: Final = """
#failover{grid-column:1/-1}
#failover .figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));
 gap:6px 14px;margin:10px 0}
#failover .figures div{background:#f8fafc;border:1px solid #e5e7eb;border-radius:8px;
 padding:6px 10px}
#failover .figures b{display:block;font-size:22px}
#failover .ok{color:#15803d}#failover .bad{color:#b91c1c}
"""


def panel_html(*, topology: str, csrf: str, enabled: bool, primary: str | None = None) -> str:
    """The "fail over now" section (sentinel and cluster only). Works without JavaScript
    (the button is a form POST); the live counter needs it."""
    if not enabled:
        return ""
    what = "SENTINEL FAILOVER" if topology == "sentinel" else "CLUSTER FAILOVER"
    where = (
        "Sentinel promotes a replica to primary"
        if topology == "sentinel"
        else "a replica of the primary holding your session takes over its slots"
    )
    token = html.escape(csrf, quote=True)
    shown = html.escape(primary or "-", quote=True)
    known = html.escape(primary or "", quote=True)
    return f"""<section id="failover" data-csrf="{token}" data-primary="{known}">
<h2>Failover: lose nothing</h2>
<p>Start the writer: this page sends writes to this server one after another (each one an
atomic <code>incr</code> and a number appended to the session). Then press <b>Fail over
now</b> ({what}: {where}). Writes answered 200 are <i>acknowledged</i>; the counts below come
from the store itself.</p>
<button type="button" id="watch-start">Start writing</button>
<button type="button" id="watch-stop">Stop</button>
<form method="post" action="/failover" id="failover-form" style="display:inline">
<input type="hidden" name="csrf" value="{token}">
<button type="submit" id="failover-button" class="warn">Fail over now</button></form>
<div class="figures">
<div>acknowledged (200)<b id="w-acked">0</b></div>
<div>in the store<b id="w-stored">-</b></div>
<div>acknowledged but missing<b id="w-lost">-</b></div>
<div>answered with an error<b id="w-failed">0</b></div>
<div>applied without an acknowledgement<b id="w-extra">-</b></div>
<div>primary holding the session<b id="w-primary" style="font-size:16px">{shown}</b></div>
</div>
<p class="muted" id="w-status">Writer stopped. (Without JavaScript the button still works;
the counter does not.)</p>
</section>"""


PANEL_JS: Final = """
(() => {
  const panel = document.getElementById("failover");
  if (!panel) return;
  const csrf = panel.dataset.csrf, headers = {"X-CSRF-Token": csrf};
  const $ = (id) => document.getElementById(id);
  let run = null, seq = 0, running = false, firstPrimary = panel.dataset.primary || null;
  let notice = "";  // the failover's answer: shown beside "Writing..." until the writer stops
  const acked = new Set(), failed = new Set();
  const say = (text) => { $("w-status").textContent = text; };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  async function start() {
    if (running) return;
    const r = await fetch("/api/watch/start", {method: "POST", headers});
    if (!r.ok) { say(`Could not start (HTTP ${r.status}).`); return; }
    run = (await r.json()).run; seq = 0; acked.clear(); failed.clear(); running = true;
    notice = ""; say("Writing..."); write();
  }
  async function write() {
    while (running && seq < %(max)d) {
      seq += 1;
      try {
        const r = await fetch(`/api/watch/write?run=${run}&seq=${seq}`, {method: "POST", headers});
        (r.status === 200 ? acked : failed).add(seq);
        if (r.status === 409) {
          running = false; say("Another tab started a new run, or this run is full.");
        }
      } catch (e) { failed.add(seq); }
      $("w-acked").textContent = acked.size; $("w-failed").textContent = failed.size;
      await sleep(50);
    }
    running = false;
  }
  async function poll() {
    if (run !== null) {
      // only writes answered before this read is sent are compared with what it returns
      const ackedNow = [...acked], failedNow = new Set(failed);
      try {
        const r = await fetch("/api/watch", {headers: {"Accept": "application/json"}});
        if (r.ok) {
          const state = await r.json();
          if (state.run === run) {
            const stored = new Set(state.stored);
            const lost = ackedNow.filter((s) => !stored.has(s)).length;
            $("w-stored").textContent = state.stored.length;
            $("w-lost").textContent = lost;
            $("w-lost").className = lost ? "bad" : "ok";
            $("w-extra").textContent = state.stored.filter((s) => failedNow.has(s)).length;
          }
          if (state.primary) {
            firstPrimary = firstPrimary || state.primary;
            $("w-primary").textContent = state.primary === firstPrimary
              ? state.primary : `${state.primary} (was ${firstPrimary})`;
          }
          if (running) say(notice ? `Writing... ${notice}` : "Writing...");
        } else { say(`Store unavailable right now (HTTP ${r.status}); retrying.`); }
      } catch (e) { say("This server does not answer."); }
    }
    setTimeout(poll, 1000);
  }
  $("watch-start").addEventListener("click", start);
  $("watch-stop").addEventListener("click", () => { running = false; say("Writer stopped."); });
  $("failover-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const r = await fetch("/failover", {method: "POST", body: new URLSearchParams({csrf}),
        headers: {"Accept": "application/json"}});
      notice = (await r.json()).message; say(running ? `Writing... ${notice}` : notice);
    } catch (e) { say("The failover request failed."); }
  });
  poll();
})();
""".replace("%(max)d", str(WATCH_MAX))
