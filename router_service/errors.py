"""Errors of the router service, each with its HTTP status and whether a retry may help."""

from __future__ import annotations

from typing import Any, ClassVar


class RouterError(Exception):
    """Root of every error the service raises on purpose."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, *, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value

    def to_body(self) -> dict[str, Any]:
        """The JSON error body: a code, a message and, where known, the offending field."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
            error["value"] = self.value
        return {"error": error}


class NotFound(RouterError):
    status_code = 404
    code = "not_found"


class InvalidRequest(RouterError):
    status_code = 422
    code = "invalid_request"


class Conflict(RouterError):
    status_code = 409
    code = "conflict"


class ConfigError(RouterError):
    """A setting or configuration file is wrong; raised at startup or on reload."""

    code = "config_error"


class Unavailable(RouterError):
    status_code = 503
    code = "unavailable"
    retriable = True
