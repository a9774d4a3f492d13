"""A cap on live sessions per user (issue 12, item 4), on real servers: concurrent logins
from several processes and threads on standalone, Sentinel and Cluster never leave more
than ``max_sessions_per_user`` live sessions (evict_oldest) / exactly that many logins
succeed and the others write nothing (refuse); dead index entries do not count; round
trips counted; TooManySessions reaches the app through the adapters (never a 503)."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
import redis

from helpers import trips
from stickless import SessionConfig, SessionStore, TooManySessions
from stickless.store.keys import KeyLayout
from stickless.store.plan import LOGIN_WINDOW_MS
from stickless.tokens import token_id

LIMIT = 2
PROCESSES = 2
THREADS = 4  # per process: 8 concurrent logins of one user


def capped(prefix: str | None = None, **options: Any) -> SessionConfig:
    options.setdefault("max_sessions_per_user", LIMIT)
    return SessionConfig(key_prefix=prefix or f"cap{uuid.uuid4().hex[:8]}", **options)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """Worker processes, started once (spawned: no thread of the test process is forked)."""
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as made:
        assert list(made.map(_ready, range(PROCESSES), timeout=60)) == [True] * PROCESSES
        yield made


def _ready(_: int) -> bool:
    return True


def _logins_in_a_process(
    url: str, prefix: str, mode: str, user: str, start_at: float
) -> list[dict[str, Any]]:
    """THREADS logins of ``user`` at ``start_at`` (wall clock, shared by the processes), half
    of them from an anonymous session stored before (a visitor with a cart), half from a
    brand-new one. Each reports its tokens and what its save did."""
    config = capped(prefix, on_limit=mode)
    with SessionStore.from_url(url, config) as store:
        sessions = []
        for i in range(THREADS):
            s = store.new()
            if i % 2:
                s["cart"] = [i]
                store.save(s)
                loaded = store.load(s.token)
                assert loaded is not None
                s = loaded
            sessions.append(s)
        store.sessions_for("warm-up")  # connections and scripts ready before the start
        results: list[dict[str, Any]] = [{} for _ in range(THREADS)]

        def login(i: int) -> None:
            s = sessions[i]
            before = None if s.is_new else s.token
            s["signed_in"] = i
            s.login(user)
            time.sleep(max(0.0, start_at - time.time()))
            try:
                outcome = str(store.save(s).outcome)
            except TooManySessions:
                outcome = "refused"
            results[i] = {
                "before": before,
                "token": s.token,
                "family": token_id(s.raw_token).family,
                "outcome": outcome,
            }

        threads = [threading.Thread(target=login, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert all(results), "a login thread did not finish"
        return results


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["evict_oldest", "refuse"])
def test_concurrent_logins_never_leave_more_than_the_cap(
    topology_url: str, pool: ProcessPoolExecutor, mode: str
) -> None:
    config = capped(on_limit=mode)
    user = f"user-{uuid.uuid4().hex[:6]}"
    start_at = time.time() + 2.0
    jobs = [
        pool.submit(_logins_in_a_process, topology_url, config.key_prefix, mode, user, start_at)
        for _ in range(PROCESSES)
    ]
    results = [r for job in jobs for r in job.result(timeout=120)]
    assert len(results) == PROCESSES * THREADS == 8
    layout = KeyLayout(config.key_prefix)
    with SessionStore.from_url(topology_url, config) as store:
        loaded = {r["token"]: store.load(r["token"]) for r in results}
        live = [t for t, s in loaded.items() if s is not None and s.user_id == user]
        assert len(live) == LIMIT  # the end state: exactly the cap, never one more
        assert sorted(i.session_id for i in store.sessions_for(user)) == sorted(
            r["family"] for r in results if r["token"] in live
        )
        outcomes = [r["outcome"] for r in results]
        if mode == "evict_oldest":
            # every login went through; those ended by a newer one before their save
            # landed report gone, the others were ended afterwards
            assert set(outcomes) <= {"saved", "gone"} and outcomes.count("saved") >= LIMIT
        else:
            assert outcomes.count("saved") == LIMIT
            assert outcomes.count("refused") == 8 - LIMIT
            for r in results:
                if r["outcome"] != "refused":
                    continue
                if r["before"] is None:  # a new session: nothing of it exists
                    assert loaded[r["token"]] is None
                    assert not store.client.exists(layout.data(r["family"]))
                else:  # the stored one is as it was: same token, anonymous, just its cart
                    again = loaded[r["token"]]
                    assert r["token"] == r["before"] and again is not None
                    assert again.user_id is None and set(again) == {"cart"}
        assert store.client.pttl(layout.logins(user)) > 0  # never a key without a TTL


# ----------------------------------------------------------------------- dead entries
@pytest.fixture
def raw(stickless_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stickless_url)
    yield client
    client.close()


def logged_in(store: SessionStore, user: str, **lifetime: float) -> Any:
    s = store.new()
    s["x"] = 1
    s.login(user)
    if lifetime:
        s.set_lifetime(**lifetime)
    store.save(s)
    return s


def age_login(raw: redis.Redis, config: SessionConfig, user: str, session: Any) -> None:
    """Make ``session``'s login look older than the window (as if made a minute ago)."""
    logins = KeyLayout(config.key_prefix).logins(user)
    family = token_id(session.raw_token).family
    assert raw.zadd(logins, {family: time.time() * 1000 - 2 * LOGIN_WINDOW_MS}, xx=True) == 0
    assert raw.zscore(logins, family) is not None


