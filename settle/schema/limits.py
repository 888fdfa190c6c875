"""Operation limits: size, tokens, depth, aliases and cost, checked before anything runs.

A document is refused in two steps, both linear in its size:

1. While it is parsed: its size in bytes before the parser starts, then its
   tokens and the nesting of its brackets as the parser reads them, so a huge or
   deeply nested document is never parsed to the end (and the parser never
   recurses deep enough to reach Python's recursion limit).
2. Before it is validated: one pass over the operation computes its depth, its
   aliases and its estimated cost. Each fragment's figures are computed once, in
   dependency order (a fragment spread twice costs twice, but is walked once),
   and a cycle of fragments is refused rather than followed.

The cost model: every field costs 1; a field with a ``first`` argument (a
connection) multiplies the cost of what is selected below it by its page size
(the argument's value, literal or variable, else its default, capped at the
largest page); a list without pagination multiplies by ``ASSUMED_LIST_SIZE``; a
connection's own lists (``edges``) are covered by its ``first``. Introspection
(``__schema``, ``__type`` and what hangs below them) costs 1 per field, with no
multiplier, and does not count toward depth.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from graphql.language import TokenKind
from graphql.language.parser import Parser
from graphql.validation.rules import overlapping_fields_can_be_merged
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension

from settle.core.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from settle.core.settings import Settings
from settle.schema.documents import (
    CachedDocument,
    context_settings,
    document_cache,
    document_hash,
)

# A list field without pagination (``contacts``, ``lineItems``) is assumed this long.
ASSUMED_LIST_SIZE = DEFAULT_PAGE_SIZE

# Brackets (``{``, ``[``, ``(``) may nest this deep. The parser recurses once per level
# (and graphql-core stops it at 200); no real operation comes near this.
MAX_NESTING = 64

# Figures beyond this are reported as this: the largest integer every JSON client reads
# exactly. A chain of fragments that each spread the next twice doubles per link.
SATURATED = 2**53 - 1

# Comparing fields that share a response name (graphql-core's overlapping-fields rule)
# grows with the square of the duplicates; graphql-core meters that work and aborts
# validation past a budget. Its default (500,000 units) is seconds of CPU; the
# operations of this API and GraphiQL's introspection use under ten units, so the
# budget is set to what takes milliseconds, and an abort is reported as QUERY_TOO_COMPLEX.
OVERLAP_VALIDATION_BUDGET = 5_000
overlapping_fields_can_be_merged.MAX_COMPLEXITY_BUDGET = OVERLAP_VALIDATION_BUDGET

_OPENING = frozenset({TokenKind.BRACE_L, TokenKind.BRACKET_L, TokenKind.PAREN_L})
_CLOSING = frozenset({TokenKind.BRACE_R, TokenKind.BRACKET_R, TokenKind.PAREN_R})


class QueryLimitError(GraphQLError):
    """An operation over one of the limits: refused before anything runs."""

    def __init__(self, message: str, code: str, **figures: Any) -> None:
        super().__init__(message, extensions={"code": code, **figures})


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    max_tokens: int
    max_depth: int
    max_aliases: int
    max_cost: int

    @classmethod
    def for_caller(cls, settings: Settings, *, anonymous: bool) -> Limits:
        """The limits of an authenticated caller, or the smaller budget of an anonymous one."""
        return cls(
            max_bytes=settings.graphql_max_document_bytes,
            max_tokens=settings.graphql_max_tokens,
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_cost=(
                settings.graphql_max_cost_anonymous if anonymous else settings.graphql_max_cost
            ),
        )


@dataclass(frozen=True, slots=True)
class Figures:
    """What an operation (or a fragment, or a selection set) asks for."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0
    # How deep fragment spreads nest: execution and validation recurse per level.
    fragment_depth: int = 0


_NOTHING = Figures()


# -- Step 1: size, tokens and nesting, while parsing ---------------------------------


