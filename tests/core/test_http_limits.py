"""Request body limits: a body over the limit is refused with 413 as it arrives, unread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from settle.app import create_app
from settle.models.agency import User
from tests.conftest import Backend

MiB = 1024 * 1024
CHUNK = 64 * 1024

SIGN_UP = (
    'mutation { signUp(input: {agencyName: "Big", name: "Big Body", '
    'email: "big@example.com", password: "tram-lines-84"}) { __typename } }'
)


@dataclass
class StreamedBody:
    """A ``size``-byte JSON body that runs ``SIGN_UP``, produced chunk by chunk as it is read."""

    size: int
    sent: int = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        head = json.dumps({"query": SIGN_UP, "variables": {}})[:-1].encode() + b', "pad": "'
        tail = b'"}'
        padding = self.size - len(head) - len(tail)
        for piece in (head, *_padding(padding), tail):
            self.sent += len(piece)
            yield piece


def _padding(size: int) -> list[bytes]:
    full, rest = divmod(size, CHUNK)
    return [b"x" * CHUNK] * full + ([b"x" * rest] if rest else [])


def too_large(max_bytes: int) -> dict[str, object]:
    return {
        "data": None,
        "errors": [
            {
                "message": f"The request body is larger than {max_bytes} bytes",
                "extensions": {"code": "REQUEST_TOO_LARGE", "maxBytes": max_bytes},
            }
        ],
    }


async def test_five_concurrent_100_mb_bodies_are_refused_unread_and_never_run(
    http: httpx.AsyncClient,
) -> None:
    # given five 100 MB operations, streamed without a Content-Length (chunked)
    bodies = [StreamedBody(100 * MiB) for _ in range(5)]

    # when they are posted at once
    responses = await asyncio.gather(
        *(
            http.post(
                "/graphql", content=body.chunks(), headers={"content-type": "application/json"}
            )
            for body in bodies
        )
    )

    # then each is refused with 413 and a typed error naming the limit
    for response in responses:
        assert response.status_code == 413
        assert response.headers["connection"] == "close"
        assert response.json() == too_large(MiB)
    # and no more than the limit (and the chunk that crossed it) was ever read of each
    assert [body.sent <= MiB + CHUNK for body in bodies] == [True] * 5
    # and the operation never ran
    assert await User.all().count() == 0


async def test_a_declared_content_length_over_the_limit_is_refused_before_reading(
    http: httpx.AsyncClient,
) -> None:
    # given a body whose Content-Length says 2 MiB
    body = StreamedBody(2 * MiB)

    # when
    response = await http.post(
        "/graphql",
        content=body.chunks(),
        headers={"content-type": "application/json", "content-length": str(2 * MiB)},
    )

    # then it is refused without a byte of it read
    assert (response.status_code, response.json()) == (413, too_large(MiB))
    assert body.sent == 0
    assert await User.all().count() == 0


async def test_a_content_length_that_lies_is_caught_while_streaming(
    http: httpx.AsyncClient,
) -> None:
    # given a body that claims 100 bytes and keeps coming
    body = StreamedBody(10 * MiB)

    # when
    response = await http.post(
        "/graphql",
        content=body.chunks(),
        headers={"content-type": "application/json", "content-length": "100"},
    )

    # then it is refused once the bytes pass the limit
    assert (response.status_code, response.json()) == (413, too_large(MiB))
    assert body.sent <= MiB + CHUNK
    assert await User.all().count() == 0


async def test_a_body_at_the_limit_runs(db: Backend) -> None:
    # given a limit of 4 KiB and a body of exactly 4 KiB
    settings = db.settings.model_copy(update={"max_body_bytes": 4096})
    app = create_app(settings, manage_runtime=False)
    body = StreamedBody(4096)

    # when
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://settle.test"
    ) as http:
        at_limit = await http.post(
            "/graphql", content=body.chunks(), headers={"content-type": "application/json"}
        )
        over = await http.post(
            "/graphql",
            content=StreamedBody(4097).chunks(),
            headers={"content-type": "application/json"},
        )

    # then the operation at the limit ran, and one byte more is refused
    assert (at_limit.status_code, at_limit.json()) == (
        200,
        {"data": {"signUp": {"__typename": "AuthPayload"}}},
    )
    assert (over.status_code, over.json()) == (413, too_large(4096))
    assert await User.all().values_list("email", flat=True) == ["big@example.com"]


async def _read_status_line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), timeout=10)


async def test_a_real_server_answers_413_before_the_body_has_been_sent(ws_url: str) -> None:
    # given a real uvicorn server and a connection that declares 100 MB
    host, port = ws_url.removeprefix("ws://").removesuffix("/graphql").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: settle.test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {100 * MiB}\r\n\r\n".encode()
        + b'{"query": "'
    )
    await writer.drain()

    # when the server is asked for its answer after only a few bytes
    status = await _read_status_line(reader)

    # then it has refused the body already
    assert status == b"HTTP/1.1 413 Request Entity Too Large\r\n"
    writer.close()


async def test_a_real_server_stops_a_chunked_body_at_the_limit(ws_url: str) -> None:
    # given a real uvicorn server and a chunked body with no end
    host, port = ws_url.removeprefix("ws://").removesuffix("/graphql").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: settle.test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sent = 0

    async def send_forever() -> None:
        nonlocal sent
        chunk = b"x" * CHUNK
        while sent < 100 * MiB:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            sent += len(chunk)

    sending = asyncio.create_task(send_forever())

    # when the server answers
    status = await _read_status_line(reader)
    sending.cancel()
    await asyncio.gather(sending, return_exceptions=True)

    # then it refused the body long before the 100 MB were sent
    assert status == b"HTTP/1.1 413 Request Entity Too Large\r\n"
    assert sent < 20 * MiB
    writer.close()
