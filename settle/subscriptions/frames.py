"""One event, executed and encoded once for every subscriber that would get the same frame.

The bus hands the same message to every local subscriber of a channel, and the
subscription resolvers shape it once per event (``once_per_event``), so the
subscribers of one event share one root object. What Strawberry still does per
subscriber is the costly part of a fan-out: execute the operation's selection set
on that object, then JSON-encode the ``next`` frame. Here both happen once per
group of subscribers whose frames cannot differ:

- ``SharedEventExecutor`` executes an event once per (root object, document text,
  operation name, variables, audience) and hands the same ``ExecutionResult`` to
  the rest of the group. The audience is what a result may depend on of its
  caller: the agency and client its loaders are scoped to, the role that
  permission checks read, and the user (a signed file link names its reader), so
  a result is shared by the sockets of one user: a dashboard open in several
  tabs, or one service account's many subscriptions. A result with errors is not
  shared: each subscriber executes, and its errors are processed (logged, masked)
  as its own.
- ``SharedFrameHandler`` encodes a ``next`` payload once per result and splices
  each socket's operation id in front of the same bytes.

Who hears an event is still decided per subscriber, before any of this: the
resolver's audience filter, the resume cursor, and the slow-consumer bound all run
as before; only identical work is shared.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Hashable
from typing import Any

from graphql import ExecutionResult, OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message

# Events kept per cache: an entry lives while later events of a busy process arrive,
# long enough for all subscribers of one event to take their turn.
_KEPT = 256

# (root object, key) -> (root object, result): the entry holds its root object, so
# the object's id is never reused while its entry is cached.
_results: OrderedDict[tuple[int, Hashable], tuple[Any, ExecutionResult]] = OrderedDict()
# id(data) -> (data, encoded payload): the same holding rule.
_payloads: OrderedDict[int, tuple[Any, str]] = OrderedDict()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > _KEPT:
        cache.popitem(last=False)


def _audience(context: Any) -> Hashable:
    actor = getattr(context, "actor", None)
    if actor is None:
        return None
    # The user too: a result may hold what is signed for its reader (a file's link
    # names the user it was made for), so only one user's sockets share it.
    return (actor.agency_id, actor.client_id, actor.role, actor.user_id)


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Executes a subscription event once per group of subscribers with the same frame."""

    def _group(self) -> Hashable | None:
        operation = self.operation
        if operation.operation is not OperationType.SUBSCRIPTION or operation.loc is None:
            return None
        try:
            variables = json.dumps(self.variable_values.coerced, sort_keys=True, default=repr)
        except (TypeError, ValueError):
            return None
        name = operation.name.value if operation.name is not None else None
        return (operation.loc.source.body, name, variables, _audience(self.context_value))

    def execute_operation(self, serially: bool | None = None) -> Any:
        # Only a subscription's per-event executor runs a subscription operation here;
        # the subscription's own executor creates the event stream instead.
        group = self._group()
        if group is None:
            return super().execute_operation(serially)
        root = self.root_value
        slot = (id(root), group)
        hit = _results.get(slot)
        if hit is not None and hit[0] is root:
            _results.move_to_end(slot)
            return hit[1]
        result = super().execute_operation(serially)
        if self.is_awaitable(result):
            return self._keep_when_done(slot, root, result)
        self._keep(slot, root, result)
        return result

    async def _keep_when_done(
        self, slot: tuple[int, Hashable], root: Any, pending: Awaitable[Any]
    ) -> Any:
        result = await pending
        self._keep(slot, root, result)
        return result

    @staticmethod
    def _keep(slot: tuple[int, Hashable], root: Any, result: Any) -> None:
        if isinstance(result, ExecutionResult) and not result.errors and not result.extensions:
            _remember(_results, slot, (root, result))


class SharedFrameHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """Sends a ``next`` frame as the payload encoded once, behind this socket's id."""

    async def send_message(self, message: Message) -> None:
        encode = getattr(self.view, "encode_json", None)
        if message["type"] != "next" or encode is None:
            await super().send_message(message)
            return
        next_message = message
        payload = next_message["payload"]
        if payload.keys() != {"data"}:
            await super().send_message(message)
            return
        data = payload["data"]
        hit = _payloads.get(id(data))
        if hit is not None and hit[0] is data:
            encoded = hit[1]
        else:
            encoded = encode(payload)
            if not isinstance(encoded, str):
                await super().send_message(message)
                return
            _remember(_payloads, id(data), (data, encoded))
        # What encoding the whole message gives, key order and separators included.
        frame = f'{{"id":{encode(next_message["id"])},"type":"next","payload":{encoded}}}'
        await self.websocket.send_text(frame)  # type: ignore[attr-defined]
