"""The per-request (or per-websocket) context every resolver receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

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

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None or self._loaders.actor is not self.actor:
            self._loaders = Loaders(self.actor, cache=self.cache_loaders)
        return self._loaders


Info = StrawberryInfo[Context, None]
