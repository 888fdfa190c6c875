"""The one-click unsubscribe link every email of a kind that can be turned off carries.

``GET /notifications/unsubscribe?token=…`` shows a page with one button, since
mail scanners open links and must not unsubscribe anyone by doing so. ``POST``
to the same URL turns the kind off for that recipient: the button, or a mail
client acting on RFC 8058's ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``.
No login: the signed token names the recipient and the kind, and nothing else.
"""

from __future__ import annotations

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from settle.core.outbox import transaction
from settle.core.signing import SignedTokenError
from settle.services import notification as notification_service

PATH = "/notifications/unsubscribe"

_page = Environment(autoescape=True).from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Unsubscribe</title></head><body>
{% if state == "confirm" %}
<p>Stop emails about <strong>{{ kind }}</strong> to {{ name }}
{%- if address %} ({{ address }}){% endif %}?</p>
<form method="post"><input type="hidden" name="token" value="{{ token }}">
<button type="submit">Unsubscribe</button></form>
{% elif state == "done" %}
<p>Done: {{ name }} gets no more emails about <strong>{{ kind }}</strong>.</p>
{% else %}
<p>This unsubscribe link is not valid, or it has expired.</p>
{% endif %}
</body></html>
"""
)

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}


def _render(status: int, **context: object) -> HTMLResponse:
    return HTMLResponse(_page.render(**context), status, headers=_HEADERS)


def _label(kind: str) -> str:
    return kind.replace("_", " ")


async def unsubscribe_page(request: Request) -> Response:
    token = request.query_params.get("token", "")
    if request.method == "POST" and not token:
        form = await request.form()
        token = str(form.get("token") or "")
    try:
        if request.method == "GET":
            target = await notification_service.unsubscribe_target(token)
            return _render(
                200,
                state="confirm",
                kind=_label(target.kind.value),
                name=target.name,
                address=target.address,
                token=token,
            )
        async with transaction():
            target = await notification_service.unsubscribe(token)
    except SignedTokenError:
        return _render(400, state="invalid")
    return _render(200, state="done", kind=_label(target.kind.value), name=target.name)


def unsubscribe_routes() -> list[Route]:
    return [Route(PATH, unsubscribe_page, methods=["GET", "POST"])]
