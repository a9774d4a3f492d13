"""First-writer-wins ``setdefault`` and exactly-once ``pop_once`` across overlapping requests,
on real servers, from threads and from separate processes (issue 13, item 2)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from stickless import Session, SessionConfig, SessionStore

TABS = 12


def config() -> SessionConfig:
    return SessionConfig(key_prefix=f"ot{uuid.uuid4().hex[:8]}")


def _present(session: Session | None) -> Session:
    """``session``, loaded right after the test saved it: it is there."""
    assert session is not None
    return session


def _mint_in_a_process(url: str, prefix: str, token: str, value: str) -> Any:
    """One request in its own process: setdefault, save, report what the session holds."""
    with SessionStore.from_url(url, SessionConfig(key_prefix=prefix)) as store:
        session = store.load(token)
        assert session is not None
        session.setdefault("csrf", value)
        store.save(session)
        return session["csrf"]


def _pop_in_a_process(url: str, prefix: str, token: str) -> Any:
    with SessionStore.from_url(url, SessionConfig(key_prefix=prefix)) as store:
        session = store.load(token)
        assert session is not None
        return store.pop_once(session, "flash")


def test_setdefault_first_writer_wins_across_threads(stickless_url: str) -> None:
    store = SessionStore.from_url(stickless_url, config())
    s = store.new()
    s["user"] = "ann"
    store.save(s)
    tabs = [_present(store.load(s.token)) for _ in range(TABS)]  # all loaded before any save
    barrier = threading.Barrier(TABS)
    ended: list[Any] = [None] * TABS

    def tab(i: int) -> None:
        tabs[i].setdefault("csrf", f"token-{i}")
        barrier.wait()
        store.save(tabs[i])
        ended[i] = tabs[i]["csrf"]

    threads = [threading.Thread(target=tab, args=(i,)) for i in range(TABS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    stored = _present(store.load(s.token))["csrf"]
    assert ended == [stored] * TABS  # every tab ends with the one value Redis kept


def test_setdefault_first_writer_wins_across_processes(stickless_url: str) -> None:
    cfg = config()
    with SessionStore.from_url(stickless_url, cfg) as store:
        s = store.new()
        s["user"] = "ann"
        store.save(s)
        with ProcessPoolExecutor(4) as pool:
            jobs = [
                pool.submit(_mint_in_a_process, stickless_url, cfg.key_prefix, s.token, f"v{i}")
                for i in range(8)
            ]
            seen = {job.result(timeout=60) for job in jobs}
        assert seen == {_present(store.load(s.token))["csrf"]}


def test_pop_once_gives_the_value_to_exactly_one_tab(stickless_url: str) -> None:
    store = SessionStore.from_url(stickless_url, config())
    s = store.new()
    s["flash"] = "Saved!"
    s["keep"] = 1
    store.save(s)
    tabs = [_present(store.load(s.token)) for _ in range(TABS)]
    barrier = threading.Barrier(TABS)
    got: list[Any] = [None] * TABS

    def tab(i: int) -> None:
        barrier.wait()
        got[i] = store.pop_once(tabs[i], "flash")
        store.save(tabs[i])  # the tab's own save must not bring it back

    threads = [threading.Thread(target=tab, args=(i,)) for i in range(TABS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert got.count("Saved!") == 1 and got.count(None) == TABS - 1
    assert dict(_present(store.load(s.token))) == {"keep": 1}


def test_pop_once_across_processes(stickless_url: str) -> None:
    cfg = config()
    with SessionStore.from_url(stickless_url, cfg) as store:
        s = store.new()
        s["flash"] = {"text": "Welcome"}
        store.save(s)
        with ProcessPoolExecutor(4) as pool:
            jobs = [
                pool.submit(_pop_in_a_process, stickless_url, cfg.key_prefix, s.token)
                for _ in range(8)
            ]
            results = [job.result(timeout=60) for job in jobs]
    assert results.count({"text": "Welcome"}) == 1 and results.count(None) == 7


def test_pop_once_of_a_value_never_stored_is_local(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, config())
    s = store.new()
    s["flash"] = "not saved yet"
    assert store.pop_once(s, "flash") == "not saved yet" and "flash" not in s
    assert store.pop_once(s, "missing", "default") == "default"


@pytest.mark.parametrize("flavour", ["old-token"])
def test_pop_once_with_a_token_that_lost_its_power_takes_nothing(
    stickless_url: str, store_factory: Any, flavour: str
) -> None:
    store = store_factory(stickless_url, config())
    s = store.new()
    s["flash"] = "secret"
    store.save(s)
    stale = store.load(s.token)
    s["user"] = "ann"  # identity change: the old token has no power
    store.save(s)
    assert store.pop_once(stale, "flash") is None
    assert store.load(s.token)["flash"] == "secret"


async def test_pop_once_and_setdefault_with_concurrent_tasks(stickless_url: str) -> None:
    import asyncio

    from stickless import AsyncSessionStore

    store = AsyncSessionStore.from_url(stickless_url, config())
    s = store.new()
    s["flash"] = "once"
    await store.save(s)
    tabs = [_present(await store.load(s.token)) for _ in range(TABS)]

    async def tab(i: int) -> Any:
        tabs[i].setdefault("state", f"state-{i}")
        popped = await store.pop_once(tabs[i], "flash")
        await store.save(tabs[i])
        return popped, tabs[i]["state"]

    results = await asyncio.gather(*(tab(i) for i in range(TABS)))
    assert [p for p, _ in results].count("once") == 1
    assert len({state for _, state in results}) == 1
    await store.aclose()
