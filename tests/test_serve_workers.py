"""`settle serve --workers N`: several processes on one port, sharing only Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from settle.cli import serve_workers
from settle.core.rate_limit import reset_counts
from settle.core.settings import Settings
from settle.schema.documents import document_hash
from tests.conftest import wait_for
from tests.e2e.test_processes import (  # noqa: F401 - processes is a fixture
    ROOT,
    SECRET_KEY,
    _free_port,
    _spawn,
    processes,
)
from tests.fixtures.services import (
    REDIS_URL,
    check_redis,
    create_postgres_database,
    drop_postgres_database,
    unavailable,
)
from tests.test_cli import run_settle

SIGN_UP = """
mutation {
  signUp(input: {agencyName: "Quay Studio", name: "Quinn Owner",
                 email: "quinn@quay.example", password: "correct horse"}) {
    ... on AuthPayload { token }
  }
}
"""
LOGIN = """
mutation { login(input: {email: "quinn@quay.example", password: "wrong horse"}) { __typename } }
"""
ME = "query Me { me { name } } # served by any worker"


def test_the_default_is_one_process_per_core_with_redis_and_one_embedded() -> None:
    with_redis = Settings(redis_url="redis://127.0.0.1:6379/0")
    embedded = Settings(redis_url=None)
    assert serve_workers(with_redis, None) == max(1, os.cpu_count() or 1)
    assert serve_workers(embedded, None) == 1
    assert serve_workers(embedded, 1) == 1
    assert serve_workers(with_redis, 3) == 3


def test_the_embedded_run_refuses_more_than_one_worker(tmp_path: Path) -> None:
    # when the embedded server (no Redis) is asked for two processes
    result = run_settle("serve", "--workers", "2", "--port", str(_free_port()), var_dir=tmp_path)
    # then it refuses, and says why and what to do
    assert result.returncode == 2
    assert "SETTLE_REDIS_URL" in result.stderr
    assert "--workers 1" in result.stderr


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The parent pid is the second field after the command, which is in parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@pytest.fixture
async def stack_env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """A fresh PostgreSQL database and the tests' Redis, for settle processes."""
    try:
        database_url = await create_postgres_database()
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    try:
        await check_redis(REDIS_URL)
    except Exception as exc:
        await drop_postgres_database(database_url)
        unavailable("Redis", exc)
    # Failed logins counted by earlier tests on this Redis would count here too.
    await reset_counts(Settings(redis_url=REDIS_URL))
    env = {key: value for key, value in os.environ.items() if not key.startswith("SETTLE_")}
    env.update(
        {
            "SETTLE_DATABASE_URL": database_url,
            "SETTLE_REDIS_URL": REDIS_URL,
            "SETTLE_VAR_DIR": str(tmp_path),
            "SETTLE_SECRET_KEY": SECRET_KEY,
            "SETTLE_PUBLIC_BASE_URL": "http://quay.test",
        }
    )
    try:
        yield env
    finally:
        await reset_counts(Settings(redis_url=REDIS_URL))
        await drop_postgres_database(database_url)


async def test_workers_share_sessions_persisted_queries_and_rate_limits(
    stack_env: dict[str, str],
    processes: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    # given a migrated database and `settle serve --workers 2` with Redis
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "settle", "migrate", cwd=ROOT, env=stack_env
    )
    assert await asyncio.wait_for(migrate.wait(), timeout=120) == 0
    port = _free_port()
    env = {**stack_env, "SETTLE_RATE_LIMIT_LOGIN_PER_IP": "3/minute"}
    server = _spawn(["serve", "--port", str(port), "--workers", "2"], env, tmp_path / "api.log")
    processes.append(server)
    base = f"http://127.0.0.1:{port}"

    async def two_workers_up() -> bool:
        if len(_children(server.pid)) < 2:
            return False
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                return (await http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    # Generous: two processes import the app at once, on a machine that may be busy.
    await wait_for(two_workers_up, timeout=240)

    async def post(body: dict[str, Any], token: str | None = None) -> httpx.Response:
        # A new connection each time: the kernel hands it to either process.
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            return await http.post("/graphql", json=body, headers=headers)

    signed_up = await post({"query": SIGN_UP})
    token = signed_up.json()["data"]["signUp"]["token"]
    hashed = {"persistedQuery": {"version": 1, "sha256Hash": document_hash(ME)}}

    # when one process learns a persisted query and both are asked for it by its hash
    learned = await post({"query": ME, "extensions": hashed}, token)
    answers = [await post({"extensions": hashed}, token) for _ in range(12)]
    # then every request, whichever process took it, knows the session and the document
    assert learned.json() == {"data": {"me": {"name": "Quinn Owner"}}}
    assert {response.text for response in answers} == {learned.text}

    # and failed logins are counted once across the processes: the fourth is refused
    attempts = [await post({"query": LOGIN}) for _ in range(4)]
    answers = [
        (response.status_code, response.json()["data"]["login"]["__typename"])
        for response in attempts
    ]
    assert answers == [(200, "AuthenticationError")] * 3 + [(429, "RateLimitedError")]


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.fail("these tests read the process tree from /proc (Linux)")