class _LimitedParser(Parser):
    """graphql-core's parser, counting tokens and bracket nesting as it reads them."""

    def __init__(self, source: str, *, max_tokens: int) -> None:
        super().__init__(source)
        self._max_tokens_allowed = max_tokens
        self._brackets = 0
        self.size = 0
        self.document = DocumentNode(definitions=())

    def advance_lexer(self) -> None:
        super().advance_lexer()
        # token_count includes the comments skipped on the way, which cost as much to read.
        if self.token_count > self._max_tokens_allowed:
            raise QueryLimitError(
                f"The document has more than {self._max_tokens_allowed} tokens.",
                "QUERY_TOO_LARGE",
                limit="tokens",
                allowed=self._max_tokens_allowed,
            )
        kind = self._lexer.token.kind
        if kind in _OPENING:
            self._brackets += 1
            if self._brackets > MAX_NESTING:
                raise QueryLimitError(
                    f"The document nests brackets more than {MAX_NESTING} levels deep.",
                    "QUERY_TOO_DEEP",
                    limit="nesting",
                    allowed=MAX_NESTING,
                )
        elif kind in _CLOSING:
            self._brackets -= 1


def parse_within(query: str, limits: Limits) -> DocumentNode:
    """Parse ``query``, refusing it (QueryLimitError) as soon as it is over a limit."""
    return _parse_within(query, limits).document


def _parse_within(query: str, limits: Limits) -> _LimitedParser:
    # Each character is 1 to 4 bytes in UTF-8: encode only when the length cannot tell.
    size = len(query)
    if size * 4 > limits.max_bytes:
        size = _utf8_size(query)
    if size > limits.max_bytes:
        raise QueryLimitError(
            f"The document is {size} bytes; at most {limits.max_bytes} are allowed.",
            "QUERY_TOO_LARGE",
            limit="bytes",
            size=size,
            allowed=limits.max_bytes,
        )
    parser = _LimitedParser(query, max_tokens=limits.max_tokens)
    # The exact size, kept with a cached document to hold it to smaller limits later.
    parser.size = size if size * 4 > limits.max_bytes else _utf8_size(query)
    parser.document = parser.parse_document()
    return parser


def _utf8_size(query: str) -> int:
    return len(query.encode("utf-8", errors="surrogatepass"))


# -- Step 2: depth, aliases and cost, before validation -------------------------------


