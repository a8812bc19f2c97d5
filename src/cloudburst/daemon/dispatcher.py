"""The driver dispatcher: builds drivers from ``oned.conf`` and runs their actions.

Per driver it enforces OpenNebula's ``ARGUMENTS`` flags: ``-t`` bounds how many
actions run at once (except the driver's ``self_paced`` actions, which it
queues and batches itself), ``-r`` how many times a retryable failure is retried
(with exponential backoff and jitter), ``-w`` how long one attempt may run
before it is cancelled (the default comes from ``DEFAULT_ACTION_TIMEOUT``).
Whatever happens inside a driver, callers get either a result or a
:class:`~cloudburst.errors.DriverError` with a one-line message; or, before
any attempt starts, :class:`~cloudburst.errors.LeaseLostError` when this
daemon may not drive (:attr:`Dispatcher.refusal`: a leader whose lease may
have lapsed calls no driver, whatever its loop runs first after a stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cloudburst import metrics
from cloudburst.config.settings import DriverSection, Settings
from cloudburst.daemon.backlog import WorkBacklog
from cloudburst.drivers.base import (
    DriverContext,
    DriverOptions,
    InformationDriver,
    VmDriver,
)
from cloudburst.drivers.registry import (
    build_information_driver,
    build_vm_driver,
    parse_driver_arguments,
)
from cloudburst.errors import (
    ConfigError,
    DriverError,
    DriverTimeoutError,
    LeaseLostError,
    NotFoundError,
    UnsupportedActionError,
    one_line,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Base delay before the first retry; doubles each attempt, capped below.
RETRY_BASE_DELAY = 1.0
RETRY_MAX_DELAY = 20.0


@dataclass(slots=True)
class _Slot:
    """A built driver and the semaphore that bounds it."""

    driver: InformationDriver | VmDriver
    options: DriverOptions
    semaphore: asyncio.Semaphore


class Dispatcher:
    """Owns every driver instance and runs actions through it."""

    def __init__(self, settings: Settings, install_id: str) -> None:
        self.settings = settings
        self.install_id = install_id
        self._slots: dict[tuple[str, str], _Slot] = {}
        #: Work the life-cycle manager started and the drivers have not received yet.
        self.backlog = WorkBacklog()
        #: Why no driver call may start now (None: they may): the leader's lease check.
        self.refusal: Callable[[], str | None] = lambda: None

    def context_for(self, section: DriverSection) -> DriverContext:
        """The context a driver of ``section`` is built with."""
        try:
            options, words = parse_driver_arguments(section.arguments)
        except ValueError as exc:
            raise ConfigError(str(self.settings.oned_conf), str(exc), section.line) from None
        default = None
        if section.default:
            default = self.settings.etc_dir / section.default
        return DriverContext(
            name=section.name, executable=section.executable, arguments=words, options=options,
            etc_dir=self.settings.etc_dir, remotes_dir=self.settings.remotes_dir,
            var_dir=self.settings.var_dir, default=default, type=section.type,
            install_id=self.install_id, backlog=self.backlog, cloud_api=metrics.CLOUD_API,
        )

    def build_all(self) -> None:
        """Build every configured IM and VM driver now, so bad sections fail at start.

        Raises:
            ConfigError: a section names an unknown executable or bad arguments.
        """
        for section in self.settings.drivers:
            if section.kind in ("IM_MAD", "VM_MAD"):
                self._slot(section.kind, section.name)

    def has_driver(self, kind: str, name: str) -> bool:
        return self.settings.driver(kind, name) is not None

    def information_driver(self, name: str) -> InformationDriver:
        driver = self._slot("IM_MAD", name).driver
        assert isinstance(driver, InformationDriver)
        return driver

    def vm_driver(self, name: str) -> VmDriver:
        driver = self._slot("VM_MAD", name).driver
        assert isinstance(driver, VmDriver)
        return driver

    def vm_drivers(self) -> list[VmDriver]:
        """Every configured VM driver (built on demand)."""
        return [self.vm_driver(s.name) for s in self.settings.drivers if s.kind == "VM_MAD"]

    def took_over(self, quiet: float) -> None:
        """Tell every VM driver this daemon leads after another one (see
        :meth:`VmDriver.took_over`)."""
        for driver in self.vm_drivers():
            driver.took_over(quiet)

    def _slot(self, kind: str, name: str) -> _Slot:
        slot = self._slots.get((kind, name))
        if slot is not None:
            return slot
        section = self.settings.driver(kind, name)
        if section is None:
            label = "information" if kind == "IM_MAD" else "virtualization"
            raise NotFoundError(f"No {label} driver named {name!r} in oned.conf ({kind})")
        context = self.context_for(section)
        try:
            driver: InformationDriver | VmDriver = (
                build_information_driver(context) if kind == "IM_MAD"
                else build_vm_driver(context)
            )
        except (LookupError, ImportError, ValueError) as exc:
            raise ConfigError(str(self.settings.oned_conf), f"{kind} {name!r}: {exc}",
                              section.line) from None
        slot = _Slot(driver, context.options, asyncio.Semaphore(max(1, context.options.threads)))
        self._slots[(kind, name)] = slot
        return slot

    async def run(
        self,
        kind: str,
        name: str,
        action: str,
        call: Callable[[], Awaitable[T]],
        *,
        retry: bool = True,
        timeout: float | None = None,
        longest_default: float | None = None,
    ) -> T:
        """Run ``call`` under driver ``name``'s concurrency, retry and time limits.

        Args:
            kind: ``IM_MAD`` or ``VM_MAD``.
            name: the driver's name.
            action: the action's name, for messages.
            call: makes one attempt (called again for each retry).
            retry: whether ``-r`` applies (never for non-idempotent calls
                without a token).
            timeout: overrides ``-w`` for this call.
            longest_default: caps ``DEFAULT_ACTION_TIMEOUT`` when the driver has no
                ``-w`` (an explicit ``-w`` or ``timeout`` is never capped).

        Raises:
            DriverError: the last attempt failed; the message is one line.
        """
        slot = self._slot(kind, name)
        default = self.settings.default_action_timeout
        if longest_default is not None:
            default = min(default, longest_default)
        limit = timeout or slot.options.timeout or default
        retryable = slot.driver.retryable if isinstance(slot.driver, VmDriver) else (
            DriverError,)
        attempts = 1 + (slot.options.retries if retry else 0)
        gate: contextlib.AbstractAsyncContextManager[Any] = slot.semaphore
        if isinstance(slot.driver, VmDriver) and action in slot.driver.self_paced:
            gate = contextlib.nullcontext()
        for attempt in range(1, attempts + 1):
            try:
                async with gate:
                    if (refused := self.refusal()) is not None:
                        raise LeaseLostError(f"{action} not started: {refused}")
                    # In the caller's task (wait_for would make a task per call).
                    with metrics.driver_attempt(name, action):
                        async with asyncio.timeout(limit):
                            return await call()
            except TimeoutError:
                error: DriverError = DriverTimeoutError(
                    f"Timeout executing {action} after {limit:g} s")
            except (UnsupportedActionError, LeaseLostError):
                raise
            except DriverError as exc:
                error = exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver bug must not take the daemon down
                log.exception("driver %s crashed in %s", name, action)
                error = DriverError(f"{action}: driver {name} failed unexpectedly: "
                                    f"{type(exc).__name__}: {one_line(str(exc), 200)}")
            if attempt == attempts or not isinstance(error, retryable):
                raise error
            delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)
            metrics.DRIVER_RETRIES.labels(name, action).inc()
            log.info("%s %s failed (%s); retry %d/%d in %.1f s", name, action, error.message,
                     attempt, attempts - 1, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for slot in self._slots.values():
            try:
                await slot.driver.close()
            except Exception:
                log.exception("closing driver %s failed", slot.driver.name)
        self._slots.clear()
