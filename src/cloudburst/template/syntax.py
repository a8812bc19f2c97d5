r"""OpenNebula templates: the data type, its text form, and JSON storage.

The XML form (:func:`~cloudburst.template.xml.parse_xml`, and the writer
behind :meth:`Template.to_xml`) lives in :mod:`cloudburst.template.xml`.

A template is an ordered multiset of attributes. Each attribute has an
upper-case name and a value that is either a string (a *single* attribute) or
a :data:`Vector` (an ordered mapping of upper-case keys to strings)::

    NAME   = "web server"   # comment
    CPU    = 0.5
    EC2    = [ AMI = "ami-00bafcb5", KEYPAIR = "gsg-keypair", INSTANCETYPE = m1.small ]

Names follow OpenNebula's rule: ``[A-Za-z0-9_]+``, upper-cased, and prefixed
with ``ONE_`` when they do not start with a letter or start with ``XML`` (so
that every name is a valid XML element name). The same rule applies to the
keys of vectors.

Escaping in the text form differs from OpenNebula in one point: inside a
quoted value ``\"`` is a double quote *and* ``\\`` is one backslash. A
backslash before any other character is kept literally, as OpenNebula does, so
``"C:\dir"`` reads the same in both. :meth:`Template.to_text` writes every
backslash as ``\\`` and every quote as ``\"``, which makes
``parse(t.to_text()) == t`` hold for every template; OpenNebula would read a
written ``\\`` as two backslashes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Final

from cloudburst.errors import TemplateError, TemplateSyntaxError

__all__ = [
    "MAX_TEMPLATE_CHARS",
    "JsonValue",
    "Template",
    "Value",
    "Vector",
    "check_template_size",
    "normalize_name",
    "parse",
]

Vector = dict[str, str]
"""A vector attribute: ordered, upper-case keys, string values."""

Value = str | Vector
"""The value of an attribute."""

JsonValue = str | list[list[str]]
"""A value in :meth:`Template.to_json` form (a vector is a list of ``[key, value]``)."""

MAX_TEMPLATE_CHARS: Final = 16 * 1024 * 1024
"""Longest template text accepted by the parsers (a guard against abuse)."""

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_]+")
_LETTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _key(name: str) -> str:
    """Return the stored form of ``name`` without validating its characters."""
    upper = name.upper()
    if upper[:1] not in _LETTERS or upper.startswith("XML"):
        return "ONE_" + upper
    return upper


def normalize_name(name: str) -> str:
    """Return the stored form of an attribute name or vector key.

    Args:
        name: A name made of ASCII letters, digits and ``_``.

    Returns:
        The name upper-cased, prefixed with ``ONE_`` when it does not start
        with a letter or starts with ``XML``. The function is idempotent.

    Raises:
        TemplateError: ``name`` is empty or has other characters.
    """
    if _NAME_RE.fullmatch(name) is None:
        raise TemplateError(f"invalid attribute name {name!r}: use only letters, digits and '_'")
    return _key(name)


def _normalize_value(value: object, name: str) -> Value:
    """Return a private, normalised copy of ``value`` or raise TemplateError."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        vector: Vector = {}
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise TemplateError(f"vector {name}: keys and values must be strings")
            vector.setdefault(normalize_name(key), item)
        return vector
    raise TemplateError(
        f"attribute {name}: value must be a string or a vector, not {type(value).__name__}"
    )


def _export(value: Value) -> Value:
    """Return ``value`` safe to hand out (vectors are copied)."""
    return value if isinstance(value, str) else dict(value)


def _frozen(value: Value) -> object:
    """Return a comparable form of ``value`` in which vector key order counts."""
    return value if isinstance(value, str) else tuple(value.items())