class _Analysis:
    """Figures of the operations of one document, each fragment computed once."""

    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, variables: Mapping[str, Any]
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self.figures: dict[str, Figures] = {}
        self.variable_defaults: dict[str, int] = {}
        # Whether a page size came from a variable: then the figures hold for these
        # variables only, and are not cached with the document.
        self.uses_variables = False

    def operation(self, operation: OperationDefinitionNode) -> Figures:
        self.variable_defaults = {
            definition.variable.name.value: int(definition.default_value.value)
            for definition in operation.variable_definitions or ()
            if isinstance(definition.default_value, IntValueNode)
        }
        # Fragment figures may depend on this operation's variables (``first: $n``).
        self.figures = {}
        self._compute_fragments(operation.selection_set)
        root = {
            OperationType.QUERY: self.schema.query_type,
            OperationType.MUTATION: self.schema.mutation_type,
            OperationType.SUBSCRIPTION: self.schema.subscription_type,
        }[operation.operation]
        return self._selection_set(operation.selection_set, root)

    def _compute_fragments(self, selection_set: SelectionSetNode) -> None:
        """Compute every fragment reachable from ``selection_set``, dependencies first.

        Iterative, so a chain of a thousand fragments cannot exhaust Python's stack.
        """
        in_progress: set[str] = set()
        stack: list[tuple[str, Iterator[str]]] = []

        def enter(name: str) -> None:
            if name in self.figures or name not in self.fragments:
                return  # done, or unknown (validation names it)
            if name in in_progress:
                raise QueryLimitError(
                    f"Fragment '{name}' spreads itself (directly or through others).",
                    "FRAGMENT_CYCLE",
                    fragment=name,
                )
            in_progress.add(name)
            stack.append((name, iter(_spreads(self.fragments[name].selection_set))))

        for name in _spreads(selection_set):
            enter(name)
            while stack:
                current, pending = stack[-1]
                following = next(pending, None)
                if following is not None:
                    enter(following)
                    continue
                stack.pop()
                in_progress.discard(current)
                fragment = self.fragments[current]
                parent = self.schema.get_type(fragment.type_condition.name.value)
                self.figures[current] = self._selection_set(fragment.selection_set, parent)

    def _selection_set(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None
    ) -> Figures:
        # Recursion here follows the nesting within one definition, bounded by MAX_NESTING.
        depth = aliases = cost = fragment_depth = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                figures = self._field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                figures = self._selection_set(
                    selection.selection_set,
                    self.schema.get_type(condition.name.value) if condition else parent,
                )
            elif isinstance(selection, FragmentSpreadNode):
                spread = self.figures.get(selection.name.value, _NOTHING)
                figures = Figures(
                    spread.depth, spread.aliases, spread.cost, spread.fragment_depth + 1
                )
            else:  # pragma: no cover - the grammar has no other selection
                continue
            depth = max(depth, figures.depth)
            aliases = min(SATURATED, aliases + figures.aliases)
            cost = min(SATURATED, cost + figures.cost)
            fragment_depth = max(fragment_depth, figures.fragment_depth)
        return Figures(depth, aliases, cost, fragment_depth)

    def _field(self, node: FieldNode, parent: GraphQLNamedType | None) -> Figures:
        name = node.name.value
        definition: GraphQLField | None = None
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            definition = parent.fields.get(name)
        below = _NOTHING
        if node.selection_set is not None:
            child = get_named_type(definition.type) if definition is not None else None
            below = self._selection_set(node.selection_set, child)
        introspection = name.startswith("__") or (parent is not None and _is_meta(parent))
        multiplier = 1 if introspection else self._multiplier(node, definition, parent)
        return Figures(
            depth=0 if introspection else 1 + below.depth,
            aliases=min(SATURATED, below.aliases + (1 if node.alias is not None else 0)),
            cost=min(SATURATED, 1 + multiplier * below.cost),
            fragment_depth=below.fragment_depth,
        )

    def _multiplier(
        self, node: FieldNode, definition: GraphQLField | None, parent: GraphQLNamedType | None
    ) -> int:
        if definition is None:
            return 1
        first = definition.args.get("first")
        if first is not None:
            default = first.default_value if isinstance(first.default_value, int) else None
            return self._page_size(node, DEFAULT_PAGE_SIZE if default is None else default)
        if is_list_type(get_nullable_type(definition.type)):
            if isinstance(parent, GraphQLObjectType) and "pageInfo" in parent.fields:
                return 1  # a connection's edges: its ``first`` already counted them
            return ASSUMED_LIST_SIZE
        return 1

    def _page_size(self, node: FieldNode, default: int) -> int:
        size = default
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                size = int(value.value)
            elif isinstance(value, VariableNode):
                self.uses_variables = True
                name = value.name.value
                given = self.variables.get(name)
                if isinstance(given, int) and not isinstance(given, bool):
                    size = given
                elif name not in self.variables and name in self.variable_defaults:
                    size = self.variable_defaults[name]
        # Out-of-range sizes are refused by the resolver; estimate within the range.
        return min(max(size, 1), MAX_PAGE_SIZE)


def _spreads(selection_set: SelectionSetNode) -> Iterator[str]:
    """The names of the fragments spread anywhere in ``selection_set``."""
    pending = [selection_set]
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                yield selection.name.value
            elif selection.selection_set is not None:  # type: ignore[attr-defined]
                pending.append(selection.selection_set)  # type: ignore[attr-defined]


def _is_meta(named: GraphQLNamedType) -> bool:
    return named.name.startswith("__")


