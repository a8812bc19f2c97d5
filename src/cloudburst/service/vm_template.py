"""Validate a submitted VM template and split it the way oned does.

``CPU`` (a number > 0) and ``MEMORY`` (a whole number of MB > 0) are
mandatory; ``REQUIREMENTS``/``RANK`` must parse. Well-known attributes go to
``TEMPLATE``, everything else (including ``EC2`` and ``PUBLIC_CLOUD``
sections) to ``USER_TEMPLATE`` (spec/pyone.md 6.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudburst.errors import ExpressionError, ValidationError
from cloudburst.model.records import SYSTEM_TEMPLATE_ATTRIBUTES
from cloudburst.scheduler.demand import check_expressions
from cloudburst.template import Template


@dataclass(frozen=True, slots=True)
class PreparedVm:
    """A validated template, split, with its numbers read."""

    name: str | None
    cpu: float
    memory: int
    template: Template
    user_template: Template


def prepare(template: Template) -> PreparedVm:
    """Validate and split ``template``.

    Raises:
        ValidationError: a mandatory attribute is missing or has a bad value,
            or an expression does not parse; the message names the attribute.
    """
    cpu = _positive_number(template, "CPU")
    memory = _positive_whole(template, "MEMORY")
    try:
        check_expressions(template)
    except ExpressionError as exc:
        raise ValidationError(exc.message) from None
    system = Template()
    user = Template()
    for name, value in template:
        (system if name in SYSTEM_TEMPLATE_ATTRIBUTES else user).append(name, value)
    given_name = (template.get("NAME") or "").strip() or None
    user.remove("NAME")
    return PreparedVm(name=given_name, cpu=cpu, memory=memory, template=system, user_template=user)


def _positive_number(template: Template, name: str) -> float:
    raw = template.get(name)
    if raw is None or not raw.strip():
        raise ValidationError(f"{name} attribute is missing; it must be a positive number")
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{name} attribute must be a positive number, not {raw!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValidationError(f"{name} attribute must be a positive number, not {raw!r}")
    return value


def _positive_whole(template: Template, name: str) -> int:
    value = _positive_number(template, name)
    if value != int(value):
        raise ValidationError(f"{name} attribute must be a whole number of MB, not {value:g}")
    return int(value)
