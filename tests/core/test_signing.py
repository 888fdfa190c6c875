"""Signed URL tokens: what they carry comes back intact, and nothing else gets through."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from settle.core import clock
from settle.core.signing import SignedTokenError, TokenExpiredError, UrlSigner

SECRET = "signing-test-secret"
START = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


@pytest.fixture
def now() -> Iterator[list[datetime]]:
    """A clock the test moves by assigning ``now[0]``."""
    current = [START]
    clock.set_clock(lambda: current[0])
    yield current
    clock.set_clock(None)


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_round_trip_returns_the_payload_until_the_expiry(now: list[datetime]) -> None:
    # given a signer
    signer = UrlSigner(SECRET, "deliverable.download")
    # when a payload is signed for 15 minutes
    token, expires_at = signer.sign({"d": "abc", "u": "def"}, ttl_seconds=900)
    # then the expiry is 15 minutes from now, in whole seconds
    assert expires_at == datetime(2026, 3, 1, 12, 15, 0, tzinfo=UTC)
    # and the token is URL-safe and gives back exactly the payload
    assert all(c.isalnum() or c in "-_." for c in token)
    assert signer.verify(token) == {"d": "abc", "u": "def"}
    # and still does one second before the expiry
    now[0] = expires_at - timedelta(seconds=1)
    assert signer.verify(token) == {"d": "abc", "u": "def"}


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(days=400)])
def test_a_token_is_refused_from_its_expiry_on(now: list[datetime], late: timedelta) -> None:
    # given a token valid for 15 minutes
    signer = UrlSigner(SECRET, "deliverable.download")
    token, expires_at = signer.sign({"d": "abc"}, ttl_seconds=900)
    # when it is used at or after its expiry
    now[0] = expires_at + late
    # then it is refused as expired
    with pytest.raises(TokenExpiredError) as caught:
        signer.verify(token)
    assert caught.value.reason == "URL_EXPIRED"


def test_a_zero_second_token_is_already_expired(now: list[datetime]) -> None:
    # given a token signed with no lifetime
    signer = UrlSigner(SECRET, "deliverable.upload")
    token, expires_at = signer.sign({"d": "abc"}, ttl_seconds=0)
    # when it is verified at once, then it is expired (the expiry is rounded down)
    assert expires_at <= START
    with pytest.raises(TokenExpiredError):
        signer.verify(token)


def test_a_changed_payload_is_refused(now: list[datetime]) -> None:
    # given a genuine token for deliverable "abc"
    signer = UrlSigner(SECRET, "deliverable.download")
    token, _ = signer.sign({"d": "abc", "u": "def"}, ttl_seconds=900)
    payload, signature = token.rsplit(".", 1)
    # when its payload is rewritten to name another deliverable and live longer
    data = json.loads(_b64decode(payload))
    forged = [
        {**data, "d": "xyz"},
        {**data, "exp": data["exp"] + 86_400},
        {key: value for key, value in data.items() if key != "exp"},
    ]
    # then every rewrite is refused as an invalid signature, not as expired
    for changed in forged:
        raw = json.dumps(changed, separators=(",", ":")).encode()
        with pytest.raises(SignedTokenError) as caught:
            signer.verify(f"{_b64encode(raw)}.{signature}")
        assert type(caught.value) is SignedTokenError
        assert caught.value.reason == "INVALID_SIGNATURE"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t.rsplit(".", 1)[0],
        lambda t: t + "x",
        lambda t: "",
        lambda t: "not-a-token",
        lambda t: "....",
    ],
    ids=["signature-char", "no-signature", "appended", "empty", "garbage", "dots"],
)
def test_a_damaged_token_is_refused(now: list[datetime], tamper: object) -> None:
    # given a genuine token
    signer = UrlSigner(SECRET, "deliverable.download")
    token, _ = signer.sign({"d": "abc"}, ttl_seconds=900)
    # when it is damaged, then it is refused
    with pytest.raises(SignedTokenError):
        signer.verify(tamper(token))  # type: ignore[operator]


def test_a_token_of_another_purpose_or_key_is_refused(now: list[datetime]) -> None:
    # given an upload token
    token, _ = UrlSigner(SECRET, "deliverable.upload").sign({"d": "abc"}, ttl_seconds=900)
    # when it is presented as a download token, or checked under another secret
    # then both refuse it
    with pytest.raises(SignedTokenError):
        UrlSigner(SECRET, "deliverable.download").verify(token)
    with pytest.raises(SignedTokenError):
        UrlSigner("another-secret", "deliverable.upload").verify(token)
    # while its own signer accepts it
    assert UrlSigner(SECRET, "deliverable.upload").verify(token) == {"d": "abc"}


def test_sign_refuses_a_negative_lifetime_and_the_reserved_key() -> None:
    signer = UrlSigner(SECRET, "deliverable.upload")
    with pytest.raises(ValueError, match="negative"):
        signer.sign({"d": "abc"}, ttl_seconds=-1)
    with pytest.raises(ValueError, match="reserved"):
        signer.sign({"exp": "1"}, ttl_seconds=10)
