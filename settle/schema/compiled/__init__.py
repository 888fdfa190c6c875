"""The compiled read path: query operations executed level by level over whole batches.

``execute`` takes the place of graphql-core's ``execute`` in the Schema (see
``SettleSchema``): every extension (limits, input checks, introspection gate,
error masking, the read snapshot) runs around it exactly as before, and it
answers with the same ``ExecutionResult``. Anything it does not run (a
mutation, a subscription, introspection, a schema with resolver middleware, a
setting that turns it off) goes to graphql-core's executor.
"""

from settle.schema.compiled.executor import execute

__all__ = ["execute"]
