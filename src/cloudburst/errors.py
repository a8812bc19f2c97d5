"""The one error tree of cloudburst.

Every error the core raises derives from :class:`CloudburstError`. Each class
carries the OpenNebula API error code it maps to, so the XML-RPC layer turns an
exception into ``[false, message, code]`` with one table lookup and no
``isinstance`` ladders::

    CloudburstError                     (INTERNAL 0x2000)
    ├── AuthenticationError             (AUTHENTICATION 0x0100)
    ├── AuthorizationError              (AUTHORIZATION 0x0200)
    │   └── QuotaError                  beyond a quota
    │       └── QuotaActionError        (ACTION 0x0800) an action on a VM beyond one
    ├── NotFoundError                   (NO_EXISTS 0x0400)
    ├── IllegalActionError              (ACTION 0x0800)  wrong state for the action
    │   ├── StateRefusedError           the transition table has no such move
    │   └── ConflictError               a compare-and-swap lost a race
    ├── LockedError                     (AUTHORIZATION 0x0200, as oned) the object is locked
    ├── ApiArgumentError                (XML_RPC_API 0x1000) bad parameters
    ├── TemplateError                   (INTERNAL 0x2000) template cannot be parsed
    │   └── TemplateSyntaxError         with line, column and what was expected
    ├── ExpressionError                 REQUIREMENTS / RANK cannot be parsed
    ├── ValidationError                 (ALLOCATE 0x4000) well-formed but unacceptable
    │   └── PoolNameError               (INTERNAL 0x2000, as oned) NAME empty or in use
    ├── ConfigError                     a configuration file is wrong (file, line)
    ├── StoreInUseError                 another daemon already uses the SQLite store
    ├── LeaseLostError                  a deposed leader's write, fenced by its epoch
    ├── StoreUnavailableError           the store cannot take the write (named cause)
    │   └── StoreLostError              the store was deleted or replaced: no more writes
    └── DriverError                     a driver could not do what it was asked
        ├── TransientDriverError        worth retrying (throttled, 5xx, network)
        │   └── DriverTimeoutError      the action overran its time limit
        ├── CapacityError               the site is full: place the VM elsewhere
        ├── DriverAuthError             credentials refused (never echoes them)
        ├── InstanceNotFoundError       the provider has no such instance
        └── UnsupportedActionError      the driver does not implement the action

Messages are written for the operator: they name the object, the value and the
rule that was broken, in one line, and never contain credentials.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """OpenNebula's XML-RPC error codes (``include/Request.h``)."""

    SUCCESS = 0x0000
    AUTHENTICATION = 0x0100
    AUTHORIZATION = 0x0200
    NO_EXISTS = 0x0400
    ACTION = 0x0800
    XML_RPC_API = 0x1000
    INTERNAL = 0x2000
    ALLOCATE = 0x4000
    LOCKED = 0x8000


class CloudburstError(Exception):
    """Base of every cloudburst error; ``code`` is the API error code."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class AuthenticationError(CloudburstError):
    """The session string does not name a user with that password."""

    code = ErrorCode.AUTHENTICATION


class AuthorizationError(CloudburstError):
    """The user is known but may not perform the operation."""

    code = ErrorCode.AUTHORIZATION


class QuotaError(AuthorizationError):
    """An allocation or placement would go beyond a quota (the message names it);
    ``budget`` when the quota is a money budget."""

    def __init__(self, message: str, *, budget: bool = False) -> None:
        super().__init__(message)
        self.budget = budget


class QuotaActionError(QuotaError):
    """An action on an existing VM (``resume``) would go beyond a RUNNING_* quota;
    oned answers it as an action error, not an authorization one."""

    code = ErrorCode.ACTION


class NotFoundError(CloudburstError):
    """An object (VM, host, template, user) does not exist."""

    code = ErrorCode.NO_EXISTS


class IllegalActionError(CloudburstError):
    """The action is not available in the object's current state."""

    code = ErrorCode.ACTION


