"""The error tree. Each class maps to one HTTP status and machine code of protocol.md §3.

    StoreError                 500 internal (never raised for bad input)
    ├── BadRequest             400 bad_request
    ├── Unauthorized           401 unauthorized
    ├── Forbidden              403 forbidden
    ├── NotFound               404 not_found
    ├── RequestTimeout         408 bad_request (the request did not arrive in time)
    ├── Conflict               409 conflict
    │   ├── LeaseLost          409 lease_lost (the worker no longer holds the job)
    │   └── SlotTaken          409 slot_taken (another worker holds the worker slot)
    ├── TooLarge               413 too_large
    ├── UriTooLong             414 too_large
    ├── UnsupportedMediaType   415 unsupported_media_type
    ├── TooMany                429 too_many (carries retry_after seconds)
    ├── HeadersTooLarge        431 too_large
    └── Unavailable            503 unavailable

A class's docstring is its default message; raise with a sentence that says what was wrong and,
where it can, how to fix it.
"""

from __future__ import annotations


class StoreError(Exception):
    """The store failed to handle the request."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        super().__init__(self.message)


class BadRequest(StoreError):
    """The request is malformed."""

    status = 400
    code = "bad_request"


class Unauthorized(StoreError):
    """A valid token is required: send it as 'Authorization: Bearer <token>'."""

    status = 401
    code = "unauthorized"


class Forbidden(StoreError):
    """The token does not allow this request."""

    status = 403
    code = "forbidden"


class NotFound(StoreError):
    """No such resource."""

    status = 404
    code = "not_found"


class Conflict(StoreError):
    """The request conflicts with the stored state."""

    status = 409
    code = "conflict"


class LeaseLost(Conflict):
    """The lease does not hold this job any more: stop working on it."""

    code = "lease_lost"


class SlotTaken(Conflict):
    """Another worker holds this datasource's worker slot."""

    code = "slot_taken"


class TooLarge(StoreError):
    """The request body is larger than the store accepts."""

    status = 413
    code = "too_large"


class UriTooLong(StoreError):
    """The request line is longer than the store accepts: shorten the URL."""

    status = 414
    code = "too_large"


class HeadersTooLarge(StoreError):
    """The request headers are larger than the store accepts: send fewer or shorter headers."""

    status = 431
    code = "too_large"


class RequestTimeout(StoreError):
    """The request did not arrive in time; it was not processed."""

    status = 408
    code = "bad_request"


class UnsupportedMediaType(StoreError):
    """The request body must be JSON: send 'Content-Type: application/json'."""

    status = 415
    code = "unsupported_media_type"


class TooMany(StoreError):
    """Too many requests: slow down and retry after the time in 'Retry-After'."""

    status = 429
    code = "too_many"

    def __init__(self, message: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(StoreError):
    """The store is unavailable (shutting down or its database is unreachable); retry later."""

    status = 503
    code = "unavailable"
