"""The `settle` command: every subcommand, and the embedded setup it performs."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from settle.cli import build_parser, main
from tests.conftest import wait_for
from tests.e2e.test_processes import (  # noqa: F401 - processes is a fixture
    _free_port,
    _spawn,
    processes,
)

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["serve", "worker", "scheduler", "migrate", "demo", "export-schema"]


def run_settle(*args: str, var_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SETTLE_")}
    environment.update({"SETTLE_VAR_DIR": str(var_dir), **env})
    return subprocess.run(
        [sys.executable, "-m", "settle", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # when asking a subcommand for help
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    # then it prints usage and exits cleanly
    assert exit_info.value.code == 0
    assert f"usage: settle {command}" in capsys.readouterr().out


def test_parser_lists_every_command() -> None:
    parser = build_parser()
    help_text = parser.format_help()
    for command in COMMANDS:
        assert command in help_text


def test_export_schema_prints_the_committed_sdl(tmp_path: Path) -> None:
    # when the schema is exported
    result = run_settle("export-schema", var_dir=tmp_path)
    # then it is the committed SDL
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "schema.graphql").read_text(encoding="utf-8")


def test_migrate_and_demo_build_the_embedded_database_once(tmp_path: Path) -> None:
    # given an empty var directory (the embedded default: SQLite under it)
    # when migrating and loading the demo twice
    migrated = run_settle("migrate", var_dir=tmp_path)
    first = run_settle("demo", var_dir=tmp_path)
    second = run_settle("demo", var_dir=tmp_path)
    # then the demo agency exists exactly once, with its owner and three clients
    assert migrated.returncode == 0, migrated.stderr
    assert first.returncode == 0, first.stderr
    assert "demo data loaded: log in as demo@settle.test / settle-demo" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "already present" in second.stdout
    db = sqlite3.connect(tmp_path / "settle.sqlite3")
    try:
        agencies = db.execute("SELECT name FROM agency").fetchall()
        owners = db.execute("SELECT email, role FROM app_user").fetchall()
        clients = db.execute("SELECT COUNT(*) FROM client").fetchone()
        contacts = db.execute("SELECT COUNT(*) FROM contact WHERE is_primary").fetchone()
        notes = db.execute("SELECT COUNT(*) FROM note").fetchone()
        projects = db.execute("SELECT name, advance_percent FROM project ORDER BY name").fetchall()
        milestones = db.execute(
            "SELECT title, status, amount_minor FROM milestone ORDER BY position, title"
        ).fetchall()
        tasks = db.execute("SELECT COUNT(*) FROM task").fetchone()
        entries = db.execute("SELECT COUNT(*) FROM time_entry").fetchone()
        files = db.execute("SELECT kind, status FROM deliverable ORDER BY kind").fetchall()
        invoices = db.execute("SELECT status, number FROM invoice ORDER BY status").fetchall()
        credit_notes = db.execute(
            "SELECT credit_note.number, credit_note.amount_minor, invoice.status, "
            "invoice.amount_credited_minor FROM credit_note "
            "JOIN invoice ON invoice.id = credit_note.invoice_id"
        ).fetchall()
    finally:
        db.close()
    assert agencies == [("Northwind Studio",)]
    assert owners == [("demo@settle.test", "owner")]
    assert clients == (3,)
    assert contacts == (3,)
    assert notes == (5,)
    # and projects with tasks, time, milestones (one with a 40% advance) and deliverables;
    # for the reports, one whose advance is unpaid and one paid in full over a year ago
    assert projects == [
        ("Brand refresh", 30),
        ("Ordering app in Hindi", 50),
        ("Showreel 2025", 0),
        ("Warehouse robot dashboard", 40),
    ]
    assert sorted(milestones) == [
        ("Advance (30%)", "pending", 150000),
        ("Advance (40%)", "paid", 800000),
        ("Balance", "paid", 150000),
        ("Balance", "pending", 350000),
        ("Balance", "pending", 1200000),
        ("Build", "pending", 35000000),
        ("Design", "submitted", 15000000),
    ]
    assert tasks == (5,)
    assert entries == (4,)
    assert files == [("beta", "ready")] * 2 + [("final", "ready")] * 2
    # and invoices in every status, the issued ones numbered without gaps
    statuses = {status for status, _ in invoices}
    assert statuses == {"draft", "sent", "viewed", "partially_paid", "paid", "overdue", "void"}
    sequences: dict[str, list[int]] = {}
    for _, number in invoices:
        if number:
            scope, sequence = number.rsplit("-", 1)
            sequences.setdefault(scope, []).append(int(sequence))
    # (six, and thirteen of the half year of history the reports show)
    assert sum(len(found) for found in sequences.values()) == 19
    assert all(sorted(found) == list(range(1, len(found) + 1)) for found in sequences.values())
    # and a credit note, first of its own sequence, on the partly paid invoice
    assert [(number[:3], number[-5:], *rest) for number, *rest in credit_notes] == [
        ("CN-", "-0001", 6000, "partially_paid", 6000)
    ]
    # and a secret key was generated into the var directory, readable by its owner only
    key_file = tmp_path / "secret_key"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_worker_and_scheduler_refuse_to_run_without_redis(command: str, tmp_path: Path) -> None:
    # when started without SETTLE_REDIS_URL
    result = run_settle(command, var_dir=tmp_path)
    # then they explain that the embedded server already runs them
    assert result.returncode == 2
    assert "SETTLE_REDIS_URL" in result.stderr


LOGIN = """
mutation Login($email: String!, $password: String!) {
  login(input: {email: $email, password: $password}) { __typename ... on AuthPayload { token } }
}
"""
SENT_INVOICE = """
{ invoices(first: 1, filter: {status: SENT}) { edges { node { id pdfUrl { url } } } } }
"""
SEND_INVOICE = """
mutation Send($id: ID!) { sendInvoice(id: $id) { __typename } }
"""
PAY_INVOICE = """
mutation Pay($id: ID!) {
  payInvoice(invoiceId: $id) { ... on PaymentCheckout { checkout { checkoutUrl } } }
}
"""
PROJECT = """
{ projects(first: 1) { edges { node { id } } } }
"""
UPLOAD_DELIVERABLE = """
mutation Upload($projectId: ID!) {
  createDeliverableUpload(input: {projectId: $projectId, title: "Notes", kind: BETA,
                                  filename: "notes.txt", contentType: "text/plain",
                                  sizeBytes: 6}) {
    ... on DeliverableUpload { uploadUrl deliverable { id } }
  }
}
"""
DOWNLOAD_DELIVERABLE = """
query Download($id: ID!) { deliverableDownloadUrl(id: $id) { ... on DownloadUrl { url } } }
"""
INVITE_MEMBER = """
mutation {
  inviteMember(input: {email: "milo@northwind.example", role: MEMBER, name: "Milo"}) {
    __typename
  }
}
"""


def _mail(mail_dir: Path, to: str, subject: str = "") -> EmailMessage:
    """The one email written to ``to`` under the mail directory whose subject starts so.

    The demo's payments send receipts too; ``subject`` tells the email looked for.
    """
    found = []
    for path in sorted(mail_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if to in str(message["To"]) and str(message["Subject"]).startswith(subject):
            found.append(message)
    (message,) = found
    return message


def _pdf_links(data: bytes) -> list[str]:
    """The targets of a PDF's link annotations."""
    return [
        str(annotation.get_object()["/A"]["/URI"])
        for page in PdfReader(io.BytesIO(data)).pages
        for annotation in page.get("/Annots") or []
    ]


