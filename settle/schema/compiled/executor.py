"""A breadth-first executor for query operations.

graphql-core completes a response depth first: one call into its machinery per
field of every object, one coroutine per asynchronous field, and a Task per
awaited field when an object has several. Here an operation runs level by
level instead. All objects of one level that were selected by the same
fields form a group; for each field of the group:

- a plain field (a Strawberry field without a resolver: an attribute of the
  object) is read directly and, for a scalar or an enum, serialized at once;
- ``__typename`` is the object's type name;
- a field with a resolver is called for every object of the group, the
  awaitables it returns are collected, and all of the level's awaitables are
  driven together, without a Task each: their DataLoaders batch as they do
  under graphql-core (one statement per kind of child and level). A resolver
  with nothing for Strawberry's wrapper to do (no arguments, no field
  extension, no exception handler) is called directly, as the wrapper would.

Objects found on a level (a resolver's result, a plain field's object, the
items of a list) become the next level. The response dicts are built as it
goes, in the order graphql-core gives their keys.

What graphql-core decides is reused, not rewritten: it picks the operation,
coerces the variables (with its errors), collects the fields of each selection
(fragments, inline fragments, ``@skip`` / ``@include``), coerces arguments,
serializes leaves, resolves the runtime type of a union and builds the
resolvers' ``info``. Errors are located, nulled and propagated to the nearest
nullable position as graphql-core does; only the order of several errors can
differ, since graphql-core reports them in the order its tasks fail.

An operation this executor does not handle is given to graphql-core whole:
mutations and subscriptions, introspection, operations that disable error
propagation, resolver middleware. A value found only while running that it
does not handle (an async iterable, an awaitable list item, an asynchronous
type check) makes it start over on graphql-core; a query operation only
reads, so running it again changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, NamedTuple

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_nullable_type,
    is_abstract_type,
    is_leaf_type,
    located_error,
)
from graphql import execute as graphql_execute
from graphql.execution.collect_fields import FieldDetails, collect_fields
from graphql.execution.executor import Executor, invalid_return_type_error
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, Undefined, is_iterable

from settle.core.settings import Settings, get_settings

_INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})

FieldDetailsList = list[FieldDetails]
Verifier = Callable[[ExecutionResult, ExecutionResult, DocumentNode, str | None, bool], bool]

# When set (by the test suite), every query operation the compiled path runs is also run
# by graphql-core, and both results go to this function, which compares them: it answers
# whether they agree, and records a difference only on the last try (``final``).
verifier: Verifier | None = None


class _Fallback(Exception):
    """A value this executor does not complete: the operation runs on graphql-core."""


def execute(
    schema: GraphQLSchema,
    document: DocumentNode,
    root_value: Any = None,
    context_value: Any = None,
    variable_values: dict[str, Any] | None = None,
    operation_name: str | None = None,
    *,
    middleware: Any = None,
    is_awaitable: Callable[[Any], bool] | None = None,
    executor_class: type[Executor] | None = None,
    **kwargs: Any,
) -> Any:
    """graphql-core's ``execute``, with query operations run by the compiled path."""

    def ordinary() -> Any:
        return graphql_execute(
            schema,
            document,
            root_value=root_value,
            context_value=context_value,
            variable_values=variable_values,
            operation_name=operation_name,
            middleware=middleware,
            is_awaitable=is_awaitable,  # type: ignore[arg-type]
            executor_class=executor_class,
            **kwargs,
        )

    if (
        not _enabled(context_value)
        or getattr(middleware, "middlewares", None)
        or not _is_query(document, operation_name)
    ):
        return ordinary()
    built = (executor_class or Executor).build(
        schema,
        document,
        root_value,
        context_value,
        variable_values,
        operation_name,
        is_awaitable=is_awaitable,  # type: ignore[arg-type]
        **kwargs,
    )
    if isinstance(built, list):
        # The variables did not fit, or no operation matched: graphql-core's own answer.
        return ExecutionResult(data=None, errors=built)
    if verifier is None:
        return _execute_or_fall_back(built, ordinary)
    return _verified(built, ordinary, verifier, document, operation_name)


