"""Limits on what clients may store: template sizes, attribute names and values, object names.

One client's oversized input must not cost everyone else: a 1 MB attribute
name breaks XML parsers reading the pool listing, 10 MB values make every
listing slow. Every entry point that stores client text (``allocate``,
``update`` and ``rename`` of VMs, hosts and templates, ``instantiate``) goes
through :func:`parse_submitted` / :func:`check_template` and :func:`check_name`.
The limits are documented in ``docs/limits.md``; each error names the limit.
"""

from __future__ import annotations

from typing import Final

from cloudburst.errors import ValidationError
from cloudburst.template.syntax import Template
from cloudburst.template.xml import parse_any

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_NAME",
    "MAX_ATTRIBUTE_VALUE",
    "MAX_NAME",
    "MAX_TEMPLATE_BYTES",
    "check_name",
    "check_template",
    "parse_submitted",
]

#: Longest template a client may submit, in characters (text or XML form).
MAX_TEMPLATE_BYTES: Final = 1024 * 1024
#: Longest attribute (or vector key) name.
MAX_ATTRIBUTE_NAME: Final = 128
#: Longest single value (a vector's values count one by one).
MAX_ATTRIBUTE_VALUE: Final = 256 * 1024
#: Most attributes in one template, vector keys included.
MAX_ATTRIBUTES: Final = 4096
#: Longest name of a VM, host or template.
MAX_NAME: Final = 128


def parse_submitted(text: str) -> Template:
    """Parse client template text (OpenNebula text or XML) within the limits.

    Raises:
        ValidationError: the text or the template exceeds a limit (named).
        TemplateError: the text does not parse.
    """
    if len(text) > MAX_TEMPLATE_BYTES:
        raise ValidationError(f"Template too large: {len(text)} characters, the limit is "
                              f"{MAX_TEMPLATE_BYTES} (MAX_TEMPLATE_BYTES)")
    template = parse_any(text)
    check_template(template)
    return template


def check_template(template: Template) -> None:
    """Refuse a template whose names, values or size exceed the limits.

    Raises:
        ValidationError: the first limit exceeded, named.
    """
    count = 0
    total = 0
    for name, value in template:
        pairs = value.items() if isinstance(value, dict) else [("", value)]
        _check_attribute_name(name)
        for key, text in pairs:
            count += 1
            if key:
                _check_attribute_name(key, f"{name}/")
            if len(text) > MAX_ATTRIBUTE_VALUE:
                raise ValidationError(
                    f"Value of {name}{'/' + key if key else ''} too long: {len(text)} "
                    f"characters, the limit is {MAX_ATTRIBUTE_VALUE} (MAX_ATTRIBUTE_VALUE)")
            total += len(text) + len(key)
        total += len(name)
    if count > MAX_ATTRIBUTES:
        raise ValidationError(f"Too many attributes: {count}, the limit is {MAX_ATTRIBUTES} "
                              "(MAX_ATTRIBUTES)")
    if total > MAX_TEMPLATE_BYTES:
        raise ValidationError(f"Template too large: {total} characters, the limit is "
                              f"{MAX_TEMPLATE_BYTES} (MAX_TEMPLATE_BYTES)")


def _check_attribute_name(name: str, prefix: str = "") -> None:
    if len(name) > MAX_ATTRIBUTE_NAME:
        raise ValidationError(f"Attribute name {prefix}{name[:32]}... too long: {len(name)} "
                              f"characters, the limit is {MAX_ATTRIBUTE_NAME} "
                              "(MAX_ATTRIBUTE_NAME)")


def check_name(kind: str, name: str) -> str:
    """``name`` stripped, if it is a valid name for a ``kind`` (``VM``, ``host``, ...).

    A name is one line of printable characters, at most :data:`MAX_NAME` long.

    Raises:
        ValidationError: empty, too long, or holding a control character.
    """
    name = name.strip()
    if not name:
        raise ValidationError(f"Invalid {kind} name: it is empty")
    if len(name) > MAX_NAME:
        raise ValidationError(f"Invalid {kind} name: {len(name)} characters, the limit is "
                              f"{MAX_NAME} (MAX_NAME)")
    if any(not character.isprintable() for character in name):
        raise ValidationError(f"Invalid {kind} name {name[:40]!r}: it holds a line break or "
                              "another control character")
    return name