async def test_serve_on_another_port_gives_links_to_that_port(
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture imported above
) -> None:
    # given the embedded run set up as `make run` does, without SETTLE_PUBLIC_BASE_URL
    for command in ("migrate", "demo"):
        done = await asyncio.to_thread(run_settle, command, var_dir=tmp_path)
        assert done.returncode == 0, done.stderr
    port = _free_port()
    assert port != 8000
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SETTLE_")}
    environment["SETTLE_VAR_DIR"] = str(tmp_path)
    base = f"http://127.0.0.1:{port}"

    # when the server is started on that port (`make run PORT=...` runs `settle serve --port`)
    processes.append(_spawn(["serve", "--port", str(port)], environment, tmp_path / "serve.log"))
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:

        async def up() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(up, timeout=60)
        variables = {"email": "demo@settle.test", "password": "settle-demo"}
        logged_in = await http.post("/graphql", json={"query": LOGIN, "variables": variables})
        token = logged_in.json()["data"]["login"]["token"]
        auth = {"Authorization": f"Bearer {token}"}

        async def gql(query: str, **variables: str) -> Any:
            answer = await http.post(
                "/graphql", json={"query": query, "variables": variables}, headers=auth
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["data"]

        # then the invoice PDF rendered by the in-process worker is served from that port,
        # and its payment link points there
        async def rendered() -> bool:
            node = (await gql(SENT_INVOICE))["invoices"]["edges"][0]["node"]
            return node["pdfUrl"] is not None

        await wait_for(rendered, timeout=60)
        invoice = (await gql(SENT_INVOICE))["invoices"]["edges"][0]["node"]
        pdf_url = invoice["pdfUrl"]["url"]
        assert pdf_url.startswith(f"{base}/files/invoices/")
        pdf = await http.get(pdf_url)
        assert (pdf.status_code, pdf.headers["content-type"]) == (200, "application/pdf")
        # (one annotation per line the long link wraps onto)
        [pay_link] = set(_pdf_links(pdf.content))
        assert pay_link.startswith(f"{base}/pay/invoices/")

        # and the invoice email carries a payment link to that port
        assert (await gql(SEND_INVOICE, id=invoice["id"]))["sendInvoice"] == {
            "__typename": "Invoice"
        }

        def mailed(to: str, subject: str = "") -> Callable[[], Awaitable[bool]]:
            async def written() -> bool:
                try:
                    _mail(tmp_path / "mail", to, subject)
                except (ValueError, FileNotFoundError):
                    return False
                return True

            return written

        await wait_for(mailed("priya@chaipoint.example", "Invoice "), timeout=60)
        invoice_mail = _mail(tmp_path / "mail", "priya@chaipoint.example", "Invoice ")
        text = invoice_mail.get_body(preferencelist=("plain",))
        assert text is not None
        [mailed_link] = re.findall(r"Pay online: (\S+)", text.get_content())
        assert mailed_link.startswith(f"{base}/pay/invoices/")

        # and the payment link leads to the sandbox page on that port, whose buttons post there
        opened = await http.get(pay_link)
        assert opened.status_code == 303
        checkout_url = opened.headers["location"]
        assert checkout_url.startswith(f"{base}/sandbox/pay/")
        paying = (await gql(PAY_INVOICE, id=invoice["id"]))["payInvoice"]
        assert paying == {"checkout": {"checkoutUrl": checkout_url}}
        page = await http.get(checkout_url)
        assert page.status_code == 200
        assert re.findall(r'action="([^"]+)"', page.text) == [
            f"{checkout_url}/succeed",
            f"{checkout_url}/fail",
        ]

        # and deliverable upload and download URLs are on that port, and work
        project_id = (await gql(PROJECT))["projects"]["edges"][0]["node"]["id"]
        upload = (await gql(UPLOAD_DELIVERABLE, projectId=project_id))["createDeliverableUpload"]
        assert upload["uploadUrl"].startswith(f"{base}/files/upload/")
        put = await http.put(
            upload["uploadUrl"], content=b"hello\n", headers={"Content-Type": "text/plain"}
        )
        assert put.status_code == 200, put.text
        download = (await gql(DOWNLOAD_DELIVERABLE, id=upload["deliverable"]["id"]))[
            "deliverableDownloadUrl"
        ]
        assert download["url"].startswith(f"{base}/files/download/")
        assert (await http.get(download["url"])).content == b"hello\n"

        # and the invitation email links to that port
        assert (await gql(INVITE_MEMBER))["inviteMember"] == {"__typename": "Invitation"}
        await wait_for(mailed("milo@northwind.example"), timeout=60)
        invitation = _mail(tmp_path / "mail", "milo@northwind.example")
        text = invitation.get_body(preferencelist=("plain",))
        assert text is not None
        [accept_url] = re.findall(r"https?://\S+", text.get_content())
        assert accept_url.startswith(f"{base}/invitations/accept?token=")

        # and the newcomer who opens it finds the form, and joins with it
        opened = await http.get(accept_url)
        assert (opened.status_code, opened.headers["content-type"]) == (
            200,
            "text/html; charset=utf-8",
        )
        invitation_token = accept_url.split("?token=", 1)[1]
        assert f'name="token" value="{invitation_token}"' in opened.text
        password = "milo-joins"
        form = {
            "token": invitation_token,
            "name": "Milo",
            "password": password,
            "password_confirm": password,
        }
        joined = await http.post("/invitations/accept", data=form)
        assert joined.status_code == 200
        assert "<h1>Welcome to Northwind Studio</h1>" in joined.text
        login = await http.post(
            "/graphql",
            json={
                "query": LOGIN,
                "variables": {"email": "milo@northwind.example", "password": "milo-joins"},
            },
        )
        assert login.json()["data"]["login"]["__typename"] == "AuthPayload"

    # and the server's access log names the page, but not the token
    log = tmp_path / "serve.log"

    async def logged() -> bool:
        return "GET /invitations/accept?token=[redacted] HTTP/1.1" in log.read_text()

    await wait_for(logged, timeout=10)
    assert invitation_token not in log.read_text()
    # and the PDFs it rendered left no lines from font subsetting
    assert '"logger": "fontTools' not in log.read_text()


async def test_serve_believes_x_forwarded_for_only_from_the_trusted_proxies(
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],  # noqa: F811 - the fixture imported above
) -> None:
    # given a migrated embedded database and two servers allowing two logins a minute per
    # address: one trusting no proxy (the default), one trusting 127.0.0.1
    done = await asyncio.to_thread(run_settle, "migrate", var_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SETTLE_")}
    environment.update(
        {"SETTLE_VAR_DIR": str(tmp_path), "SETTLE_RATE_LIMIT_LOGIN_PER_IP": "2/minute"}
    )
    untrusting, trusting = _free_port(), _free_port()
    processes.append(
        _spawn(["serve", "--port", str(untrusting)], environment, tmp_path / "untrusting.log")
    )
    processes.append(
        _spawn(
            ["serve", "--port", str(trusting)],
            {**environment, "SETTLE_TRUSTED_PROXIES": '["127.0.0.1"]'},
            tmp_path / "trusting.log",
        )
    )

    async def statuses(port: int) -> list[int]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def up() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, timeout=60)
            variables = {"email": "nobody@example.com", "password": "a wrong guess"}
            answers = [
                await http.post(
                    "/graphql",
                    json={"query": LOGIN, "variables": variables},
                    headers={"X-Forwarded-For": f"192.0.2.{n}"},
                )
                for n in range(3)
            ]
            return [answer.status_code for answer in answers]

    # when three logins come from 127.0.0.1, each claiming another client address
    # then the untrusting server counts them all as 127.0.0.1 and refuses the third
    # (uvicorn alone would believe 127.0.0.1), and the trusting one counts three clients
    assert await statuses(untrusting) == [200, 200, 429]
    assert await statuses(trusting) == [200, 200, 200]
