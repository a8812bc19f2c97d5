"""Reading what driver scripts print: poll strings, probe output, failure reasons.

Poll strings and probe output are OpenNebula template syntax
(``STATE=a IP=10.0.0.5``, ``HOSTNAME=... VM=[ID=5, DEPLOY_ID=i-1, POLL="..."]``);
the parsers turn syntax errors into :class:`~cloudburst.errors.DriverError`.

A failed script's reason (:func:`failure_text`) is what it wrote between
``ERROR MESSAGE --8<------`` and ``ERROR MESSAGE ------>8--`` lines on stderr
(OpenNebula's ``error_message`` helpers), else the last lines of stderr, else
of stdout, else the exit code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from cloudburst.drivers.base import HostInfo, PollResult, PollState, ReportedVm
from cloudburst.drivers.process import ScriptResult
from cloudburst.errors import DriverError, TemplateSyntaxError, one_line
from cloudburst.model.capacity import ATTRIBUTE as CAPACITY
from cloudburst.model.capacity import limits_from_vectors
from cloudburst.template import parse

__all__ = ["failure_text", "parse_host_info", "parse_poll"]

_ERROR_BEGIN: Final = "ERROR MESSAGE --8<------"
_ERROR_END: Final = "ERROR MESSAGE ------>8--"
#: Non-blank lines of output that make a reason when no marked message was written.
_TAIL_LINES: Final = 3

# The script drivers' logger: its records keep the name they had before the
# parsers moved out of cloudburst.drivers.script.
_log = logging.getLogger("cloudburst.drivers.script")


# -- failure reasons ------------------------------------------------------------


def failure_text(result: ScriptResult) -> str:
    """The one-line reason a script failed (see module docs for the order)."""
    marked = one_line(_marked_error(result.stderr))
    if marked:
        return marked
    for output in (result.stderr, result.stdout):
        lines = [line for line in output.splitlines() if line.strip()]
        if lines:
            return one_line("\n".join(lines[-_TAIL_LINES:]))
    if result.exit_code < 0:
        return f"killed by signal {-result.exit_code}"
    return f"exit code {result.exit_code}"


def _marked_error(stderr: str) -> str:
    """The lines between the ``ERROR MESSAGE`` markers ("" when there are none)."""
    found: list[str] = []
    inside = False
    for line in stderr.splitlines():
        marker = line.strip()
        if marker == _ERROR_BEGIN:
            inside = True
        elif marker == _ERROR_END:
            inside = False
        elif inside:
            found.append(line)
    return "\n".join(found)


# -- poll strings ---------------------------------------------------------------


def parse_poll(text: str) -> PollResult:
    """Parse a poll string (``STATE=a IP=10.0.0.5 ...``, spec 1.6).

    ``STATE`` becomes the state (missing: ``UNKNOWN``); every other single
    value goes to ``info``; vectors are ignored.

    Raises:
        DriverError: the text is not ``KEY=VALUE`` or ``STATE`` is not one of
            ``a p d e -``.
    """
    try:
        template = parse(text)
    except TemplateSyntaxError as exc:
        raise DriverError(f"poll output is not KEY=VALUE: {one_line(str(exc))}") from exc
    state = PollState.UNKNOWN
    info: dict[str, str] = {}
    for name, value in template:
        if not isinstance(value, str):
            continue
        if name == "STATE":
            state = _poll_state(value)
        else:
            info[name] = value
    return PollResult(state, info)


def _poll_state(value: str) -> PollState:
    try:
        return PollState(value.strip().lower())
    except ValueError:
        raise DriverError(f"poll output has an unknown STATE {value!r}") from None


# -- probe output ---------------------------------------------------------------


def parse_host_info(text: str, logger: logging.Logger = _log) -> HostInfo:
    """Parse probe output into a :class:`HostInfo`.

    Single values become attributes (the last one of a name wins);
    ``VM=[ID, DEPLOY_ID, POLL]`` vectors become reported VMs (a malformed one is
    logged and skipped); ``CAPACITY=[...]`` vectors become capacity limits (either
    form of :mod:`cloudburst.model.capacity`; a bad count is logged and skipped);
    other vectors (``DS=[...]``) are ignored.

    Raises:
        DriverError: the text is not template syntax.
    """
    try:
        template = parse(text)
    except TemplateSyntaxError as exc:
        raise DriverError(f"probe output is not KEY=VALUE: {one_line(str(exc))}") from exc
    attributes: dict[str, str] = {}
    vms: list[ReportedVm] = []
    for name, value in template:
        if isinstance(value, str):
            attributes[name] = value
        elif name == "VM":
            try:
                vms.append(_reported_vm(value))
            except DriverError as exc:
                logger.warning("probe output: skipped a VM vector: %s", exc)
    bad: list[str] = []
    capacity = limits_from_vectors(template.vectors(CAPACITY), bad)
    for message in bad:
        logger.warning("probe output: %s", message)
    return HostInfo(attributes, tuple(vms), capacity)


def _reported_vm(fields: Mapping[str, str]) -> ReportedVm:
    """The VM a ``VM=[ID, DEPLOY_ID, POLL]`` vector reports; a bad POLL gives ``UNKNOWN``.

    Raises:
        DriverError: no ``DEPLOY_ID``, or an ``ID`` that is not a number.
    """
    deploy_id = fields.get("DEPLOY_ID", "").strip()
    if not deploy_id:
        raise DriverError(f"no DEPLOY_ID in {dict(fields)}")
    try:
        vm_id = int(fields.get("ID", ""))
    except ValueError:
        raise DriverError(f"ID of {deploy_id} is not a number: {fields.get('ID')!r}") from None
    poll = fields.get("POLL")
    if poll is None:
        return ReportedVm(vm_id, deploy_id)
    try:
        result = parse_poll(poll)
    except DriverError as exc:
        result = PollResult(PollState.UNKNOWN, {"ERROR": str(exc)})
    return ReportedVm(vm_id, deploy_id, result)