class Template:
    """An ordered multiset of OpenNebula attributes.

    Names and vector keys are normalised on insert (see :func:`normalize_name`);
    lookups take names in any case. Values handed out are copies: change a
    template only through its methods. Two templates are equal when they hold
    the same attributes in the same order, vector keys in the same order.
    """

    __slots__ = ("_attrs",)

    def __init__(self, attributes: Iterable[tuple[str, Value]] = ()) -> None:
        """Build a template from ``(name, value)`` pairs, in order.

        Raises:
            TemplateError: A name or value is invalid.
        """
        self._attrs: list[tuple[str, Value]] = []
        for name, value in attributes:
            self.append(name, value)

    # -- lookup -------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """Return the first single (non-vector) value of ``name``, or None."""
        key = _key(name)
        for attr_name, value in self._attrs:
            if attr_name == key and isinstance(value, str):
                return value
        return None

    def get_vector(self, name: str) -> Vector | None:
        """Return a copy of the first vector value of ``name``, or None."""
        key = _key(name)
        for attr_name, value in self._attrs:
            if attr_name == key and isinstance(value, dict):
                return dict(value)
        return None

    def get_all(self, name: str) -> list[Value]:
        """Return every value of ``name`` (single and vector), in order."""
        key = _key(name)
        return [_export(value) for attr_name, value in self._attrs if attr_name == key]

    def vectors(self, name: str) -> list[Vector]:
        """Return every vector value of ``name``, in order."""
        key = _key(name)
        return [
            dict(value)
            for attr_name, value in self._attrs
            if attr_name == key and isinstance(value, dict)
        ]

    def names(self) -> list[str]:
        """Return the distinct attribute names in order of first appearance."""
        return list(dict.fromkeys(name for name, _ in self._attrs))

    def as_flat_dict(self) -> dict[str, str]:
        """Return the first single value of each name (vectors are left out)."""
        flat: dict[str, str] = {}
        for name, value in self._attrs:
            if isinstance(value, str):
                flat.setdefault(name, value)
        return flat

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(attr_name == key for attr_name, _ in self._attrs)

    def __iter__(self) -> Iterator[tuple[str, Value]]:
        for name, value in self._attrs:
            yield name, _export(value)

    def __len__(self) -> int:
        return len(self._attrs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        if len(self._attrs) != len(other._attrs):
            return False
        return all(
            name == other_name and _frozen(value) == _frozen(other_value)
            for (name, value), (other_name, other_value) in zip(
                self._attrs, other._attrs, strict=True
            )
        )

    def __repr__(self) -> str:
        return f"Template({self._attrs!r})"

    def copy(self) -> Template:
        """Return an independent copy."""
        clone = Template()
        clone._attrs = [(name, _export(value)) for name, value in self._attrs]
        return clone

    # -- modification -------------------------------------------------------

    def append(self, name: str, value: Value) -> None:
        """Add an attribute after all others (VM-template semantics).

        Raises:
            TemplateError: The name or value is invalid.
        """
        key = normalize_name(name)
        self._attrs.append((key, _normalize_value(value, key)))

    def set(self, name: str, value: Value) -> None:
        """Make ``value`` the only value of ``name``.

        The attribute takes the position of the first existing one of that
        name, or goes last when there is none.

        Raises:
            TemplateError: The name or value is invalid.
        """
        key = normalize_name(name)
        entry = (key, _normalize_value(value, key))
        kept: list[tuple[str, Value]] = []
        placed = False
        for attr in self._attrs:
            if attr[0] != key:
                kept.append(attr)
            elif not placed:
                kept.append(entry)
                placed = True
        if not placed:
            kept.append(entry)
        self._attrs = kept

    def remove(self, name: str) -> int:
        """Remove every attribute called ``name``; return how many went."""
        key = _key(name)
        before = len(self._attrs)
        self._attrs = [attr for attr in self._attrs if attr[0] != key]
        return before - len(self._attrs)

    def merge(self, other: Template, replace: bool) -> None:
        """Add the attributes of ``other`` to this template.

        Args:
            other: The template to take attributes from (not modified).
            replace: True for host-template semantics: every name present in
                ``other`` loses its values here first. False for VM-template
                semantics: everything is appended.
        """
        incoming = [(name, _export(value)) for name, value in other._attrs]
        if replace:
            replaced = {name for name, _ in incoming}
            self._attrs = [attr for attr in self._attrs if attr[0] not in replaced]
        self._attrs.extend(incoming)

    # -- serialisation ------------------------------------------------------

    def to_text(self) -> str:
        """Return the template in OpenNebula syntax, one attribute per line.

        Every value is quoted (see the module docstring for escaping), so
        ``parse(t.to_text()) == t``.
        """
        lines = [_attribute_text(name, value) for name, value in self._attrs]
        return "".join(line + "\n" for line in lines)

    def to_xml(self, root: str = "TEMPLATE", *, plain: bool = False) -> str:
        """Return the template as compact XML under a ``root`` element.

        Each string is one CDATA section (see :func:`cloudburst.template.xml.cdata`
        for ``]]>``, carriage returns and characters XML 1.0 forbids), or with
        ``plain`` escaped text (:func:`cloudburst.template.xml.escaped`). An empty
        vector is ``<NAME/>`` and reads back as an empty string: XML cannot
        tell the two apart, and neither can OpenNebula.
        """
        # Imported here: the xml module builds Templates, so it imports this one.
        from cloudburst.template.xml import attributes_to_xml

        return attributes_to_xml(self._attrs, root, plain=plain)

    def to_json(self) -> list[list[JsonValue]]:
        """Return a JSON-serialisable, lossless form: ``[[name, value], ...]``.

        Vectors become lists of ``[key, value]`` pairs rather than objects so
        that key order survives stores that reorder object keys (JSONB).
        """
        return [
            [name, value if isinstance(value, str) else [[k, v] for k, v in value.items()]]
            for name, value in self._attrs
        ]

    @classmethod
    def from_json(cls, data: object) -> Template:
        """Rebuild a template from :meth:`to_json` output (after a JSON round trip).

        Raises:
            TemplateError: ``data`` does not have the shape ``to_json`` produces.
        """
        if not isinstance(data, list):
            raise TemplateError("stored template is malformed: expected a list of attributes")
        template = cls()
        for index, item in enumerate(data):
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise TemplateError(
                    f"stored template is malformed: attribute {index} is not a [name, value] pair"
                )
            name, value = item
            if not isinstance(name, str):
                raise TemplateError(f"stored template is malformed: attribute {index} has no name")
            template.append(name, value if isinstance(value, str) else _vector_from_json(value))
        return template

    @classmethod
    def from_stored_json(cls, data: list[list[JsonValue]]) -> Template:
        """Rebuild a template the store wrote with :meth:`to_json`, without re-validating.

        Only for data this program produced: names were validated when the
        template was built, and re-checking 20,000 stored templates per pool
        listing would dominate its cost. Untrusted input goes through
        :meth:`from_json`.
        """
        template = cls()
        template._attrs = [
            (name, value if isinstance(value, str) else dict(value))  # type: ignore[misc]
            for name, value in data
        ]
        return template


def _vector_from_json(value: object) -> Vector:
    """Return the vector that ``to_json`` wrote as ``value``."""
    if not isinstance(value, list) or not all(
        isinstance(pair, list | tuple)
        and len(pair) == 2
        and isinstance(pair[0], str)
        and isinstance(pair[1], str)
        for pair in value
    ):
        raise TemplateError("stored template is malformed: a vector is not a list of pairs")
    vector: Vector = {}
    for key, item in value:
        vector.setdefault(key, item)
    return vector


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attribute_text(name: str, value: Value) -> str:
    if isinstance(value, str):
        return f"{name}={_quote(value)}"
    if not value:
        return f"{name}=[]"
    pairs = ",\n".join(f"  {key}={_quote(item)}" for key, item in value.items())
    return f"{name}=[\n{pairs} ]"


# -- text parser ----------------------------------------------------------------

# Every pattern below is a run of one character class (or such runs in a
# sequence no two of which can match the same text), so matching is linear.
_SPACE_RE: Final = re.compile(r"[ \t\r\n\f\v]*(?:#[^\n]*[ \t\r\n\f\v]*)*")
_BLANKS_RE: Final = re.compile(r"[ \t\r\f\v]*")
_ASSIGN_RE: Final = re.compile(r"([A-Za-z0-9_]+)[ \t\r\f\v]*=[ \t\r\f\v]*")
_UNQUOTED_RE: Final = re.compile(r"[^ \t\r\n\f\v=#,\[\]]+")
_QUOTED_RUN_RE: Final = re.compile(r'[^"\\]*')
_VALUE_ENDS: Final = frozenset(("", "\n", "#"))
_VECTOR_VALUE_ENDS: Final = frozenset(("\n", "#", ",", "]"))


def _run_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Return where the match of ``pattern`` (which may be empty) at ``pos`` ends."""
    match = pattern.match(text, pos)
    return pos if match is None else match.end()


#: Longest token an error message quotes whole.
_MAX_QUOTED_TOKEN: Final = 40


def _describe(text: str, pos: int) -> str:
    """Name the token at ``pos`` for an error message: ``'128'``, not ``'1'``.

    A word (a run of characters an unquoted value may hold) is quoted whole,
    up to :data:`_MAX_QUOTED_TOKEN` characters (then ``...``); any other
    character alone.
    """
    if pos >= len(text):
        return "end of input"
    char = text[pos]
    if char == "\n":
        return "end of line"
    token = char
    if (word := _UNQUOTED_RE.match(text, pos)) is not None:
        token = word.group()
        if len(token) > _MAX_QUOTED_TOKEN:
            token = token[:_MAX_QUOTED_TOKEN] + "..."
    return f"'{token}'" if "'" not in token else f'"{token}"'


def _position(text: str, pos: int) -> tuple[int, int]:
    """Return the 1-based (line, column) of offset ``pos``."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


class _TextParser:
    """Recursive-descent parser over one template text; see :func:`parse`.

    ``pos`` is the offset of the next unread character.
    """

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def template(self) -> Template:
        text, end = self.text, len(self.text)
        attrs: list[tuple[str, Value]] = []
        self.pos = _run_end(_SPACE_RE, text, 0)
        while self.pos < end:
            name = self.assignment("attribute name")
            attrs.append((name, self.value(name)))
            self.pos = _run_end(_SPACE_RE, text, self.pos)
        template = Template()
        template._attrs = attrs
        return template

    def assignment(self, expecting: str) -> str:
        """Read ``NAME =`` and the blanks after it; return the normalised name."""
        match = _ASSIGN_RE.match(self.text, self.pos)
        if match is None:
            raise self.assignment_error(expecting)
        self.pos = match.end()
        return _key(match.group(1))

    def value(self, name: str) -> Value:
        char = self.text[self.pos : self.pos + 1]
        if char == '"':
            return self.quoted()
        if char == "[":
            return self.vector(name)
        if char in _VALUE_ENDS:
            return ""
        return self.unquoted("value")

    def vector(self, name: str) -> Vector:
        text, start = self.text, self.pos
        vector: Vector = {}
        self.pos = _run_end(_SPACE_RE, text, start + 1)
        while not text.startswith("]", self.pos):
            if self.pos >= len(text):
                raise self.fail(f"unterminated vector {name} (missing ']')", start)
            key = self.assignment(f"key of vector {name} or ']'")
            vector.setdefault(key, self.vector_value(name, start))
            self.pos = _run_end(_SPACE_RE, text, self.pos)
            if text.startswith(",", self.pos):
                self.pos = _run_end(_SPACE_RE, text, self.pos + 1)
        self.pos += 1
        return vector

    def vector_value(self, name: str, start: int) -> str:
        char = self.text[self.pos : self.pos + 1]
        if char == '"':
            return self.quoted()
        if char in _VECTOR_VALUE_ENDS:
            return ""
        if char == "":
            raise self.fail(f"unterminated vector {name} (missing ']')", start)
        return self.unquoted(f"value in vector {name}")

    def unquoted(self, expecting: str) -> str:
        match = _UNQUOTED_RE.match(self.text, self.pos)
        if match is None:
            raise self.unexpected(expecting)
        self.pos = match.end()
        return match.group()

    def quoted(self) -> str:
        text, start = self.text, self.pos
        end = text.find('"', start + 1)
        if end >= 0 and text.find("\\", start + 1, end) < 0:
            self.pos = end + 1
            return text[start + 1 : end]
        return self.quoted_with_escapes(start)

    def quoted_with_escapes(self, start: int) -> str:
        text = self.text
        parts: list[str] = []
        pos = start + 1
        while True:
            run_end = _run_end(_QUOTED_RUN_RE, text, pos)
            parts.append(text[pos:run_end])
            if run_end >= len(text):
                raise self.fail("unterminated quoted value starting", start)
            if text[run_end] == '"':
                self.pos = run_end + 1
                return "".join(parts)
            escaped = text[run_end + 1 : run_end + 2]
            if escaped in ('"', "\\"):
                parts.append(escaped)
                pos = run_end + 2
            else:
                parts.append("\\")
                pos = run_end + 1

    # -- errors (slow path) --

    def assignment_error(self, expecting: str) -> TemplateSyntaxError:
        """Explain why ``NAME =`` does not start at ``pos``."""
        name = _NAME_RE.match(self.text, self.pos)
        if name is None:
            return self.unexpected(expecting)
        self.pos = _run_end(_BLANKS_RE, self.text, name.end())
        return self.unexpected("'='")

    def unexpected(self, expecting: str) -> TemplateSyntaxError:
        found = _describe(self.text, self.pos)
        return self.fail(f"syntax error, unexpected {found}, expecting {expecting}", self.pos)

    def fail(self, message: str, pos: int) -> TemplateSyntaxError:
        line, column = _position(self.text, pos)
        return TemplateSyntaxError(message, line, column)


def check_template_size(text: str) -> None:
    """Refuse template text longer than :data:`MAX_TEMPLATE_CHARS`.

    Raises:
        TemplateError: ``text`` is too long.
    """
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(
            f"template is too large: {len(text)} characters (at most {MAX_TEMPLATE_CHARS})"
        )


def parse(text: str) -> Template:
    """Parse a template written in OpenNebula syntax (6.x rules).

    Attributes are separated by any whitespace; ``#`` starts a comment that
    runs to the end of the line; ``NAME =`` at the end of a line (or before a
    comment) is an empty value; inside ``[...]`` pairs are separated by commas
    or just by whitespace, a trailing comma is accepted and the first of
    repeated keys wins. Empty input gives an empty template.

    Raises:
        TemplateSyntaxError: The text is not a template; the message says what
            was found, what was expected, and the 1-based line and column.
        TemplateError: The text is longer than :data:`MAX_TEMPLATE_CHARS`.
    """
    check_template_size(text)
    return _TextParser(text).template()