class StateRefusedError(IllegalActionError):
    """The VM's state has no move for the action (the transition table says so).

    ``action`` is the action's name, ``state`` the state as oned names it in its
    refusal: the LCM state of an ACTIVE VM (``RUNNING``), else the VM state
    (``HOLD``). The message names both for logs and the dashboard.
    """

    def __init__(self, message: str, *, action: str, state: str) -> None:
        super().__init__(message)
        self.action = action
        self.state = state


class ConflictError(IllegalActionError):
    """Another action changed the object first (compare-and-swap failed)."""


class LockedError(CloudburstError):
    """The object is locked (``one.vm.lock``) against the operation.

    oned refuses an operation on a locked object as an authorization failure
    (0x0200, pyone's ``OneAuthorizationException``), and so does cloudburst.
    """

    code = ErrorCode.AUTHORIZATION


class ApiArgumentError(CloudburstError):
    """An API call received parameters of the wrong type or range."""

    code = ErrorCode.XML_RPC_API


class TemplateError(CloudburstError):
    """A template (OpenNebula syntax or XML) cannot be parsed."""

    code = ErrorCode.INTERNAL


class TemplateSyntaxError(TemplateError):
    """A syntax error at a known position of a template."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{message} at line {line}, column {column}")
        self.line = line
        self.column = column


class ExpressionError(CloudburstError):
    """A REQUIREMENTS or RANK expression cannot be parsed."""

    code = ErrorCode.INTERNAL


class ValidationError(CloudburstError):
    """Input is well-formed but unacceptable (e.g. ``MEMORY`` missing)."""

    code = ErrorCode.ALLOCATE


class PoolNameError(ValidationError):
    """A new object's ``NAME`` is empty or another object of the pool has it
    ("NAME is already taken by HOST 3.").

    oned answers these refusals with ``INTERNAL`` (0x2000), not ``ALLOCATE``; pyone
    clients tell them apart by that code, so cloudburst answers the same.
    """

    code = ErrorCode.INTERNAL


class ConfigError(CloudburstError):
    """A configuration file is wrong; the message names file, line and problem."""

    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class StoreInUseError(CloudburstError):
    """A SQLite store already has its daemon; only PostgreSQL stores are shared."""


class LeaseLostError(CloudburstError):
    """This daemon lost the leader lease; the write was refused (fenced) unapplied."""


class StoreUnavailableError(CloudburstError):
    """The store cannot take a write now; the message names the cause (busy, full, ...)."""


class StoreLostError(StoreUnavailableError):
    """The store this home used is missing or was replaced: the daemon stops writing."""


class DriverError(CloudburstError):
    """A driver failed to perform an action; the message is one clean line.

    ``nothing_created`` is the driver's promise that the failed action left
    nothing at the provider (a deploy refused before its launch request went
    out); the core then sends a VM whose deploy failed that way back to
    ``PENDING`` instead of ``BOOT_FAILURE``.
    """

    code = ErrorCode.ACTION

    def __init__(self, message: str, *, nothing_created: bool = False) -> None:
        super().__init__(message)
        self.nothing_created = nothing_created


class TransientDriverError(DriverError):
    """A failure worth retrying: throttling, server errors, dropped connections."""


class DriverTimeoutError(TransientDriverError):
    """The driver action ran past its time limit and was stopped."""


class CapacityError(DriverError):
    """The provider has no room for the VM; the scheduler should try elsewhere.

    ``instance_type`` names what was refused (EC2: the instance type); the
    site is then cooled off for that type only. Empty: the whole site.
    """

    def __init__(self, message: str, *, instance_type: str = "") -> None:
        super().__init__(message)
        self.instance_type = instance_type


class DriverAuthError(DriverError):
    """The provider refused the credentials (which the message never contains)."""


class InstanceNotFoundError(DriverError):
    """The provider knows no instance with the given deploy id."""


class UnsupportedActionError(DriverError):
    """The driver does not implement the requested action."""


def one_line(text: str, limit: int = 512) -> str:
    """Collapse ``text`` into a single trimmed line of at most ``limit`` characters.

    Driver output may span many lines; VM errors, logs and API messages must
    not (OpenNebula's line protocol broke on exactly that).
    """
    collapsed = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if len(collapsed) > limit:
        collapsed = collapsed[: limit - 3] + "..."
    return collapsed
