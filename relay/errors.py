"""Errors that carry their answer: an HTTP status and a stable machine-readable code."""

from __future__ import annotations

__all__ = ["BadRequest", "Conflict", "NotFound", "RelayError", "Unavailable"]


class RelayError(Exception):
    """A refusal the caller deserves to hear about, as `{"error": code, "detail": text}`."""

    status = 500
    code = "internal"

    def __init__(self, detail: str, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class BadRequest(RelayError):
    status = 422
    code = "invalid"


class NotFound(RelayError):
    status = 404
    code = "not_found"


class Conflict(RelayError):
    status = 409
    code = "conflict"


class Unavailable(RelayError):
    status = 503
    code = "store_unavailable"
