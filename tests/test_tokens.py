"""Tokens: format, validation of hostile input, signing, storage identity."""

from __future__ import annotations

import pytest

from stickless import tokens
from stickless.tokens import TokenCodec


def test_new_tokens_are_unique_and_well_formed() -> None:
    seen = {tokens.new_raw_token() for _ in range(2000)}
    assert len(seen) == 2000
    codec = TokenCodec(None)
    assert all(codec.parse(t) == t for t in seen)
    family, secret = next(iter(seen)).split(".")
    assert len(family) == 11 and len(secret) == 43  # 64 + 256 random bits


def test_family_survives_in_renewed_tokens() -> None:
    raw = tokens.new_raw_token()
    family = raw.split(".")[0]
    renewed = tokens.new_raw_token(family)
    assert renewed != raw and tokens.token_id(renewed).family == family


def test_storage_id_is_a_hash_not_the_token() -> None:
    raw = tokens.new_raw_token()
    tid = tokens.token_id(raw)
    assert raw.split(".")[1] not in tid.digest and len(tid.digest) == 22
    # the session id is the family only: it names the session, it cannot be a cookie
    assert tid.session_id == raw.split(".")[0]
    assert tokens.parse_session_id(tid.session_id) == tid.family


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "x",
        "a" * 10_000,
        "../../etc/passwd",
        "{x}.y",
        "A" * 11 + "." + "B" * 42,
        "A" * 11 + "." + "B" * 44,
        "A" * 11 + "." + "B" * 42 + "=",
        "AAAAAAAAAA\u00e9." + "B" * 43,
        "A" * 11 + "." + "B" * 43 + "\n",
        b"\xff\xfe",
        None,
        12345,
        ["list"],
        "A" * 11 + "." + "B" * 43 + "; Path=/",
    ],
)
def test_hostile_tokens_are_rejected_without_exception(hostile: object) -> None:
    assert TokenCodec(None).parse(hostile) is None
    assert TokenCodec("secret").parse(hostile) is None


def test_signed_tokens_reject_forgeries_and_support_rotation() -> None:
    old = TokenCodec("old-secret")
    raw = tokens.new_raw_token()
    signed = old.dump(raw)
    assert signed.startswith(raw + ".") and old.parse(signed) == raw
    assert old.parse(raw) is None  # unsigned token refused when signing is on
    assert TokenCodec("other").parse(signed) is None
    tampered = signed[:-2] + ("AA" if not signed.endswith("AA") else "BB")
    assert old.parse(tampered) is None
    rotated = TokenCodec(["old-secret", "new-secret"])
    assert rotated.parse(signed) == raw  # old tokens still verify
    assert rotated.dump(raw) != signed  # new ones are signed with the new key
    assert TokenCodec("new-secret").parse(rotated.dump(raw)) == raw


def test_a_token_is_never_echoed_by_session_id_errors() -> None:
    from stickless.errors import ConfigurationError

    raw = tokens.new_raw_token()
    with pytest.raises(ConfigurationError) as info:
        tokens.parse_session_id(raw)
    assert raw not in str(info.value) and raw.split(".")[1] not in str(info.value)


def test_blank_token_header_falls_back_to_the_cookie() -> None:
    from stickless.web.transport import Transport

    transport = Transport(header="X-Session-Token")
    assert transport.read_token("session=abc", "   ") == "abc"
    assert transport.read_token("session=abc", " tok ") == "tok"


def test_opened_values_are_remembered_within_a_bound_and_forgeries_never() -> None:
    codec = tokens.TokenCodec("a-secret-key-of-enough-length-0123")
    raw = tokens.new_raw_token()
    value = codec.dump(raw)
    assert codec.open(value) == codec.open(value) == (raw, value)
    forged = value[:-1] + ("A" if value[-1] != "A" else "B")
    for _ in range(2):  # a forgery is checked in full each time, never remembered
        assert codec.open(forged) is None
    assert forged not in codec._opened
    for _ in range(tokens.OPENED_KEPT + 10):
        assert codec.open(codec.dump(tokens.new_raw_token())) is not None
    assert len(codec._opened) <= tokens.OPENED_KEPT
    assert codec.open(value) == (raw, value)  # forgotten, opened again: the same