def _enabled(context: Any) -> bool:
    settings = getattr(context, "settings", None)
    if not isinstance(settings, Settings):
        settings = get_settings()
    return settings.compiled_reads


def _is_query(document: DocumentNode, operation_name: str | None) -> bool:
    """Whether the operation to run is a query (graphql-core reports a missing one)."""
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None
            or (definition.name is not None and definition.name.value == operation_name)
        ):
            return definition.operation is OperationType.QUERY
    return False


async def _execute_or_fall_back(executor: Executor, ordinary: Callable[[], Any]) -> Any:
    try:
        return await _Run(executor).execute()
    except _Fallback:
        result = ordinary()
        return await result if executor.is_awaitable(result) else result


async def _verified(
    executor: Executor,
    ordinary: Callable[[], Any],
    check: Verifier,
    document: DocumentNode,
    operation_name: str | None,
) -> Any:
    # The compiled path first, as a request would run it; then graphql-core over the
    # same snapshot (and the same loaders). A value read from the clock (a signed link's
    # expiry, to the second) may differ when the two runs straddle a second: a
    # difference counts only when a second pair of runs, right after, differs too.
    tries = 2
    for attempt in range(1, tries + 1):
        try:
            compiled = await _Run(executor).execute()
        except _Fallback:
            compiled = None
        expected = ordinary()
        if executor.is_awaitable(expected):
            expected = await expected
        if compiled is None:
            return expected
        if check(expected, compiled, document, operation_name, attempt == tries):
            break
    return compiled


class _Slot:
    """A position in the response holding a list or an object (with its value and its
    response dict): where a null lands when an error below it reaches a non-null
    position. Its path is made only when asked for (a resolver's info, an error)."""

    __slots__ = (
        "_path",
        "container",
        "dead",
        "key",
        "nullable",
        "parent",
        "source",
        "target",
        "typename",
    )

    def __init__(
        self,
        container: Any,
        key: str | int,
        typename: str | None,
        nullable: bool,
        parent: _Slot | None,
        source: Any = None,
        target: dict[str, Any] | None = None,
    ) -> None:
        self.container = container
        self.key = key
        self.typename = typename
        self.nullable = nullable
        self.parent = parent
        self.source = source
        self.target: dict[str, Any] = target  # type: ignore[assignment]
        self.dead = False
        self._path: Path | None = None

    def path(self) -> Path | None:
        """graphql-core's path of this position (None for the root)."""
        if self._path is None and self.parent is not None:
            self._path = Path(self.parent.path(), self.key, self.typename)
        return self._path


class _Group(NamedTuple):
    """The objects of a level of one type, selected by the same fields."""

    type: GraphQLObjectType
    fields: Mapping[str, FieldDetailsList]
    items: list[_Slot]


_TYPENAME, _ATTRIBUTE, _RESOLVER = range(3)