@pytest.mark.timeout(30)
def test_an_expired_session_does_not_count(stickless_url: str, raw: redis.Redis) -> None:
    config = capped(on_limit="refuse")
    user = "eve"
    with SessionStore.from_url(stickless_url, config) as store:
        expiring = logged_in(store, user, idle=0.2)
        logged_in(store, user)
        with pytest.raises(TooManySessions):
            logged_in(store, user)  # two live: full
        time.sleep(0.4)
        assert store.load(expiring.token) is None  # idle-expired
        # a login in the last LOGIN_WINDOW_MS that vanished without a tombstone may still
        # be in flight: it counts until the window passes
        with pytest.raises(TooManySessions):
            logged_in(store, user)
        age_login(raw, config, user, expiring)
        third = logged_in(store, user)
        assert third.user_id == user and not third.is_new
        index = KeyLayout(config.key_prefix).user_index(user)
        assert raw.zscore(index, token_id(expiring.raw_token).family) is None  # pruned
        assert len(store.sessions_for(user)) == LIMIT


def test_sessions_bound_without_the_cap_count_only_while_live(
    stickless_url: str, raw: redis.Redis
) -> None:
    config = capped(on_limit="refuse")
    user = "finn"
    with (
        SessionStore.from_url(
            stickless_url, config.with_options(max_sessions_per_user=None)
        ) as uncapped,
        SessionStore.from_url(stickless_url, config) as store,
    ):
        old = [logged_in(uncapped, user) for _ in range(3)]  # before the cap was set
        with pytest.raises(TooManySessions):
            logged_in(store, user)
        for s in old:
            raw.delete(KeyLayout(config.key_prefix).data(token_id(s.raw_token).family))
        logged_in(store, user)
        logged_in(store, user)
        assert len(store.sessions_for(user)) == LIMIT


def test_a_logout_frees_its_place_at_once(stickless_url: str) -> None:
    config = capped(on_limit="refuse")
    user = "gus"
    with SessionStore.from_url(stickless_url, config) as store:
        first = logged_in(store, user)
        logged_in(store, user)
        first.logout()  # a tombstone: known dead, even within the window
        store.save(first)
        logged_in(store, user)
        assert len(store.sessions_for(user)) == LIMIT


def test_evict_ends_the_oldest_login_and_reports_it(stickless_url: str) -> None:
    config = capped()
    user = "hal"
    with SessionStore.from_url(stickless_url, config) as store:
        first, second = logged_in(store, user), logged_in(store, user)
        third = store.new()
        third.login(user)
        result = store.save(third)
        assert result.evicted == (token_id(first.raw_token).family,)
        assert store.load(first.token) is None
        assert store.load(second.token) is not None and store.load(third.token) is not None
        assert store.save(first).outcome == "unchanged"  # nothing pending: no resurrection
        first["late"] = 1
        assert store.save(first).outcome == "gone"