def analyse(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> Figures:
    """The figures of the operation to run (all operations' largest, when none is named)."""
    return _analyse(_Analysis(schema, document, variables or {}), document, operation_name)


def _analyse(analysis: _Analysis, document: DocumentNode, operation_name: str | None) -> Figures:
    result = _NOTHING
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if operation_name is not None and (
            definition.name is None or definition.name.value != operation_name
        ):
            continue
        figures = analysis.operation(definition)
        result = Figures(
            depth=max(result.depth, figures.depth),
            aliases=max(result.aliases, figures.aliases),
            cost=max(result.cost, figures.cost),
            fragment_depth=max(result.fragment_depth, figures.fragment_depth),
        )
    return result


def check(figures: Figures, limits: Limits) -> None:
    """Refuse (QueryLimitError) an operation whose figures are over ``limits``."""
    if figures.depth > limits.max_depth:
        raise QueryLimitError(
            f"The operation is {figures.depth} fields deep; at most {limits.max_depth} "
            "are allowed.",
            "QUERY_TOO_DEEP",
            limit="depth",
            depth=figures.depth,
            allowed=limits.max_depth,
        )
    if figures.fragment_depth > limits.max_depth:
        raise QueryLimitError(
            f"Fragments spread into each other {figures.fragment_depth} levels deep; at most "
            f"{limits.max_depth} are allowed.",
            "QUERY_TOO_DEEP",
            limit="fragmentDepth",
            depth=figures.fragment_depth,
            allowed=limits.max_depth,
        )
    if figures.aliases > limits.max_aliases:
        raise QueryLimitError(
            f"The operation has {figures.aliases} aliases; at most {limits.max_aliases} "
            "are allowed.",
            "TOO_MANY_ALIASES",
            aliases=figures.aliases,
            allowed=limits.max_aliases,
        )
    if figures.cost > limits.max_cost:
        raise QueryLimitError(
            f"The operation's estimated cost is {figures.cost}; at most {limits.max_cost} "
            "is allowed.",
            "QUERY_TOO_COSTLY",
            estimated=figures.cost,
            allowed=limits.max_cost,
        )


# -- The schema extension --------------------------------------------------------------


class OperationLimits(SchemaExtension):
    """Refuses an operation over a limit before it is validated or anything runs.

    The same hooks run for HTTP and for websocket operations (subscriptions too).
    List it first among the schema's extensions, so nothing parses or validates
    a document before its limits are checked. Parsed documents and their figures
    are cached (settle.schema.documents); the limits are checked on every request.
    """

    _entry: CachedDocument | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            limits = self._limits()
            cache = document_cache(context_settings(context.context))
            key = document_hash(context.query)
            entry = cache.get(key)
            if (
                entry is not None
                and entry.size <= limits.max_bytes
                and (entry.tokens <= limits.max_tokens)
            ):
                self._entry = entry
                context.graphql_document = entry.document
                yield
                return
            try:
                parser = _parse_within(context.query, limits)
                context.graphql_document = parser.document
                self._entry = CachedDocument(
                    context.query, parser.document, parser.size, parser.token_count
                )
                cache.put(key, self._entry)
            except QueryLimitError as error:
                self._refuse(error)
            except (GraphQLError, RecursionError):
                # A syntax error is left to Strawberry: it parses again (no further than
                # where this parse stopped) and answers it as it always does.
                pass
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.pre_execution_errors is None and context.graphql_document is not None:
            try:
                check(self._figures(), self._limits())
            except QueryLimitError as error:
                # Set before validation runs, these errors make Strawberry skip it.
                context.pre_execution_errors = [error]
        yield
        errors = context.pre_execution_errors
        for index, found in enumerate(errors or ()):
            if isinstance(found, ValidationAbortedError) and found.message == _ABORTED:
                # In place: Strawberry answers with this very list.
                errors[index] = QueryLimitError(  # type: ignore[index]
                    "The document is too complex to validate (too many fields share "
                    "a response name, or fragments nest too deeply).",
                    "QUERY_TOO_COMPLEX",
                )

    def _figures(self) -> Figures:
        context = self.execution_context
        assert context.graphql_document is not None
        name = context.operation_name
        entry = self._entry
        if entry is not None and entry.document is context.graphql_document:
            cached = entry.figures.get(name)
            if cached is not None:
                return cast(Figures, cached)
        analysis = _Analysis(
            context.schema._schema, context.graphql_document, context.variables or {}
        )
        figures = _analyse(analysis, context.graphql_document, name)
        cacheable = entry is not None and entry.document is context.graphql_document
        if entry is not None and cacheable and not analysis.uses_variables:
            entry.figures[name] = figures
        return figures

    def _limits(self) -> Limits:
        context = self.execution_context.context
        return Limits.for_caller(
            context_settings(context), anonymous=getattr(context, "actor", None) is None
        )

    def _refuse(self, error: GraphQLError) -> None:
        """Answer ``error`` without parsing further: Strawberry sees a document that
        names the same operation, and errors that make it skip validation and execution."""
        context = self.execution_context
        name = context.operation_name
        context.pre_execution_errors = [error]
        context.graphql_document = DocumentNode(
            definitions=(
                OperationDefinitionNode(
                    operation=OperationType.QUERY,
                    name=NameNode(value=name) if name is not None else None,
                    variable_definitions=(),
                    directives=(),
                    selection_set=SelectionSetNode(
                        selections=(
                            FieldNode(
                                name=NameNode(value="__typename"),
                                arguments=(),
                                directives=(),
                            ),
                        )
                    ),
                ),
            )
        )


# graphql-core's message when the validation gave up (recursion or the overlap budget).
_ABORTED = "Validation aborted."
