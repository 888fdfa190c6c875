"""The built-in invitation page: ``/invitations/accept?token=…``, where invitation emails link.

A plain HTML form (no script): the invitee picks a name and a password, and the
form posts them with the token to the same path, which joins through the same
service as the ``acceptInvitation`` mutation. There is no session, so there is
nothing for a cross-site form to ride on: the token is the only credential, and
it travels in the body of the POST (and is redacted from access logs).
An agency with its own frontend points the emails there instead
(``SETTLE_INVITATION_URL``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from settle.core import rate_limit
from settle.core.errors import ConflictError, ValidationError
from settle.core.outbox import transaction
from settle.core.settings import Settings
from settle.models.agency import Role
from settle.services import auth as auth_service

# A name, two passwords and a token fit many times over; anything larger is not this form.
MAX_FORM_BYTES = 16 * 1024

_templates = Environment(
    loader=PackageLoader("settle", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_HEADERS = {
    # The page carries the token: keep it out of caches and of Referer headers, and
    # out of other sites' frames.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _page(status: int, **context: Any) -> HTMLResponse:
    html = _templates.get_template("invitation_accept.html").render(**context)
    return HTMLResponse(html, status, headers=_HEADERS)


def _role(role: Role) -> str:
    return role.value.replace("_", " ").capitalize()


def _invalid(status: int) -> HTMLResponse:
    return _page(status, state="invalid")


def _form(
    found: auth_service.OpenInvitation, *, token: str, name: str, error: str | None, status: int
) -> HTMLResponse:
    return _page(
        status,
        state="form",
        agency_name=found.agency.name,
        inviter_name=found.inviter.name if found.inviter else found.agency.name,
        email=found.invitation.email,
        role=_role(found.invitation.role),
        token=token,
        name=name,
        error=error,
    )


def _error_message(exc: ValidationError) -> str:
    # The service names fields as the API does ("name must not be empty"); a person
    # filling in the form reads a sentence.
    if exc.field == "name":
        return "Enter your name" if exc.code == "REQUIRED" else f"Your {exc.message}"
    return exc.message


async def accept_page(request: Request) -> Response:
    """The form, for an invitation that can still be accepted."""
    token = request.query_params.get("token", "")
    found = await auth_service.open_invitation(token)
    if found is None:
        return _invalid(404)
    return _form(found, token=token, name=found.invitation.name, error=None, status=200)


async def _read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form, or None when the body is larger than a form of this page."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


async def accept_submit(request: Request) -> Response:
    """Join with the token, name and password the form posted."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return PlainTextResponse("Send the invitation form", 415)
    form = await _read_form(request)
    if form is None:
        return PlainTextResponse("The form is too large", 413)
    token = form.get("token", "")
    name = form.get("name", "")
    try:
        # The same limits as the acceptInvitation mutation: per address, then per invitee.
        await rate_limit.limit_by_ip(request.scope, "accept_invitation")
        found = await auth_service.open_invitation(token)
        if found is not None:
            await rate_limit.limit_by_email(
                request.scope, "accept_invitation", found.invitation.email
            )
    except rate_limit.RateLimitedError as exc:
        return PlainTextResponse(exc.message, 429, headers={"Retry-After": str(exc.retry_after)})
    if found is None:
        return _invalid(400)
    password = form.get("password", "")
    if password != form.get("password_confirm", ""):
        error = "The two passwords do not match"
        return _form(found, token=token, name=name, error=error, status=400)
    settings: Settings = request.app.state.settings
    try:
        async with transaction():
            joined = await auth_service.accept_invitation(
                settings, token=token, name=name, password=password
            )
    except ValidationError as exc:
        if exc.field == "token":
            return _invalid(400)
        return _form(found, token=token, name=name, error=_error_message(exc), status=400)
    except ConflictError as exc:
        return _form(found, token=token, name=name, error=exc.message, status=409)
    return _page(
        200,
        state="joined",
        agency_name=found.agency.name,
        role=_role(joined.user.role),
        email=joined.user.email,
    )


def invitation_routes() -> list[Route]:
    return [
        Route("/invitations/accept", accept_page, methods=["GET"]),
        Route("/invitations/accept", accept_submit, methods=["POST"]),
    ]