def test_a_refused_login_saves_once_the_app_made_room(stickless_url: str) -> None:
    config = capped(on_limit="refuse", max_sessions_per_user=1)
    user = "ida"
    with SessionStore.from_url(stickless_url, config) as store:
        logged_in(store, user)
        s = store.new()
        s["cart"] = ["pear"]
        store.save(s)
        again = store.load(s.token)
        assert again is not None
        again.login(user)
        with pytest.raises(TooManySessions) as refused:
            store.save(again)
        assert user not in str(refused.value) and refused.value.limit == 1
        assert store.load(s.token) is not None  # the old token still works: nothing saved
        assert store.revoke_user(user) == 1  # "sign out my other devices"
        assert store.save(again).outcome == "saved"  # the same Session, retried
        assert store.load(s.token) is None and again.user_id == user


# ------------------------------------------------------------------------ round trips
def login_trips(store: Any, user: str) -> tuple[int, str]:
    s = store.new()
    s["a"] = 1
    s.login(user)
    with trips(store) as batches:
        try:
            outcome = str(store.save(s).outcome)
        except TooManySessions:
            outcome = "refused"
    return len(batches), outcome


@pytest.mark.parametrize("mode", ["evict_oldest", "refuse"])
def test_round_trips_of_a_capped_login(stickless_url: str, store_factory: Any, mode: str) -> None:
    store = store_factory(stickless_url, capped(on_limit=mode))
    uncapped = store_factory(stickless_url, capped(max_sessions_per_user=None))
    assert login_trips(uncapped, "u") == (1, "saved")  # no cap: unchanged
    user = f"rt-{mode}"
    assert login_trips(store, user) == (2, "saved")  # reserve + save
    assert login_trips(store, user) == (2, "saved")  # fewer others than the cap: the same
    if mode == "refuse":
        assert login_trips(store, user) == (3, "refused")  # reserve + check + withdraw
    else:
        assert login_trips(store, user) == (3, "saved")  # reserve + save/check + evict
    bound = store.new()
    bound.user_id = "someone-else"
    store.save(bound)
    bound["more"] = 1
    with trips(store) as batches:
        store.save(bound)  # no login: one round trip, as always
    assert len(batches) == 1


# ---------------------------------------------------------------------------- adapters
def test_asgi_lets_the_refusal_reach_the_app(stickless_url: str) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from stickless.asgi import SessionMiddleware, session_of

    async def login(request: Request) -> PlainTextResponse:
        session = session_of(request.scope)
        session.login("jo")
        try:
            await request.scope["stickless.store"].save(session)  # the cap is checked here
        except TooManySessions:
            session.user_id = None  # give the login up: this session stays anonymous
            return PlainTextResponse("signed in on too many devices", status_code=409)
        return PlainTextResponse("welcome")

    async def login_late(request: Request) -> PlainTextResponse:
        session_of(request.scope).login("jo")  # saved by the middleware, after the route
        return PlainTextResponse("welcome")

    app = Starlette(routes=[Route("/login", login), Route("/late", login_late)])
    config = capped(on_limit="refuse", max_sessions_per_user=1)
    wrapped = SessionMiddleware(app, url=stickless_url, config=config)
    with TestClient(wrapped) as first, TestClient(wrapped) as second:
        assert first.get("/login").text == "welcome"
        refused = second.get("/login")
        assert refused.status_code == 409 and refused.text == "signed in on too many devices"
        assert "set-cookie" not in refused.headers  # nothing stored for it
        with pytest.raises(TooManySessions):  # never a 503: the app's error handling sees it
            second.get("/late")


def test_flask_lets_the_refusal_reach_the_view(stickless_url: str) -> None:
    from flask import Flask

    from stickless.flask import Stickless, current_session, current_store

    app = Flask(__name__)
    config = capped(on_limit="refuse", max_sessions_per_user=1)
    Stickless(app, store=SessionStore.from_url(stickless_url, config))

    @app.post("/login")
    def login() -> tuple[str, int]:
        session = current_session()
        session.login("kim")
        try:
            current_store().save(session.load())
        except TooManySessions:
            session.user_id = None
            return "signed in on too many devices", 409
        return "welcome", 200

    first, second = app.test_client(), app.test_client()
    assert first.post("/login").status_code == 200
    refused = second.post("/login")
    assert refused.status_code == 409 and "Set-Cookie" not in refused.headers