class _Field:
    """One field of a group: what it is, and what every object of the group shares."""

    __slots__ = (
        "args",
        "args_error",
        "definition",
        "details",
        "direct",
        "getter",
        "kind",
        "leaf",
        "name",
        "nodes",
        "parent_type",
        "python_name",
        "response_name",
        "return_type",
    )

    def __init__(
        self,
        executor: Executor,
        parent_type: GraphQLObjectType,
        response_name: str,
        details: FieldDetailsList,
        definition: GraphQLField,
    ) -> None:
        first = details[0]
        self.parent_type = parent_type
        self.response_name = response_name
        self.details = details
        self.nodes: list[FieldNode] = [detail.node for detail in details]
        self.name = first.node.name.value
        self.definition = definition
        self.return_type: GraphQLOutputType = definition.type
        self.args: dict[str, Any] = {}
        self.args_error: Exception | None = None
        self.python_name = ""
        self.getter: Callable[[Any, str], Any] = getattr
        self.direct: Callable[[Any, GraphQLResolveInfo], Any] | None = None
        # A scalar or an enum (maybe non-null): (non-null, the leaf type) to complete it
        # without the general completion.
        self.leaf: tuple[bool, GraphQLLeafType] | None = None
        named = get_nullable_type(self.return_type)
        if is_leaf_type(named):
            self.leaf = (named is not self.return_type, named)
        strawberry_field = (definition.extensions or {}).get("strawberry-definition")
        if self.name == "__typename":
            self.kind = _TYPENAME
        elif (
            strawberry_field is not None
            and getattr(definition.resolve, "_is_default", False)
            and not executor.middleware_manager
        ):
            # A basic Strawberry field: its resolver only reads the attribute.
            self.kind = _ATTRIBUTE
            self.python_name = strawberry_field.python_name
            self.getter = strawberry_field.default_resolver
        else:
            self.kind = _RESOLVER
            if definition.args or first.node.arguments:
                # The arguments are the same for every object: coerced once. An error
                # is the error of the field on every object, as graphql-core reports it.
                try:
                    self.args = get_argument_values(
                        definition,
                        first.node,
                        executor.variable_values,
                        first.fragment_variable_values,
                        executor.hide_suggestions,
                    )
                except Exception as error:
                    self.args_error = error
            else:
                self.direct = _direct_resolver(executor.schema, strawberry_field)


def _direct_resolver(
    schema: GraphQLSchema, field: Any
) -> Callable[[Any, GraphQLResolveInfo], Any] | None:
    """The resolver of a Strawberry field without arguments, called as Strawberry's
    wrapper calls it (the object as ``self``, ``root`` or ``parent``, Strawberry's
    Info) but without the wrapper's argument conversion, which has nothing to convert.
    None when the wrapper does more: field extensions (permissions among them),
    exception handlers, a resolver taking arguments."""
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    resolver = getattr(field, "base_resolver", None)
    if strawberry_schema is None or resolver is None or field.extensions or field.arguments:
        return None
    handlers = strawberry_schema.schema_converter._get_field_exception_handlers(field)
    if handlers or not callable(resolver.wrapped_func):
        return None
    function = resolver.wrapped_func
    info_class = strawberry_schema.config.info_class
    takes_self = resolver.self_parameter is not None
    source_names = [
        parameter.name
        for parameter in (resolver.root_parameter, resolver.parent_parameter)
        if parameter is not None
    ]
    info_parameter = resolver.info_parameter
    info_name = info_parameter.name if info_parameter is not None else None

    def call(source: Any, info: GraphQLResolveInfo) -> Any:
        kwargs = dict.fromkeys(source_names, source)
        if info_name is not None:
            kwargs[info_name] = info_class(_raw_info=info, _field=field)
        return function(source, **kwargs) if takes_self else function(**kwargs)

    return call


class _Pending(NamedTuple):
    field: _Field
    item: _Slot
    info: GraphQLResolveInfo


