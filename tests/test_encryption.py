"""Encryption at rest (issue 13, item 1), on a real Valkey: values in Redis are not plaintext;
a ciphertext moved to another field or session does not open; key rotation keeps users
logged in; counters stay plain integers; round trips do not change."""

from __future__ import annotations

import base64
import logging
import secrets
import uuid
from typing import Any

import pytest
import redis

from helpers import trips
from stickless import SessionConfig, SessionStore
from stickless.errors import ConfigurationError
from stickless.store.keys import KeyLayout
from stickless.tokens import token_id


def new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def config(*keys: str) -> SessionConfig:
    return SessionConfig(key_prefix=f"en{uuid.uuid4().hex[:8]}", encryption_keys=list(keys))


def raw_hash(url: str, cfg: SessionConfig, session: Any) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(url)
    try:
        key = KeyLayout(cfg.key_prefix).data(token_id(session.raw_token).family)
        return client.hgetall(key)  # type: ignore[return-value]
    finally:
        client.close()


def test_values_are_not_plaintext_in_redis(stickless_url: str, store_factory: Any) -> None:
    cfg = config(new_key())
    store = store_factory(stickless_url, cfg)
    s = store.new()
    s["card"] = {"number": "4111-1111-1111-1111", "holder": "Ann Example"}
    s["note"] = "very private"
    s.incr("visits")
    store.save(s)
    stored = raw_hash(stickless_url, cfg, s)
    blob = b"".join(stored.values())
    assert b"4111" not in blob and b"Ann" not in blob and b"private" not in blob
    assert stored[b"d:visits"] == b"1"  # counters stay plain: HINCRBY works on them
    loaded = store.load(s.token)
    assert loaded is not None and loaded["card"]["holder"] == "Ann Example"
    loaded.incr("visits")
    store.save(loaded)
    assert store.load(s.token)["visits"] == 2


def test_moved_ciphertexts_do_not_open(
    stickless_url: str, store_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(new_key())
    store = store_factory(stickless_url, cfg)
    a, b = store.new(), store.new()
    a["role"], a["name"] = "admin", "ann"
    b["role"] = "guest"
    store.save(a)
    store.save(b)
    client = redis.Redis.from_url(stickless_url)
    layout = KeyLayout(cfg.key_prefix)
    key_a = layout.data(token_id(a.raw_token).family)
    key_b = layout.data(token_id(b.raw_token).family)
    admin_role = client.hget(key_a, "d:role")
    client.hset(key_b, "d:role", admin_role)  # another session's ciphertext
    client.hset(key_a, "d:name", admin_role)  # another field's ciphertext
    client.close()
    with caplog.at_level(logging.WARNING, logger="stickless"):
        loaded_b, loaded_a = store.load(b.token), store.load(a.token)
    assert loaded_b is not None and "role" not in loaded_b  # dropped, never "admin"
    assert loaded_a is not None and "name" not in loaded_a and loaded_a["role"] == "admin"
    assert "admin" not in caplog.text and "does not open" in caplog.text


def test_rotation_keeps_users_logged_in(stickless_url: str) -> None:
    old, new = new_key(), new_key()
    cfg_old = config(old)
    with SessionStore.from_url(stickless_url, cfg_old) as store:
        s = store.new()
        s.login("ann")
        s["cart"] = ["apple"]
        store.save(s)
    rotated = cfg_old.with_options(encryption_keys=[new, old])
    with SessionStore.from_url(stickless_url, rotated) as store:
        loaded = store.load(s.token)
        assert loaded is not None and loaded["cart"] == ["apple"] and loaded.user_id == "ann"
        assert store.save(loaded).outcome == "saved"  # re-sealed with the newest key
    retired = cfg_old.with_options(encryption_keys=[new])
    with SessionStore.from_url(stickless_url, retired) as store:
        again = store.load(s.token)
        assert again is not None and again["cart"] == ["apple"]


def test_round_trips_do_not_change(stickless_url: str, store_factory: Any) -> None:
    store = store_factory(stickless_url, config(new_key()))
    with trips(store) as sent:
        s = store.new()
        s["a"] = {"x": 1}
        store.save(s)
        loaded = store.load(s.token)
        loaded["a"] = {"x": 2}
        store.save(loaded)
    assert len(sent) == 3  # save, load, save


def test_a_counter_cannot_become_an_encrypted_value(store_factory: Any, stickless_url: str) -> None:
    store = store_factory(stickless_url, config(new_key()))
    s = store.new()
    s.incr("n")
    with pytest.raises(TypeError, match="counter"):
        s["n"] = "text"


@pytest.mark.parametrize("bad", ["short", "x" * 44, ""])
def test_bad_keys_are_refused_without_echo(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="32 random bytes") as info:
        SessionConfig(encryption_keys=[bad])
    assert bad not in str(info.value) or bad == ""
