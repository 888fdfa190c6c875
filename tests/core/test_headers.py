"""Security headers on every response: the API, health, HTML pages and file downloads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from settle.app import create_app
from settle.core.settings import Settings
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_project
from tests.fixtures.graphql import GraphQLClient
from tests.test_files import download_url, upload_file

PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self' http://settle.test; frame-ancestors 'none'; base-uri 'none'"
)


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings, manage_runtime=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
        yield http


@pytest.fixture
async def https_http(db: Backend) -> AsyncIterator[httpx.AsyncClient]:
    """The app of a deployment whose public address is HTTPS."""
    settings = db.settings.model_copy(update={"public_base_url": "https://billing.example"})
    async for http in _client(settings):
        yield http


def common(response: httpx.Response) -> tuple[str | None, str | None]:
    return (
        response.headers.get("x-content-type-options"),
        response.headers.get("referrer-policy"),
    )


async def test_the_api_answers_carry_the_headers(http: httpx.AsyncClient, owner: Account) -> None:
    # when /healthz, an anonymous and an authenticated GraphQL request are answered
    health = await http.get("/healthz")
    anonymous = await http.post("/graphql", json={"query": "{ __typename }"})
    authenticated = await http.post(
        "/graphql",
        json={"query": "{ me { name } }"},
        headers={"Authorization": f"Bearer {owner.token}"},
    )

    # then each says nosniff and no-referrer, and none is HTML, so none has a CSP
    for response in (health, anonymous, authenticated):
        assert response.status_code == 200
        assert common(response) == ("nosniff", "no-referrer")
        assert "content-security-policy" not in response.headers
        assert "strict-transport-security" not in response.headers
    # and only the answer to the authenticated request may not be stored
    assert "cache-control" not in health.headers
    assert "cache-control" not in anonymous.headers
    assert authenticated.headers["cache-control"] == "no-store"


async def test_a_refused_token_is_not_stored_either(http: httpx.AsyncClient) -> None:
    # when a request carries a bad token
    response = await http.post(
        "/graphql", json={"query": "{ me { name } }"}, headers={"Authorization": "Bearer nope"}
    )
    # then its 401 is not stored either
    assert response.status_code == 401
    assert response.headers["cache-control"] == "no-store"
    assert common(response) == ("nosniff", "no-referrer")


async def test_html_pages_forbid_framing(http: httpx.AsyncClient) -> None:
    # when GraphiQL (development), the sandbox page and the invitation page are opened
    ide = await http.get("/graphql", headers={"Accept": "text/html"})
    sandbox = await http.get("/sandbox/pay/not-a-token")
    invitation = await http.get("/invitations/accept", params={"token": "not-a-token"})

    # then GraphiQL may load its CDN assets but not be framed
    assert ide.status_code == 200
    assert ide.headers["content-type"].startswith("text/html")
    assert ide.headers["content-security-policy"] == "frame-ancestors 'none'"
    # and Settle's own pages allow nothing but inline styles and their own forms
    assert sandbox.headers["content-security-policy"] == PAGE_POLICY
    assert invitation.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    for page in (ide, sandbox, invitation):
        assert page.headers["x-frame-options"] == "DENY"
        assert common(page) == ("nosniff", "no-referrer")
    # and the pages whose URL is a token are not stored
    assert sandbox.headers["cache-control"] == "no-store"
    assert invitation.headers["cache-control"] == "no-store"


async def test_a_file_download_is_not_stored(
    http: httpx.AsyncClient, gql: GraphQLClient, owner: Account
) -> None:
    # given a deliverable uploaded to its signed URL, and its signed download URL
    project = await create_project(owner, await create_client(owner, name="Acme"))
    deliverable_id = await upload_file(gql, http, owner, project, b"beta build")
    signed = await download_url(gql, owner, deliverable_id)

    # when the file is downloaded, and a forged URL is tried
    download = await http.get(signed["url"])
    forged = await http.get("/files/download/not-a-token")

    # then the file comes with every header, and neither answer may be stored
    assert download.status_code == 200
    assert download.content == b"beta build"
    assert common(download) == ("nosniff", "no-referrer")
    assert "no-store" in download.headers["cache-control"]
    assert forged.status_code == 403
    assert forged.headers["cache-control"] == "no-store"


async def test_hsts_when_the_deployment_is_https(
    http: httpx.AsyncClient, https_http: httpx.AsyncClient, db: Backend
) -> None:
    # when the same request reaches an HTTP and an HTTPS deployment
    plain = await http.get("/healthz")
    secure = await https_http.get("/healthz")

    # then only the HTTPS one asks browsers to keep to HTTPS, for a year
    assert "strict-transport-security" not in plain.headers
    assert secure.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"

    # and SETTLE_HSTS_SECONDS sets the age, or turns it off with 0
    for seconds, expected in ((600, "max-age=600; includeSubDomains"), (0, None)):
        settings = db.settings.model_copy(
            update={"public_base_url": "https://billing.example", "hsts_seconds": seconds}
        )
        async for client in _client(settings):
            answer = await client.get("/healthz")
            assert answer.headers.get("strict-transport-security") == expected
