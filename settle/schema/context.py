"""The per-request (or per-websocket) context every resolver receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from strawberry.types import Info as StrawberryInfo

from settle.core.db import ReadSnapshot, current_snapshot
from settle.core.settings import Settings
from settle.core.tenancy import Actor
from settle.resolvers.loaders import Loaders


@dataclass
class Context:
    settings: Settings
    request: Any
    response: Any = None
    actor: Actor | None = None
    request_id: str | None = None
    # Websocket contexts live as long as the connection: caching would serve stale rows.
    cache_loaders: bool = True
    connection_params: dict[str, Any] | None = None
    _loaders: Loaders | None = field(default=None, repr=False)
    _snapshot_loaders: WeakKeyDictionary[ReadSnapshot, Loaders] = field(
        default_factory=WeakKeyDictionary, repr=False
    )

    @property
    def loaders(self) -> Loaders:
        snapshot = current_snapshot()
        if snapshot is not None:
            # A websocket runs its operations side by side in one context: a batch must
            # read the snapshot of the operation that asked, so each has its own loaders.
            loaders = self._snapshot_loaders.get(snapshot)
            if loaders is None or loaders.actor is not self.actor:
                loaders = Loaders(self.actor, cache=self.cache_loaders)
                self._snapshot_loaders[snapshot] = loaders
            return loaders
        if self._loaders is None or self._loaders.actor is not self.actor:
            self._loaders = Loaders(self.actor, cache=self.cache_loaders)
        return self._loaders


Info = StrawberryInfo[Context, None]
