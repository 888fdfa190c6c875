"""The `settle` command: every subcommand, and the embedded setup it performs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from settle.cli import build_parser, main

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
    # and two projects with tasks, time, milestones (one with a 40% advance) and deliverables
    assert projects == [("Ordering app in Hindi", 50), ("Warehouse robot dashboard", 40)]
    assert sorted(milestones) == [
        ("Advance (40%)", "paid", 800000),
        ("Balance", "pending", 1200000),
        ("Build", "pending", 35000000),
        ("Design", "submitted", 15000000),
    ]
    assert tasks == (5,)
    assert entries == (4,)
    assert files == [("beta", "ready"), ("final", "ready")]
    # and invoices in every status, the issued ones numbered without gaps
    statuses = {status for status, _ in invoices}
    assert statuses == {"draft", "sent", "viewed", "partially_paid", "paid", "overdue", "void"}
    sequences: dict[str, list[int]] = {}
    for _, number in invoices:
        if number:
            scope, sequence = number.rsplit("-", 1)
            sequences.setdefault(scope, []).append(int(sequence))
    assert sum(len(found) for found in sequences.values()) == 6
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