class _Run:
    """One execution of one operation."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.schema = executor.schema
        self.errors = executor.collected_errors
        self.is_awaitable = executor.is_awaitable
        self.any_dead = False
        self.next_level: dict[tuple[int, int], _Group] = {}
        self.fields: dict[tuple[int, int, str], _Field | None] = {}

    async def execute(self) -> ExecutionResult:
        executor = self.executor
        operation = executor.operation
        root_type = self.schema.query_type
        if root_type is None or not executor.error_propagation:
            raise _Fallback
        try:
            grouped, _defers, _forbidden = collect_fields(
                self.schema,
                executor.fragments,
                executor.variable_values,
                root_type,
                operation,
                executor.hide_suggestions,
            )
        except RecursionError:
            raise _Fallback from None
        if any(details[0].node.name.value in _INTROSPECTION_FIELDS for details in grouped.values()):
            raise _Fallback
        holder: dict[str, Any] = {"data": {}}
        root = _Slot(holder, "data", None, True, None, executor.root_value, holder["data"])
        level = [_Group(root_type, grouped, [root])]
        while level:
            self.next_level = {}
            await self._level(level)
            level = list(self.next_level.values())
        return executor.build_response(holder["data"])  # type: ignore[return-value]

    # -- a level --------------------------------------------------------------------------

    async def _level(self, groups: list[_Group]) -> None:
        pending: list[_Pending] = []
        awaitables: list[Awaitable[Any]] = []
        build_info = self.executor.build_resolve_info
        for group in groups:
            parent_type = group.type
            type_name = parent_type.name
            for response_name, details in group.fields.items():
                field = self._field(parent_type, response_name, details)
                if field is None:
                    continue
                if field.kind == _TYPENAME:
                    for item in group.items:
                        item.target[response_name] = type_name
                    continue
                if field.kind == _ATTRIBUTE and field.leaf is not None:
                    self._leaves(field, group.items)
                    continue
                for item in group.items:
                    if self.any_dead and self._dead(item):
                        continue
                    target = item.target
                    try:
                        if field.kind == _ATTRIBUTE:
                            value = field.getter(item.source, field.python_name)
                            info = None
                        else:
                            path = Path(item.path(), response_name, type_name)
                            info = build_info(field.definition, field.nodes, parent_type, path)
                            if field.args_error is not None:
                                raise field.args_error
                            if field.direct is not None:
                                value = field.direct(item.source, info)
                            else:
                                value = field.definition.resolve(  # type: ignore[misc]
                                    item.source, info, **field.args
                                )
                            if self.is_awaitable(value):
                                # Keeps the key's place among its siblings until it is done.
                                target[response_name] = None
                                pending.append(_Pending(field, item, info))
                                awaitables.append(value)
                                continue
                        target[response_name] = self._complete(
                            field.return_type, value, field, target, response_name, type_name,
                            item, info, True,
                        )  # fmt: skip
                    except _Fallback:
                        _close(awaitables)
                        raise
                    except Exception as raw_error:
                        self._fail(raw_error, field.return_type, field, target, response_name,
                                   type_name, item)  # fmt: skip
        if not awaitables:
            return
        outcomes = await _drive(awaitables)
        for waiting, (ok, value) in zip(pending, outcomes, strict=True):
            field, item, info = waiting
            if self.any_dead and self._dead(item):
                continue
            name = field.response_name
            try:
                if not ok:
                    raise value
                item.target[name] = self._complete(
                    field.return_type, value, field, item.target, name, field.parent_type.name,
                    item, info, True,
                )  # fmt: skip
            except _Fallback:
                raise
            except Exception as raw_error:
                self._fail(raw_error, field.return_type, field, item.target, name,
                           field.parent_type.name, item)  # fmt: skip

    def _leaves(self, field: _Field, items: list[_Slot]) -> None:
        """An attribute holding a scalar or an enum, for every object of a group: the
        completion of a leaf, inlined (the path is made only for an error)."""
        non_null, leaf_type = field.leaf  # type: ignore[misc]
        coerce = leaf_type.coerce_output_value
        getter, python_name, response_name = field.getter, field.python_name, field.response_name
        check_dead = self.any_dead
        for item in items:
            if check_dead and self._dead(item):
                continue
            try:
                value = getter(item.source, python_name)
                if value is None or value is Undefined:
                    if non_null:
                        raise TypeError(
                            "Cannot return null for non-nullable field"
                            f" {field.parent_type}.{field.name}."
                        )
                    item.target[response_name] = None
                    continue
                if isinstance(value, Exception):
                    raise value
                coerced = coerce(value)
                if coerced is None or coerced is Undefined:
                    # graphql-core's own error for it
                    coerced = Executor.complete_leaf_value(leaf_type, value)
                item.target[response_name] = coerced
            except Exception as raw_error:
                self._fail(raw_error, field.return_type, field, item.target, response_name,
                           field.parent_type.name, item)  # fmt: skip
                check_dead = self.any_dead

    def _field(
        self, parent_type: GraphQLObjectType, response_name: str, details: FieldDetailsList
    ) -> _Field | None:
        key = (id(parent_type), id(details), response_name)
        try:
            return self.fields[key]
        except KeyError:
            pass
        definition = self.schema.get_field(parent_type, details[0].node.name.value)
        field = (
            None
            if definition is None
            else _Field(self.executor, parent_type, response_name, details, definition)
        )
        self.fields[key] = field
        return field

    # -- completing a value (graphql-core's complete_value, breadth first) --------------

    def _complete(
        self,
        return_type: GraphQLOutputType,
        value: Any,
        field: _Field,
        container: Any,
        key: str | int,
        typename: str | None,
        parent: _Slot,
        info: GraphQLResolveInfo | None,
        nullable: bool,
    ) -> Any:
        """The value at ``container[key]`` (a field of an object of type ``typename``, or
        an item of a list), below the position ``parent``."""
        if isinstance(value, Exception):
            raise value
        if isinstance(return_type, GraphQLNonNull):
            completed = self._complete(
                return_type.of_type, value, field, container, key, typename, parent, info, False
            )
            if completed is None:
                raise TypeError(
                    f"Cannot return null for non-nullable field {field.parent_type}.{field.name}."
                )
            return completed
        if value is None or value is Undefined:
            return None
        if isinstance(return_type, GraphQLList):
            return self._complete_list(
                return_type, value, field, container, key, typename, parent, info, nullable
            )
        if is_leaf_type(return_type):
            return Executor.complete_leaf_value(return_type, value)
        if is_abstract_type(return_type):
            if info is None:
                info = self._info(field, parent, key, typename)
            resolve_type = return_type.resolve_type or self.executor.type_resolver
            runtime_type = resolve_type(value, info, return_type)
            if self.is_awaitable(runtime_type):
                _close([runtime_type])
                raise _Fallback
            object_type = self.executor.ensure_valid_runtime_type(
                runtime_type,
                return_type,
                field.details,
                info,
                value,
            )
        else:
            object_type = return_type  # type: ignore[assignment]
        if object_type.is_type_of:
            if info is None:
                info = self._info(field, parent, key, typename)
            is_type_of = object_type.is_type_of(value, info)
            if self.is_awaitable(is_type_of):
                _close([is_type_of])
                raise _Fallback
            if not is_type_of:
                raise invalid_return_type_error(object_type, value, field.details)
        target: dict[str, Any] = {}
        group_key = (id(object_type), id(field.details))
        group = self.next_level.get(group_key)
        if group is None:
            subfields = self.executor.collect_subfields(object_type, field.details)
            group = self.next_level[group_key] = _Group(object_type, subfields[0], [])
        group.items.append(_Slot(container, key, typename, nullable, parent, value, target))
        return target

    def _complete_list(
        self,
        return_type: GraphQLList[Any],
        value: Any,
        field: _Field,
        container: Any,
        key: str | int,
        typename: str | None,
        parent: _Slot,
        info: GraphQLResolveInfo | None,
        nullable: bool,
    ) -> list[Any]:
        if self.executor.is_async_iterable(value):
            raise _Fallback
        if not is_iterable(value):
            raise GraphQLError(
                "Expected Iterable, but did not find one for field"
                f" '{field.parent_type}.{field.name}'."
            )
        item_type = return_type.of_type
        slot = _Slot(container, key, typename, nullable, parent)
        completed: list[Any] = []
        for index, item in enumerate(value):
            if self.is_awaitable(item):
                _close([item])
                raise _Fallback
            completed.append(None)
            try:
                completed[index] = self._complete(
                    item_type, item, field, completed, index, None, slot, info, True
                )
            except _Fallback:
                raise
            except Exception as raw_error:
                self._fail(raw_error, item_type, field, completed, index, None, slot)
        return completed

    def _info(
        self, field: _Field, parent: _Slot, key: str | int, typename: str | None
    ) -> GraphQLResolveInfo:
        """The info graphql-core gives the field: its path is the field's, also for the
        items of a list."""
        while typename is None:  # an item of a list: the list's position is the field's
            key, typename, parent = parent.key, parent.typename, parent.parent  # type: ignore[assignment]
        path = Path(parent.path(), key, typename)
        return self.executor.build_resolve_info(
            field.definition, field.nodes, field.parent_type, path
        )

    # -- errors ---------------------------------------------------------------------------

    def _fail(
        self,
        raw_error: Exception,
        return_type: GraphQLOutputType,
        field: _Field,
        container: Any,
        key: str | int,
        typename: str | None,
        parent: _Slot,
    ) -> None:
        """graphql-core's handle_field_error: a null here, or at the nearest nullable
        position above when this one may not be null; one error, unless a position
        above was nulled already."""
        if self.any_dead and self._dead(parent):
            return
        path = Path(parent.path(), key, typename)
        error = located_error(raw_error, field.nodes, path.as_list())
        if not isinstance(return_type, GraphQLNonNull):
            container[key] = None
            self.errors.add(error, path)
            return
        self.any_dead = True
        slot = parent
        while not slot.nullable:
            slot.dead = True
            slot = slot.parent  # type: ignore[assignment]  # the root is nullable
        slot.dead = True
        slot.container[slot.key] = None
        self.errors.add(error, slot.path())

    @staticmethod
    def _dead(slot: _Slot | None) -> bool:
        while slot is not None:
            if slot.dead:
                return True
            slot = slot.parent
        return False


async def _drive(awaitables: list[Awaitable[Any]]) -> list[tuple[bool, Any]]:
    """Run awaitables side by side in the current task, without a Task each.

    Each is stepped as a Task would step it: up to the future it waits on.
    Only once every one of them waits (so every DataLoader holds all of the
    level's keys) does the task wait, for whichever of those futures is done
    first, and step on each one whose future is done. The outcome of each is
    (True, its value) or (False, the exception it raised).
    """
    outcomes: list[tuple[bool, Any]] = [(True, None)] * len(awaitables)
    waiting: dict[int, tuple[Generator[Any, None, Any], Any]] = {}

    def step(index: int, iterator: Generator[Any, None, Any]) -> None:
        try:
            yielded = contexts[index].run(iterator.send, None)
        except StopIteration as done:
            outcomes[index] = (True, done.value)
        except Exception as error:
            outcomes[index] = (False, error)
        else:
            if yielded is not None:
                if not asyncio.isfuture(yielded):
                    # Not an asyncio future: only a Task knows how to wait for it.
                    raise _Fallback
                # Taken, as a Task takes it: the next awaitable waiting for the same
                # future (a DataLoader's cached key) may yield it too.
                yielded._asyncio_future_blocking = False
            waiting[index] = (iterator, yielded)

    iterators = [awaitable.__await__() for awaitable in awaitables]
    # Each runs in a context of its own, as in a Task of its own: a resolver that sets a
    # context variable (a transaction) never sees another's, nor leaves it behind.
    contexts = [contextvars.copy_context() for _ in awaitables]
    try:
        for index, iterator in enumerate(iterators):
            step(index, iterator)
        while waiting:
            futures = {future for _, future in waiting.values() if future is not None}
            if any(future is None for _, future in waiting.values()):
                # A bare yield (asyncio.sleep(0)): give the loop one turn, as a Task does.
                await asyncio.sleep(0)
            else:
                # One awaitable may wait for another (a lock one of them holds): each
                # goes on as soon as its own future is done, never after all of them.
                await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            ready = [
                (index, iterator, future)
                for index, (iterator, future) in waiting.items()
                if future is None or future.done()
            ]
            for index, iterator, _ in ready:
                del waiting[index]
                step(index, iterator)
    finally:
        # Those left unfinished by an error or a cancellation (closing a finished one
        # does nothing). One that awaits in its cleanup cannot finish it here.
        for iterator in iterators:
            with contextlib.suppress(RuntimeError):
                iterator.close()
    return outcomes


def _close(awaitables: list[Any]) -> None:
    """Close coroutines that will never be awaited (no warning, their finally blocks run)."""
    for awaitable in awaitables:
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()
