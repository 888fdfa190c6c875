"""Settings: one class, read from the environment with the ``SETTLE_`` prefix.

Every default serves the embedded run (`make run`): a SQLite file and the
in-process bus, worker and scheduler. Production values come from the
environment only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from enum import StrEnum
from pathlib import Path

import limits
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from settle.core.private_files import open_private, private_dir

TELEGRAM_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SETTLE_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    var_dir: Path = Path("./var")
    database_url: str = ""
    redis_url: str | None = None
    # Connections each process may open to PostgreSQL (Tortoise's own default is 5, which
    # queues a burst of webhooks); mind the server's max_connections across replicas.
    database_pool_size: int = Field(default=20, gt=0, le=500)
    # A query operation reads one snapshot on PostgreSQL (one read-only REPEATABLE READ
    # transaction), so one response never mixes moments. Off only to measure what it costs.
    snapshot_reads: bool = True
    # A serving process hides what start-up built from the garbage collector (gc.freeze)
    # and runs its first generation every ``gc_threshold`` allocations (Python: 700);
    # 0 keeps Python's. See settle.app.tune_gc.
    gc_freeze: bool = True
    gc_threshold: int = Field(default=10_000, ge=0)
    # Query operations run on the compiled read path (settle/schema/compiled): level by
    # level over whole batches of rows. Off, graphql-core's executor runs every operation.
    compiled_reads: bool = True
    secret_key: SecretStr | None = None
    # When set, GET /metrics answers only requests with ``Authorization: Bearer <token>``.
    metrics_token: SecretStr | None = None
    # The base of every link Settle makes. Unset, ``settle serve`` uses the address it
    # listens on (``for_server``), so ``make run PORT=8123`` links to port 8123.
    public_base_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"
    # Strict-Transport-Security max-age: unset means a year when public_base_url is
    # https, else none (0 turns it off).
    hsts_seconds: int | None = Field(default=None, ge=0)

    access_token_ttl_seconds: int = Field(default=12 * 3600, gt=0)
    invitation_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    # How often each API process re-checks the sessions of its open websockets; a
    # logout or removal reaches them at once over the bus, this is the backstop.
    session_check_seconds: float = Field(default=5, gt=0)
    # Events one subscription may fall behind before it is ended (SUBSCRIBER_TOO_SLOW).
    subscription_queue_size: int = Field(default=256, ge=1)
    # Each agency's event stream (what `after` cursors resume from) keeps the entries of
    # the last ``stream_retention_seconds``, and at most ``stream_max_entries`` of them.
    stream_retention_seconds: int = Field(default=24 * 3600, gt=0)
    stream_max_entries: int = Field(default=100_000, gt=0)
    # Where invitation emails send the invitee, with ``token=`` added: a frontend's own
    # page, or (unset) Settle's built-in one at ``/invitations/accept``.
    invitation_url: str | None = None

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    mail_from: str = "Settle <no-reply@settle.invalid>"

    # Telegram (settle/notifications/telegram.py). Linking needs the bot's username and
    # the webhook secret; sending needs the token: without it messages are written under
    # <var_dir>/telegram/ and logged, as emails are written as .eml files.
    telegram_bot_token: SecretStr | None = None
    telegram_bot_username: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org"
    telegram_link_ttl_seconds: int = Field(default=15 * 60, gt=0, le=7 * 24 * 3600)

    stripe_secret_key: SecretStr | None = None
    stripe_publishable_key: str | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_webhook_secret: SecretStr | None = None
    razorpay_api_base: str | None = None
    # The offline sandbox gateway (a hosted Pay / Fail page anyone with the link can
    # press): unset means on, except in production, where it must be asked for.
    sandbox_payments: bool | None = None
    # The gateway for a currency the agency has not mapped (``Agency.payment_providers``).
    default_payment_provider: str = "sandbox"
    # Reconciliation asks the gateway about payments pending longer than this, at
    # growing intervals, and gives up (leaving the payment flagged) after the last.
    payment_reconcile_after_seconds: int = Field(default=15 * 60, gt=0)
    payment_reconcile_max_attempts: int = Field(default=8, gt=0)
    payment_reconcile_cron: str = "*/10 * * * *"

    # A worker silent this long counts as dead: the messages it fetched and did not
    # acknowledge go back to their queue (see ``settle.tasks.broker.redis_broker``).
    broker_heartbeat_timeout_seconds: float = Field(default=30, gt=0)

    # The janitor re-sends the job of work stored but not finished after ``stale_seconds``
    # (a webhook not applied, an issued invoice without its PDF, an email never tried, a
    # refund never asked for), at most ``batch_size`` rows of each kind per run, and
    # leaves alone what is older than ``give_up_seconds``: that needs a person.
    janitor_cron: str = "* * * * *"
    janitor_stale_seconds: int = Field(default=300, gt=0)
    janitor_give_up_seconds: int = Field(default=24 * 3600, gt=0)
    janitor_batch_size: int = Field(default=100, gt=0, le=10_000)
    # Reminders, overdue stages, access notices, upload reminders and digests: each run
    # sends what is due by then, so the cadence only bounds how late a stage can be.
    notification_sweep_cron: str = "*/15 * * * *"

    # GraphQL operation limits, checked before an operation is validated or runs (see
    # settle/schema/limits.py for the cost model). The document's size and tokens bound
    # parsing and validation; depth, aliases and the estimated cost bound execution.
    graphql_max_document_bytes: int = Field(default=64 * 1024, gt=0)
    graphql_max_tokens: int = Field(default=2000, gt=0)
    graphql_max_depth: int = Field(default=12, gt=0, le=50)
    graphql_max_aliases: int = Field(default=30, ge=0)
    graphql_max_cost: int = Field(default=200_000, gt=0)
    graphql_max_cost_anonymous: int = Field(default=1000, gt=0)
    # Introspection (``__schema``, ``__type``): unset means on, except in production.
    graphql_introspection: bool | None = None
    # Documents parsed and validated once per process: this many, least recently used
    # out first (0: parse and validate every request). Limits still apply to every request.
    graphql_document_cache_size: int = Field(default=1000, ge=0)
    # Automatic persisted queries (Apollo's protocol): a client may send a document's
    # SHA-256 instead of its text. The store keeps this many documents, in Redis when it is
    # configured (shared by every replica; each unused for ``ttl`` expires), else in memory.
    graphql_persisted_queries: bool = True
    graphql_persisted_query_store_size: int = Field(default=10_000, gt=0)
    graphql_persisted_query_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)

    # The largest request body /graphql and /webhooks/* take (413 beyond it, refused as it
    # arrives). Operations and gateway webhooks are a few KiB; files have their own routes.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    # Rate limits, in the `limits` library's notation ("10/minute;100/hour": every part
    # must hold), counted in Redis when it is configured. See settle/core/rate_limit.py.
    rate_limits_enabled: bool = True
    rate_limit_login_per_ip: str = "20/minute;200/hour"
    rate_limit_login_per_email: str = "10/minute;100/hour"
    rate_limit_sign_up_per_ip: str = "5/minute;20/hour"
    rate_limit_sign_up_per_email: str = "5/hour"
    rate_limit_accept_invitation_per_ip: str = "10/minute;100/hour"
    rate_limit_accept_invitation_per_email: str = "10/minute;50/hour"
    rate_limit_authenticated: str = "600/minute"
    rate_limit_websocket_per_ip: str = "60/minute"
    # Peers (addresses or networks, or "*") whose X-Forwarded-For names the client; a
    # header from anyone else is ignored, or every caller could pick their own address.
    trusted_proxies: tuple[str, ...] = ()

    outbox_relay_cron: str = "* * * * *"
    outbox_stale_seconds: int = Field(default=30, ge=0)
    # Published outbox rows are deleted this long after (housekeeping.prune, daily).
    outbox_keep_days: int = Field(default=7, gt=0)
    embedded_worker_threads: int = Field(default=4, ge=1)

    # Deliverable files. ``storage_dir`` unset means ``<var_dir>/files`` (see
    # ``resolved_storage_dir``). Sizes travel as GraphQL Int, so the limit stays below 2 GiB.
    storage_dir: Path | None = None
    deliverable_max_bytes: int = Field(default=500 * 1024 * 1024, gt=0, le=2**31 - 1)
    # Media types a deliverable may be declared with. application/octet-stream is left
    # out on purpose: it would admit anything and serve it typeless; add it (or the
    # exact type) through the environment if an agency needs another format.
    deliverable_content_types: tuple[str, ...] = (
        "application/pdf",
        "application/zip",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "video/mp4",
        "video/quicktime",
        "text/plain",
        "text/csv",
        "application/json",
    )
    # Client users keep access to a project's files this long after the final files unlocked.
    deliverable_access_days: int = Field(default=365, gt=0)
    upload_url_ttl_seconds: int = Field(default=900, gt=0)
    download_url_ttl_seconds: int = Field(default=900, gt=0)

    # Invoice documents. A PDF uploaded by hand (issued elsewhere) is at most this large;
    # invoices are a few pages, so anything bigger is a mistake or an abuse of the URL.
    invoice_upload_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0, le=2**31 - 1)
    # How long a signed invoice URL (PDF download, draft preview, upload) works.
    invoice_url_ttl_seconds: int = Field(default=900, gt=0)

    # CSV exports (settle/services/export.py). A signed download URL works this long; an
    # export holds at most ``export_max_rows`` rows, read ``export_page_size`` at a time;
    # its progress is announced at most once per ``export_progress_interval_seconds``.
    export_url_ttl_seconds: int = Field(default=900, gt=0)
    export_max_rows: int = Field(default=1_000_000, gt=0)
    export_page_size: int = Field(default=500, gt=0, le=10_000)
    export_progress_interval_seconds: float = Field(default=0.25, ge=0)
    # A completed export's file is deleted this long after it was written.
    export_retention_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    # CSV imports of clients and contacts. A file is at most ``import_max_bytes`` and
    # ``import_max_rows`` data rows; the job writes ``import_batch_size`` rows per
    # transaction (its checkpoint), and announces progress at most once per
    # ``import_progress_interval_seconds``.
    import_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0, le=2**31 - 1)
    import_max_rows: int = Field(default=50_000, gt=0)
    import_batch_size: int = Field(default=200, gt=0, le=5_000)
    import_progress_interval_seconds: float = Field(default=0.25, ge=0)

    # Notification emails each agency may send (limits notation); beyond it they wait.
    notification_email_rate_limit: str = "1000/hour"

    @field_validator(
        "rate_limit_login_per_ip",
        "rate_limit_login_per_email",
        "rate_limit_sign_up_per_ip",
        "rate_limit_sign_up_per_email",
        "rate_limit_accept_invitation_per_ip",
        "rate_limit_accept_invitation_per_email",
        "rate_limit_authenticated",
        "rate_limit_websocket_per_ip",
        "notification_email_rate_limit",
        mode="after",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        limits.parse_many(value)  # a ValueError names what it could not read
        return value

    @field_validator("telegram_webhook_secret", mode="after")
    @classmethod
    def _telegram_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram takes 1-256 characters of A-Z, a-z, 0-9, _ and - as a secret_token.
        if value is not None and not TELEGRAM_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("telegram_bot_username", mode="after")
    @classmethod
    def _telegram_bot_username(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # BotFather shows it as @name; links need it without the @.
        return value.strip().removeprefix("@") or None

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _trusted_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in value:
            if proxy.strip() != "*":
                ipaddress.ip_network(proxy.strip(), strict=False)
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under the var directory.

        A PostgreSQL URL without its own ``maxsize`` gets ``database_pool_size``.
        """
        if self.database_url:
            url = self.database_url
            postgres = url.startswith(("postgres://", "postgresql://", "asyncpg://"))
            if postgres and "maxsize=" not in url:
                url += f"{'&' if '?' in url else '?'}maxsize={self.database_pool_size}"
            return url
        return f"sqlite://{(self.var_dir / 'settle.sqlite3').as_posix()}"

    @property
    def resolved_storage_dir(self) -> Path:
        """Where the local storage keeps files: ``storage_dir``, or ``<var_dir>/files``."""
        return self.storage_dir if self.storage_dir is not None else self.var_dir / "files"

    @property
    def mail_dir(self) -> Path:
        return self.var_dir / "mail"

    @property
    def telegram_dir(self) -> Path:
        """Where Telegram messages are written when no bot token is set."""
        return self.var_dir / "telegram"

    @property
    def telegram_enabled(self) -> bool:
        """True when users can link chats: the bot's username and webhook secret are set."""
        return bool(self.telegram_bot_username) and self.telegram_webhook_secret is not None

    @property
    def sandbox_payments_enabled(self) -> bool:
        if self.sandbox_payments is not None:
            return self.sandbox_payments
        return not self.is_production

    @property
    def hsts_max_age(self) -> int:
        if self.hsts_seconds is not None:
            return self.hsts_seconds
        return 365 * 24 * 3600 if self.public_base_url.startswith("https://") else 0

    @property
    def graphql_introspection_enabled(self) -> bool:
        if self.graphql_introspection is not None:
            return self.graphql_introspection
        return not self.is_production

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: bus, worker and scheduler run in-process."""
        return not self.redis_url

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    def invitation_link(self, token: str) -> str:
        """The link an invitation email carries: ``invitation_url`` (or the built-in page)."""
        base = self.invitation_url or f"{self.public_base_url.rstrip('/')}/invitations/accept"
        return f"{base}{'&' if '?' in base else '?'}token={token}"

    def for_server(self, host: str, port: int) -> Settings:
        """These settings for a server listening on ``host:port``.

        Without SETTLE_PUBLIC_BASE_URL, links point at that port: at 127.0.0.1 when
        the server listens on every interface, at the host itself otherwise.
        """
        if "public_base_url" in self.model_fields_set:
            return self
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return self.model_copy(update={"public_base_url": f"http://{netloc}"})

    def signing_key(self) -> str:
        """The secret key; generated into the var directory on first use if unset."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        if self.is_production:
            raise RuntimeError("SETTLE_SECRET_KEY must be set in production")
        path = self.var_dir / "secret_key"
        if not path.exists():
            private_dir(self.var_dir)
            # Exclusive create: two processes starting at once must agree on one key.
            try:
                fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w", encoding="ascii") as fh:
                    fh.write(secrets.token_urlsafe(48))
        return path.read_text(encoding="ascii").strip()


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    global _current
    if _current is None:
        _current = Settings()
    return _current


def configure_settings(settings: Settings | None) -> None:
    """Make ``settings`` the process-wide settings (entry points and tests)."""
    global _current
    _current = settings
