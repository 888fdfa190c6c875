"""JSON from outside (request bodies, websocket frames, webhooks), parsed safely.

``json.loads`` recurses once per level of nesting, so a body of 100,000 ``[``
ends in Python's RecursionError; it also takes bytes in any encoding it can
guess, numbers of any length (Python refuses to convert past 4,300 digits with
a ValueError) and ``NaN``. ``loads`` refuses all of that as an
``InvalidJSONError`` before (or instead of) recursing, and ``invalid_text``
finds the strings that no database stores: lone surrogates (``"\\udcff"``,
which is no character in any encoding) and NUL (which PostgreSQL refuses in
text and JSON alike).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# Deepest nesting of arrays and objects taken. GraphQL variables and gateway events
# nest under ten levels; Python's own limit (about 1,000 frames) is far above this.
MAX_DEPTH = 64

# A JSON string from its opening quote, to its closing one or, unterminated, as far as
# it goes: always a match at a quote, so one pass over the body skips every string.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1

# Text no column takes: NUL, and UTF-16 surrogates (in a Python string only ever lone
# ones: a JSON pair such as "\ud83d\ude00" decodes to the one character it encodes).
_INVALID_TEXT = re.compile("[\x00\ud800-\udfff]")


class InvalidJSONError(json.JSONDecodeError):
    """Input that is not JSON we take; ``code`` says why (INVALID_JSON, JSON_TOO_DEEP).

    A JSONDecodeError, so Strawberry answers it as a body (400) or a websocket
    frame (close 4400) that is not JSON.
    """

    def __init__(self, message: str, code: str = "INVALID_JSON") -> None:
        super().__init__(message, "", 0)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


def nesting(data: bytes) -> int:
    """How deep the arrays and objects of ``data`` nest (brackets inside strings aside).

    Linear in the size of ``data`` and run in C: strings are cut out with one
    regular expression, every byte but brackets is dropped, and the deepest
    point is the largest running sum of +1 per opening and -1 per closing one.
    """
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _no_constant(name: str) -> Any:
    raise InvalidJSONError(f"{name} is not a JSON number")


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text in UTF-8 nested at most ``max_depth`` deep; InvalidJSONError if not."""
    if isinstance(data, str):
        text = data
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSONError("The JSON text is not valid UTF-8") from None
    if nesting(raw) > max_depth:
        raise InvalidJSONError(
            f"The JSON text nests deeper than {max_depth} levels", code="JSON_TOO_DEEP"
        )
    try:
        return json.loads(text, parse_constant=_no_constant)
    except InvalidJSONError:
        raise
    # ValueError covers JSONDecodeError and numbers too long to convert; RecursionError
    # cannot happen below MAX_DEPTH, but a parse error must never become a 500.
    except (ValueError, RecursionError) as exc:
        raise InvalidJSONError(f"The body is not valid JSON: {exc}") from None


def invalid_text(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in ``value`` holding NUL or a lone
    surrogate, ``path`` itself for a bad top-level string; None when all text is clean."""
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if _INVALID_TEXT.search(item):
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                key_text = str(key)
                bad_key = _INVALID_TEXT.search(key_text) is not None
                # A path is reported back to the caller: the bad characters as escapes.
                name = printable(key_text) if bad_key else key_text
                child_path = f"{where}.{name}" if where else name
                if bad_key:
                    return child_path
                pending.append((child, child_path))
        elif isinstance(item, list | tuple):
            pending.extend(
                (child, f"{where}.{index}" if where else str(index))
                for index, child in enumerate(item)
            )
    return None


def printable(text: str) -> str:
    """``text`` with NUL and lone surrogates written as ``\\uXXXX`` escapes."""
    return _INVALID_TEXT.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def has_invalid_text(text: str) -> bool:
    return _INVALID_TEXT.search(text) is not None
