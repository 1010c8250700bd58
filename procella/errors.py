"""The domain's exceptions. No HTTP here: ``procella.api.errors`` maps them to statuses.

ProcellaError
├── ConfigurationError          settings that cannot work (raised at start-up)
├── BadRequest                  input the protocol does not allow
│   ├── InvalidName             a stack, project, org or tag name the CLI's rules reject
│   └── PayloadTooLarge         a body over the configured limits
├── Unauthorized                no credentials, or unknown ones
├── Forbidden                   credentials without the needed role
│   └── LeaseInvalid            an update token that is expired, cancelled or foreign
├── NotFound                    stack, update, org, checkpoint version, ...
├── Conflict                    the request collides with the current state
│   ├── AlreadyExists           a stack of that name exists
│   ├── UpdateConflict          another update holds the stack
│   └── StackNotEmpty           a stack with resources deleted without force (a 400 for the CLI)
└── TransientStoreError         the database failed in a way a retry can fix
"""

from __future__ import annotations


class ProcellaError(Exception):
    """Base of every error Procella raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(ProcellaError):
    """The settings cannot work."""


class BadRequest(ProcellaError):
    """The input is malformed or breaks a protocol rule."""


class InvalidName(BadRequest):
    """A name the Pulumi CLI's own rules would reject."""


class PayloadTooLarge(BadRequest):
    """A request body over the configured limits."""


class Unauthorized(ProcellaError):
    """Missing or unknown credentials."""


class Forbidden(ProcellaError):
    """Known credentials without the needed permission."""


class LeaseInvalid(Forbidden):
    """An update token that does not (or no longer) grant access to its update."""


class NotFound(ProcellaError):
    """The named thing does not exist, or the caller may not know that it does."""


class Conflict(ProcellaError):
    """The request collides with the current state."""


class AlreadyExists(Conflict):
    """Something of that name exists already."""


class UpdateConflict(Conflict):
    """Another update holds the stack."""


class StackNotEmpty(Conflict):
    """The stack still has resources and the delete was not forced."""


class TransientStoreError(ProcellaError):
    """A database failure that a retry of the whole request can fix.

    ``cause`` is a short name chosen by the raiser from a fixed set (``deadlock``,
    ``pool_timeout``, ``blob_store``, ...): it labels the 503 in the metrics.
    """

    def __init__(self, message: str, cause: str = "other") -> None:
        super().__init__(message)
        self.cause = cause
