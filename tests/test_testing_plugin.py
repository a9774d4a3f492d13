"""The pytest plugin our users get: the store fixtures work as documented."""

from __future__ import annotations

from stickless import AsyncSessionStore, SessionStore


def test_store_fixture(stickless_store: SessionStore) -> None:
    s = stickless_store.new()
    s["a"] = 1
    stickless_store.save(s)
    assert stickless_store.load(s.token)["a"] == 1  # type: ignore[index]


async def test_async_store_fixture(stickless_async_store: AsyncSessionStore) -> None:
    s = stickless_async_store.new()
    s["a"] = 2
    await stickless_async_store.save(s)
    loaded = await stickless_async_store.load(s.token)
    assert loaded is not None and loaded["a"] == 2


def test_database_is_empty_for_every_test(stickless_store: SessionStore) -> None:
    assert stickless_store.client.dbsize() == 0
