"""The one exception tree of nextbest.

    NextbestError
    ├── InputError              bad input from a caller: 4xx, nothing changed
    │   ├── ValidationError     a field is wrong; carries the field path  -> 400
    │   │   └── VocabularyError a valid Segment message that breaks the bank's
    │   │                       event vocabulary: quarantined on its own, the rest of
    │   │                       its batch accepted (200, listed under ``rejected``)
    │   ├── UnsupportedMediaType a body that is not JSON                   -> 415
    │   ├── LimitExceeded       a request would take a customer past a limit
    │   │                       (devices linked, traits held)             -> 409
    │   ├── Conflict            a write against a changed record (a stale version,
    │   │   │                   an id taken, a move its state forbids)    -> 409
    │   │   ├── SlotTaken       a booking past an advisor's capacity at a slot -> 409
    │   │   └── InFlight        a second callback of a customer about a topic while
    │   │                       one is in flight                          -> 409
    │   ├── PayloadTooLarge     body over the configured limit            -> 413
    │   ├── UnknownPlacement    decide for a placement the catalog lacks  -> 404
    │   └── NotFound            a named thing does not exist              -> 404
    ├── AuthError               no or bad credentials                     -> 401
    │   └── Forbidden           credentials lack the route's scope        -> 403
    ├── RateLimited             a key or browser session over its rate    -> 429
    ├── CatalogError            catalog YAML invalid (file, line, reason)            -> 422
    ├── RuleError               a CEL rule does not compile or names an unknown root
    ├── ConfigError             a setting (NEXTBEST_*) is malformed
    ├── NotServed               this kind of server does not serve the feature asked
    │                           (callbacks on a scaled API worker)        -> 501
    ├── ErasurePending          a scaled erasure still under way: the route answers 202
    │                           with its receipt (``scaled_erasure``)
    ├── StoreError              the storage adapter failed (I/O)          -> 503
    │   ├── StoreUnavailable    the backend cannot be reached             -> 503
    │   └── StateLost           saved state vanished under its writer (Redis flushed
    │                           or restarted empty): nothing written, save it whole
    └── RemoteError             a nextbest server a client drives (``sim evaluate --target``)
                                refused a request or cannot be reached

Adapters translate driver errors into StoreError with ``raise ... from exc``;
the HTTP face maps this tree to status codes in one table.
"""

from __future__ import annotations

import enum
import re

__all__ = [
    "AuthError",
    "CatalogError",
    "CatalogProblem",
    "ConfigError",
    "Conflict",
    "ErasurePending",
    "Forbidden",
    "InFlight",
    "InputError",
    "LimitExceeded",
    "NextbestError",
    "NotFound",
    "NotServed",
    "PayloadTooLarge",
    "RateLimited",
    "RemoteError",
    "RuleError",
    "Severity",
    "SlotTaken",
    "StateLost",
    "StoreError",
    "StoreUnavailable",
    "UnknownPlacement",
    "UnsupportedMediaType",
    "ValidationError",
    "VocabularyError",
    "split_msgspec_message",
]


class NextbestError(Exception):
    """Base of every error nextbest raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(NextbestError):
    """The caller sent something wrong; nothing was changed."""

    code = "invalid_input"


class ValidationError(InputError):
    """A field failed validation. ``path`` is a JSONPath such as ``$.batch[2].timestamp``."""

    code = "validation_error"

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return f"{self.message} (at {self.path})"

    @classmethod
    def from_msgspec(cls, exc: Exception, prefix: str = "$") -> ValidationError:
        """Translate msgspec's "reason - at `$.a.b`" into a reason and a field path under
        ``prefix``; a missing field points at the field itself, not its parent."""
        reason, path = split_msgspec_message(str(exc))
        return cls(reason, prefix + path[1:])


_MSGSPEC_AT = re.compile(r"^(?P<reason>.*?)(?: - at `(?:key` in `)?(?P<path>\$[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")


def split_msgspec_message(text: str) -> tuple[str, str]:
    """("Expected `int`, got `str`", "$.x") from msgspec's "Expected ... - at `$.x`"."""
    match = _MSGSPEC_AT.match(text)
    assert match is not None  # the pattern matches any text
    reason, path = match.group("reason"), match.group("path") or "$"
    missing = _MISSING.match(reason)
    if missing is not None:
        path = f"{path}.{missing.group(1)}"
    return reason, path


class VocabularyError(ValidationError):
    """A well-formed Segment message that breaks the bank's vocabulary: a named event
    without a property the engine needs or with one of the wrong type, or feedback that
    answers no decision of its customer. Such a message is quarantined on its own (stored
    with this reason) while the rest of its batch is accepted. ``code`` says which rule."""

    def __init__(self, message: str, path: str = "$", code: str = "vocabulary") -> None:
        super().__init__(message, path)
        self.code = code


