"""The production files: docker-compose.yml and the Dockerfile it builds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from settle.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_api_and_the_workers_share_the_var_directory() -> None:
    # given the image's var directory (where files and rendered invoice PDFs are stored)
    [var_dir] = re.findall(r"SETTLE_VAR_DIR=(\S+)", dockerfile())
    services = compose()["services"]
    # when the api, worker and scheduler services are read
    mounts = {
        name: [mount for mount in services[name].get("volumes", []) if mount.endswith(var_dir)]
        for name in ("api", "worker", "scheduler")
    }
    # then each mounts the same named volume there, so a PDF a worker renders is one the
    # api serves
    shared = [f"settle-var:{var_dir}"]
    assert mounts == {"api": shared, "worker": shared, "scheduler": shared}
    assert "settle-var" in compose()["volumes"]
    # and stored files live under it (SETTLE_STORAGE_DIR keeps its default, <var>/files)
    assert "SETTLE_STORAGE_DIR" not in services["api"]["environment"]
    assert Settings(var_dir=Path(var_dir)).resolved_storage_dir == Path(var_dir, "files")


def test_the_shared_volume_is_writable_by_the_image_user() -> None:
    # given the runtime stage of the image
    runtime = dockerfile().rsplit("FROM ", 1)[1]
    [var_dir] = re.findall(r"SETTLE_VAR_DIR=(\S+)", runtime)
    [user] = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    # then the mount point exists in the image and belongs to that user (a new named volume
    # takes the ownership of what it is mounted over)
    assert f"mkdir -p {var_dir} && chown {user}:{user} {var_dir}" in runtime
    # and only that user may read it (the database, files and mail are in there)
    assert f"chmod 0700 {var_dir}" in runtime


def test_every_setting_compose_passes_is_a_setting() -> None:
    # given the environment compose gives every settle process
    environment = compose()["services"]["api"]["environment"]
    known = {f"SETTLE_{name.upper()}" for name in Settings.model_fields}
    # then each variable is one Settle reads, and the gateway ones are among them
    assert set(environment) - known == set()
    assert {
        "SETTLE_STRIPE_SECRET_KEY",
        "SETTLE_STRIPE_PUBLISHABLE_KEY",
        "SETTLE_STRIPE_WEBHOOK_SECRET",
        "SETTLE_RAZORPAY_KEY_ID",
        "SETTLE_RAZORPAY_KEY_SECRET",
        "SETTLE_RAZORPAY_WEBHOOK_SECRET",
        "SETTLE_DEFAULT_PAYMENT_PROVIDER",
        "SETTLE_SANDBOX_PAYMENTS",
        "SETTLE_INVITATION_URL",
    } <= set(environment)
