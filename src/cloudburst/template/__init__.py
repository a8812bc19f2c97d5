"""OpenNebula templates and the REQUIREMENTS / RANK expression languages."""

from cloudburst.template.expr import (
    MAX_NESTING,
    Lookup,
    Rank,
    Requirements,
    parse_rank,
    parse_requirements,
)
from cloudburst.template.syntax import (
    MAX_TEMPLATE_CHARS,
    JsonValue,
    Template,
    Value,
    Vector,
    normalize_name,
    parse,
)
from cloudburst.template.xml import parse_any, parse_xml

__all__ = [
    "MAX_NESTING",
    "MAX_TEMPLATE_CHARS",
    "JsonValue",
    "Lookup",
    "Rank",
    "Requirements",
    "Template",
    "Value",
    "Vector",
    "normalize_name",
    "parse",
    "parse_any",
    "parse_rank",
    "parse_requirements",
    "parse_xml",
]