class LimitExceeded(InputError):
    """A request would take a customer past a limit of the catalog's ``profile`` section
    (devices linked, traits held): nothing of it is stored. ``path`` names the field."""

    code = "limit_exceeded"

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.path = path


class Conflict(InputError):
    """A write that lost a race or that the record's state forbids: a callback saved
    against a version that changed meanwhile (two advisors accepting at once), an id that
    is taken, a move its state machine does not allow. Nothing was written; read again."""

    code = "conflict"


class SlotTaken(Conflict):
    """A booking that would take an advisor past their capacity (max concurrent callbacks)
    at that slot, or right now: another request got there first. Nothing was written."""

    code = "slot_taken"


class InFlight(Conflict):
    """A new callback of a customer about a topic while another of theirs about it is not
    final (``callback_id``, when the store knows it): a customer has one in flight per
    topic. Nothing was written."""

    code = "in_flight"

    def __init__(self, message: str, callback_id: str | None = None) -> None:
        super().__init__(message)
        self.callback_id = callback_id


class UnsupportedMediaType(InputError):
    code = "unsupported_media_type"


class PayloadTooLarge(InputError):
    code = "payload_too_large"


class NotFound(InputError):
    code = "not_found"


class UnknownPlacement(NotFound):
    code = "unknown_placement"


class AuthError(NextbestError):
    code = "unauthorized"


class Forbidden(AuthError):
    code = "forbidden"


class RateLimited(NextbestError):
    """A key, or a browser session (its customer token's user or its anonymousId), sent
    more requests than its rate allows; ``retry_after``: seconds until one more is
    allowed. Nothing was read or changed."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Severity(enum.StrEnum):
    """How bad a catalog problem is: an error refuses the catalog, a warning is printed and
    the catalog still loads (it may show nothing where a marketer expects something)."""

    ERROR = "error"
    WARNING = "warning"


class CatalogProblem:
    """One problem found in a catalog: where it is (file, line, column when known, field
    path), what is wrong, and whether it refuses the catalog (``severity``)."""

    __slots__ = ("column", "file", "line", "path", "reason", "severity")

    def __init__(
        self,
        file: str,
        line: int | None,
        path: str,
        reason: str,
        severity: Severity = Severity.ERROR,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.path = path
        self.reason = reason
        self.severity = severity
        self.column = column

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        label = "warning: " if self.severity is Severity.WARNING else ""
        return f"{where}: {label}{self.path}: {self.reason}"

    def __repr__(self) -> str:
        return f"CatalogProblem({self!s})"


class CatalogError(NextbestError):
    """The catalog does not load; ``problems`` lists every problem found (errors, then the
    warnings found alongside them)."""

    code = "catalog_error"

    def __init__(self, problems: list[CatalogProblem], message: str | None = None) -> None:
        errors = [p for p in problems if p.is_error] or problems
        super().__init__(message or "; ".join(str(p) for p in errors) or "invalid catalog")
        self.problems = problems


class RuleError(NextbestError):
    """A rule does not parse, or names a root that rules may not use."""

    code = "rule_error"


class ConfigError(NextbestError):
    """A setting is malformed; raised at start, never per request."""

    code = "config_error"


class NotServed(NextbestError):
    """What was asked is not served by this kind of server (a scaled API worker asked for
    callbacks, which the embedded engine serves): the message says where it is."""

    code = "not_served"


class ErasurePending(NextbestError):
    """A scaled erasure's command is on the bus and the fold worker has not recorded its
    outcome yet (``scaled_erasure``): the HTTP face answers 202 with the ``receipt`` whose
    status ``GET /v1/erasures/{receipt}`` reads."""

    code = "erasure_pending"

    def __init__(self, receipt: str) -> None:
        super().__init__(
            "the erasure is under way: the fold worker has not finished it yet; read its "
            f"status at /v1/erasures/{receipt}"
        )
        self.receipt = receipt


class StoreError(NextbestError):
    code = "store_error"


class StoreUnavailable(StoreError):
    code = "store_unavailable"


class StateLost(StoreError):
    """A save of changed rows found the saved state gone (Redis flushed, or restarted
    without its data): writing only the changes would leave a state that lacks the rest.
    Nothing was written; the writer saves its whole state instead."""

    code = "state_lost"


class LeaseLost(StoreError):
    """A save by a fold worker found a partition's lease held by another worker, or expired
    (the worker stalled past it): nothing was written; the worker stops folding its
    partitions and takes back only the leases it can (docs/scale-out.md)."""

    code = "lease_lost"


class RemoteError(NextbestError):
    """A nextbest server driven over HTTP (the simulator's ``--target``) answered with an
    error, or could not be reached; ``status`` is the HTTP status (0: no answer)."""

    code = "remote_error"

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
