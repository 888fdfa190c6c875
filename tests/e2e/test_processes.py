"""Production shape: API and worker as separate processes, joined by Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from settle.core.settings import Settings
from settle.services import auth as auth_service
from tests.conftest import wait_for
from tests.fixtures.services import (
    REDIS_URL,
    check_redis,
    create_postgres_database,
    drop_postgres_database,
    unavailable,
)

ROOT = Path(__file__).resolve().parents[2]

SIGN_UP = """
mutation {
  signUp(input: {agencyName: "Harbor Studio", name: "Hana Owner",
                 email: "hana@harbor.example", password: "correct horse"}) {
    ... on AuthPayload { token }
  }
}
"""
SECRET_KEY = "settle-e2e-secret-for-tests-only"

INVITE = """
mutation {
  inviteMember(input: {email: "milo@harbor.example", role: MEMBER, name: "Milo"}) {
    __typename
    ... on Invitation { id email }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_db_url(db_number: int) -> str:
    base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
    return f"{base}/{db_number}"


@pytest.fixture
async def stack_env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Environment for settle processes: a fresh PostgreSQL database and a Redis database."""
    try:
        database_url = await create_postgres_database()
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    redis_url = _redis_db_url(13)
    try:
        await check_redis(redis_url)
    except Exception as exc:
        await drop_postgres_database(database_url)
        unavailable("Redis", exc)
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SETTLE_")}
    env.update(
        {
            "SETTLE_DATABASE_URL": database_url,
            "SETTLE_REDIS_URL": redis_url,
            "SETTLE_VAR_DIR": str(tmp_path),
            "SETTLE_SECRET_KEY": SECRET_KEY,
            "SETTLE_PUBLIC_BASE_URL": "http://harbor.test",
        }
    )
    try:
        yield env
    finally:
        await client.flushdb()
        await client.aclose()
        await drop_postgres_database(database_url)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "settle", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_invitation_email_is_sent_by_a_separate_worker_process(
    stack_env: dict[str, str], processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # given a migrated database, an API process and a worker process sharing Redis
    migrate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "settle",
        "migrate",
        cwd=ROOT,
        env=stack_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(migrate.communicate(), timeout=120)
    assert migrate.returncode == 0, output.decode()
    port = _free_port()
    # One API process (the default is one per core): it starts fastest, and this test
    # is not about --workers (tests/test_serve_workers.py is).
    processes.append(
        _spawn(["serve", "--port", str(port), "--workers", "1"], stack_env, tmp_path / "api.log")
    )
    processes.append(_spawn(["worker", "--threads", "2"], stack_env, tmp_path / "worker.log"))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:

        async def api_ready() -> bool:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(api_ready, timeout=30)
        ready = (await http.get("/readyz")).json()
        assert ready == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
        token = (await http.post("/graphql", json={"query": SIGN_UP})).json()["data"]["signUp"][
            "token"
        ]

        # when the owner invites a member through the API
        invited = (
            await http.post(
                "/graphql", json={"query": INVITE}, headers={"Authorization": f"Bearer {token}"}
            )
        ).json()["data"]["inviteMember"]

    # then the worker process sends the email (no SMTP configured: an .eml file)
    assert invited["__typename"] == "Invitation"
    mail_dir = tmp_path / "mail"

    async def mail_written() -> bool:
        return mail_dir.exists() and any(mail_dir.glob("*.eml"))

    await wait_for(mail_written, timeout=30)
    (eml,) = list(mail_dir.glob("*.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "milo@harbor.example"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    # (the link's token, which only the email carries, derived as the processes derive it)
    processes_settings = Settings.model_construct(secret_key=SecretStr(SECRET_KEY))
    token = auth_service.invitation_token(processes_settings, uuid.UUID(invited["id"]))
    assert f"http://harbor.test/invitations/accept?token={token}" in body.get_content()
    # and both processes are still up (a worker that crashed after sending would show here)
    assert processes[0].poll() is None, (tmp_path / "api.log").read_text()
    assert processes[1].poll() is None, (tmp_path / "worker.log").read_text()
