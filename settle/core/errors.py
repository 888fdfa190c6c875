"""Domain errors: expected failures with a stable, upper-snake-case code.

Services raise these; resolvers map them to the schema's error types. Anything
else that escapes a resolver is unexpected, logged and masked.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """An expected failure that the API reports as a typed error."""

    code: ClassVar[str] = "APP_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(AppError):
    code = "VALIDATION_ERROR"

    def __init__(self, field: str | None, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        if code is not None:
            self.code = code  # type: ignore[misc]


class NotFoundError(AppError):
    code = "NOT_FOUND"

    def __init__(self, entity: str, entity_id: Any = None) -> None:
        super().__init__(f"{entity} not found")
        self.entity = entity
        self.entity_id = entity_id


class PermissionDeniedError(AppError):
    code = "PERMISSION_DENIED"

    def __init__(self, message: str = "You are not allowed to do this") -> None:
        super().__init__(message)


class ConflictError(AppError):
    code = "CONFLICT"


class AuthenticationError(AppError):
    """Credentials or a token were wrong; never says which part."""

    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "Invalid email or password") -> None:
        super().__init__(message)


class InvalidTransitionError(AppError):
    code = "INVALID_TRANSITION"

    def __init__(self, entity: str, current: str, target: str) -> None:
        super().__init__(f"{entity} cannot move from {current} to {target}")
        self.current = current
        self.target = target


class AccessLockedError(AppError):
    """Content the caller may not open yet (or any more); ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]
