"""The closed set of error codes every Tether reply can carry.

A reply's ``error.code`` is always one of :class:`ErrorCode`. Callers branch on the code;
the message is for people and says what was wrong and what to do. Adding a code is an API
change (document it in docs/api.md via ``tether api-docs``); renaming one is a breaking change.

Each code has one exception class. Services raise these; the worker boundary turns them into
reply errors, and anything else into ``internal`` (logged once, with its traceback).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_SERVICE = "unknown_service"
    UNKNOWN_ACTION = "unknown_action"
    SERVICE_UNAVAILABLE = "service_unavailable"
    TIMEOUT = "timeout"
    BUSY = "busy"
    LOCKED = "locked"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    EXPIRED = "expired"
    AUTH_FAILED = "auth_failed"
    ENGINE_MISSING = "engine_missing"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERNAL = "internal"


#: What each code means to a caller; rendered into docs/api.md.
ERROR_DOCS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_REQUEST: "The command is malformed or an argument is invalid; fix the "
    "request (details name the field). Retrying unchanged will fail again.",
    ErrorCode.UNKNOWN_SERVICE: "No such service on this device; see the capabilities topic.",
    ErrorCode.UNKNOWN_ACTION: "The service has no such action; see the capabilities topic.",
    ErrorCode.SERVICE_UNAVAILABLE: "The service (or the backend it drives, e.g. Docker or "
    "NetworkManager) is not running right now; retry later.",
    ErrorCode.TIMEOUT: "The service did not answer in time; the action may still complete.",
    ErrorCode.BUSY: "Too many commands in flight for this service, or an exclusive job is "
    "running; retry later.",
    ErrorCode.LOCKED: "A system lock (e.g. the dpkg lock) is held by another program.",
    ErrorCode.NOT_FOUND: "The named thing (package, container, connection, job...) does not exist.",
    ErrorCode.CONFLICT: "The request clashes with the current state (e.g. a name in use).",
    ErrorCode.FORBIDDEN: "The device's configuration does not allow this action.",
    ErrorCode.TOO_LARGE: "The command payload is larger than the device accepts.",
    ErrorCode.EXPIRED: "The command's expiry time passed before it could run; it was not run.",
    ErrorCode.AUTH_FAILED: "Credentials were rejected (registry login, Wi-Fi password...).",
    ErrorCode.ENGINE_MISSING: "The backend this service needs is not installed; details say "
    "how to get it.",
    ErrorCode.CANCELLED: "The job was cancelled before it completed.",
    ErrorCode.FAILED: "The action ran and failed; details carry the reason and output.",
    ErrorCode.INTERNAL: "A bug in Tether; the device logs have the traceback. Please report it.",
}


class TetherError(Exception):
    """Base of every error that becomes a coded reply."""

    code: ClassVar[ErrorCode] = ErrorCode.FAILED

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(TetherError):
    code = ErrorCode.INVALID_REQUEST


class UnknownService(TetherError):
    code = ErrorCode.UNKNOWN_SERVICE


class UnknownAction(TetherError):
    code = ErrorCode.UNKNOWN_ACTION


class ServiceUnavailable(TetherError):
    code = ErrorCode.SERVICE_UNAVAILABLE


class Timeout(TetherError):
    code = ErrorCode.TIMEOUT


class Busy(TetherError):
    code = ErrorCode.BUSY


class Locked(TetherError):
    code = ErrorCode.LOCKED


class NotFound(TetherError):
    code = ErrorCode.NOT_FOUND


class Conflict(TetherError):
    code = ErrorCode.CONFLICT


class Forbidden(TetherError):
    code = ErrorCode.FORBIDDEN


class TooLarge(TetherError):
    code = ErrorCode.TOO_LARGE


class Expired(TetherError):
    code = ErrorCode.EXPIRED


class AuthFailed(TetherError):
    code = ErrorCode.AUTH_FAILED


class EngineMissing(TetherError):
    code = ErrorCode.ENGINE_MISSING


class Cancelled(TetherError):
    code = ErrorCode.CANCELLED


class Failed(TetherError):
    code = ErrorCode.FAILED


class Internal(TetherError):
    code = ErrorCode.INTERNAL
