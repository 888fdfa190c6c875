"""Passwords hash with argon2 and verify; access tokens round-trip, and fail when bad or old."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from settle.core.auth import (
    TokenClaims,
    TokenSigner,
    hash_opaque_token,
    hash_password,
    needs_rehash,
    new_opaque_token,
    verify_password,
)
from settle.core.errors import AuthenticationError

KEY = "unit-test-signing-key"


def test_hash_password_is_argon2id_and_verifies() -> None:
    # given
    password_hash = hash_password("correct horse")

    # then
    assert password_hash.startswith("$argon2id$")
    assert "correct horse" not in password_hash
    assert verify_password(password_hash, "correct horse") is True
    assert needs_rehash(password_hash) is False


def test_hash_password_salts_every_hash() -> None:
    # when
    first, second = hash_password("correct horse"), hash_password("correct horse")

    # then
    assert first != second
    assert verify_password(first, "correct horse")
    assert verify_password(second, "correct horse")


@pytest.mark.parametrize("attempt", ["wrong horse", "", "Correct horse", "correct horse "])
def test_verify_password_rejects_a_wrong_password(attempt: str) -> None:
    # given
    password_hash = hash_password("correct horse")

    # then
    assert verify_password(password_hash, attempt) is False


def test_verify_password_without_a_hash_is_false_even_for_any_password() -> None:
    # an unknown email verifies against a dummy hash and must never succeed
    assert verify_password(None, "correct horse") is False
    assert verify_password(None, "") is False


def test_verify_password_with_a_corrupt_hash_is_false() -> None:
    assert verify_password("not-a-hash", "correct horse") is False
    assert verify_password("$argon2id$v=19$m=65536,t=3,p=4$garbage", "correct horse") is False


def test_token_round_trip() -> None:
    # given
    signer = TokenSigner(KEY, ttl_seconds=60)
    user_id, session_id = uuid.uuid4(), uuid.uuid4()

    # when
    token = signer.issue(user_id, session_id)

    # then
    claims = signer.verify(token)
    issued_at = signer._serializer.make_signer().unsign(token, return_timestamp=True)[1]
    assert claims == TokenClaims(user_id, session_id, issued_at + timedelta(seconds=60))


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "eyJ1aWQiOiIxIn0.AAAA.BBBB"],
)
def test_malformed_token_is_rejected(token: str) -> None:
    # given
    signer = TokenSigner(KEY, ttl_seconds=60)

    # when
    with pytest.raises(AuthenticationError) as caught:
        signer.verify(token)

    # then
    assert caught.value.code == "UNAUTHENTICATED"
    assert caught.value.message == "Invalid access token"


def test_token_signed_with_another_key_is_rejected() -> None:
    # given
    token = TokenSigner("another-key", ttl_seconds=60).issue(uuid.uuid4(), uuid.uuid4())

    # when
    with pytest.raises(AuthenticationError) as caught:
        TokenSigner(KEY, ttl_seconds=60).verify(token)

    # then
    assert caught.value.message == "Invalid access token"


def test_tampered_token_is_rejected() -> None:
    # given
    signer = TokenSigner(KEY, ttl_seconds=60)
    session_id = uuid.uuid4()
    token = signer.issue(uuid.uuid4(), session_id)
    # the payload of another user's token under this token's signature
    # (payload.timestamp.signature; a compressed payload starts with a dot of its own)
    other_payload = signer.issue(uuid.uuid4(), session_id).rsplit(".", 2)[0]
    forged = ".".join([other_payload, *token.rsplit(".", 2)[1:]])

    # then
    assert forged != token
    with pytest.raises(AuthenticationError) as caught:
        signer.verify(forged)
    assert caught.value.message == "Invalid access token"


def test_a_token_without_a_session_is_rejected() -> None:
    # given: a well-signed token of the kind issued before sessions existed
    token = URLSafeTimedSerializer(KEY, salt=TokenSigner.SALT).dumps({"uid": str(uuid.uuid4())})

    # then
    with pytest.raises(AuthenticationError) as caught:
        TokenSigner(KEY, ttl_seconds=60).verify(token)
    assert caught.value.message == "Invalid access token"


def test_token_signed_with_a_valid_key_but_no_uid_is_rejected() -> None:
    # given: a well-signed token whose payload is not ours
    token = URLSafeTimedSerializer(KEY, salt=TokenSigner.SALT).dumps({"user": "x"})

    # then
    with pytest.raises(AuthenticationError) as caught:
        TokenSigner(KEY, ttl_seconds=60).verify(token)
    assert caught.value.message == "Invalid access token"


def test_token_expires_after_its_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # given: a token issued now with a one-second lifetime
    signer = TokenSigner(KEY, ttl_seconds=1)
    user_id = uuid.uuid4()
    token = signer.issue(user_id, uuid.uuid4())
    issued_at = signer._serializer.make_signer().unsign(token, return_timestamp=True)[1]
    assert signer.verify(token).user_id == user_id

    # when: the clock itsdangerous reads moves two seconds on
    later = int(issued_at.timestamp()) + 2
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)

    # then
    with pytest.raises(AuthenticationError) as caught:
        signer.verify(token)
    assert caught.value.code == "UNAUTHENTICATED"
    assert caught.value.message == "Access token expired"


def test_opaque_token_is_stored_only_as_its_sha256() -> None:
    # when
    token, token_hash = new_opaque_token()

    # then
    assert token != token_hash
    assert len(token_hash) == 64
    assert token_hash == hash_opaque_token(token)
    assert new_opaque_token()[0] != token
