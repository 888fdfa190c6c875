"""Documents parsed and validated once per process, not once per request.

A client sends the same few operations over and over; parsing and validating
each again was an eighth of the CPU of a hot read. So each process keeps the
documents it parsed in a least-recently-used cache keyed by the SHA-256 of their
text (``SETTLE_GRAPHQL_DOCUMENT_CACHE_SIZE`` of them), and with each one:

- its size and token count, so a document parsed under one set of limits is
  parsed (and refused) again under smaller ones;
- the validation rules it passed, so it is validated again only under other
  rules (introspection turned off adds one); a document that failed validation
  is validated again each time, and its errors are never cached;
- the path of its first inline string that holds NUL or a lone surrogate (or
  that none does), found by one walk of its tree;
- the depth, aliases and cost of each of its operations whose figures do not
  depend on the variables (``first: $n`` does), so the analysis runs once; the
  figures are still checked on every request against the caller's own budget
  (anonymous callers get a smaller one).

What a request brings with it (its variables, their text) is checked every time.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from graphql import DocumentNode
from strawberry.extensions import SchemaExtension

from settle.core.settings import Settings, get_settings


def document_hash(query: str) -> str:
    """The SHA-256 of a document's text, in hex: the cache key and the APQ hash."""
    return hashlib.sha256(query.encode("utf-8", errors="surrogatepass")).hexdigest()


UNCHECKED = object()


@dataclass(slots=True)
class CachedDocument:
    query: str
    document: DocumentNode
    size: int
    """Bytes of the text in UTF-8."""
    tokens: int
    valid_under: set[tuple[type, ...]] = field(default_factory=set)
    """The sets of validation rules the document passed."""
    figures: dict[str | None, Any] = field(default_factory=dict)
    """Operation name -> its limits.Figures, when they do not depend on the variables."""
    invalid_literal: object = UNCHECKED
    """inputs.literal_with_invalid_text of the document (a str or None), UNCHECKED until found."""


class DocumentCache:
    """A bounded least-recently-used map of document hash -> CachedDocument."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, CachedDocument] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedDocument | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedDocument) -> None:
        if self.size <= 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


_cache = DocumentCache(0)


def document_cache(settings: Settings) -> DocumentCache:
    """This process's cache, sized by ``settings`` (resized when they change, as in tests)."""
    global _cache
    if _cache.size != settings.graphql_document_cache_size:
        _cache = DocumentCache(settings.graphql_document_cache_size)
    return _cache


def context_settings(context: Any) -> Settings:
    settings = getattr(context, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


def cached_entry(context: Any) -> CachedDocument | None:
    """The cache's entry for the document a Strawberry execution context holds, if it is
    that very document (parsed from the cache)."""
    if not context.query or context.graphql_document is None:
        return None
    entry = document_cache(context_settings(context.context)).get(document_hash(context.query))
    if entry is None or entry.document is not context.graphql_document:
        return None
    return entry


class ValidatedOnce(SchemaExtension):
    """Skips validating a cached document under rules it has passed before.

    List it after every extension that adds validation rules or checks the
    request before validation (OperationLimits, InputChecks, IntrospectionGate):
    it decides last, with the final rules, and only when none of them refused.
    """

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        entry: CachedDocument | None = None
        rules: tuple[type, ...] = ()
        skipped = False
        if context.pre_execution_errors is None:
            entry = cached_entry(context)
            if entry is not None:
                rules = tuple(context.validation_rules)
                if rules in entry.valid_under:
                    # An empty list: validation ran and found nothing, so Strawberry skips it.
                    context.pre_execution_errors = []
                    skipped = True
        yield
        if entry is not None and not skipped and context.pre_execution_errors == []:
            entry.valid_under.add(rules)
