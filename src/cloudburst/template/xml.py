"""The XML form of OpenNebula templates: writing it, reading it, telling it from text.

Written form (:func:`attributes_to_xml`, behind :meth:`Template.to_xml`), as
OpenNebula's API documents have it::

    <TEMPLATE><CPU><![CDATA[0.5]]></CPU><EC2><AMI><![CDATA[ami-1]]></AMI></EC2></TEMPLATE>

or, for deployment files (``plain=True``), as the driver seed shows them, so
that a script can ``grep '<TYPE>provider_name</TYPE>'``::

    <TEMPLATE><CPU>0.5</CPU><EC2><AMI>ami-1</AMI></EC2></TEMPLATE>

Either way any text survives a parser (:func:`cdata`, :func:`escaped`); an
empty vector is ``<NAME/>`` and reads back as an empty string (XML cannot tell
the two apart, and neither can OpenNebula).

Read form (:func:`parse_xml`): any root element; a child without element
children is a single attribute, a child with element children a vector.
Documents with a DOCTYPE are refused before any entity could be expanded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from xml.etree import ElementTree
from xml.parsers.expat import ErrorString

from cloudburst.errors import TemplateError, TemplateSyntaxError
from cloudburst.template.syntax import (
    Template,
    Value,
    Vector,
    check_template_size,
    normalize_name,
    parse,
)

__all__ = ["attributes_to_xml", "cdata", "escaped", "parse_any", "parse_xml"]

#: Characters XML 1.0 forbids in a document; :func:`cdata` drops them.
_XML_ILLEGAL_RE: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# -- writing --------------------------------------------------------------------


def cdata(value: str) -> str:
    """Return ``value`` as CDATA that any XML parser reads back unchanged.

    Characters XML 1.0 forbids are dropped. A ``]]>`` inside the value splits
    the section in two. A carriage return is written as the character
    reference ``&#13;`` between sections: a literal CR in character data is
    normalised to LF by every XML parser, a character reference is not.
    """
    body = _XML_ILLEGAL_RE.sub("", value).replace("]]>", "]]]]><![CDATA[>")
    body = body.replace("\r", "]]>&#13;<![CDATA[")
    return f"<![CDATA[{body}]]>"


def escaped(value: str) -> str:
    """Return ``value`` as XML character data: ``&``, ``<``, ``>`` as entities.

    Characters XML 1.0 forbids are dropped; a carriage return is written as
    ``&#13;`` (a literal one would be read back as a newline).
    """
    body = _XML_ILLEGAL_RE.sub("", value).replace("&", "&amp;")
    return body.replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def attributes_to_xml(attributes: Iterable[tuple[str, Value]], root: str, *,
                      plain: bool = False) -> str:
    """Return ``(name, value)`` pairs as compact XML under a ``root`` element.

    Names must already be normalised (valid element names), as a
    :class:`Template` keeps them. A string is ``<NAME>`` + :func:`cdata`
    (:func:`escaped` when ``plain``); a vector is ``<NAME>`` holding one such
    element per key, or ``<NAME/>`` when empty.
    """
    text = escaped if plain else cdata
    parts = [f"<{root}>"]
    for name, value in attributes:
        if isinstance(value, str):
            parts.append(f"<{name}>{text(value)}</{name}>")
        elif not value:
            parts.append(f"<{name}/>")
        else:
            parts.append(f"<{name}>")
            parts.extend(f"<{key}>{text(item)}</{key}>" for key, item in value.items())
            parts.append(f"</{name}>")
    parts.append(f"</{root}>")
    return "".join(parts)


# -- reading --------------------------------------------------------------------


class _NoDoctypeBuilder(ElementTree.TreeBuilder):
    """Tree builder that refuses documents with a DOCTYPE.

    Entity declarations can only appear in a DOCTYPE, so refusing it at its
    start rules out entity-expansion attacks before any expansion happens.
    """

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise TemplateError("template XML must not contain a DOCTYPE or ENTITY declaration")


def parse_xml(text: str) -> Template:
    """Parse a template in XML form, under any root element.

    A child of the root without element children is a single attribute (its
    text, CDATA included); a child with element children is a vector whose
    keys are those children. Element names go through
    :func:`~cloudburst.template.syntax.normalize_name`, so ``<cpu>`` is ``CPU``.

    Raises:
        TemplateSyntaxError: The XML is not well formed (with line and column).
        TemplateError: The XML declares a DOCTYPE, nests deeper than a
            vector, uses names that are not attribute names, or is too large.
    """
    check_template_size(text)
    parser = ElementTree.XMLParser(target=_NoDoctypeBuilder())
    try:
        parser.feed(text)
        root = parser.close()
    except ElementTree.ParseError as error:
        line, column = error.position
        raise TemplateSyntaxError(
            f"template XML is not well formed: {ErrorString(error.code)}", line, column + 1
        ) from None
    template = Template()
    for child in root:
        template.append(child.tag, _element_value(child))
    return template


def _element_value(element: ElementTree.Element) -> Value:
    """Return the value of a child of the root: its text, or a vector of its children."""
    if len(element) == 0:
        return element.text or ""
    vector: Vector = {}
    for child in element:
        if len(child) != 0:
            raise TemplateError(
                f"template XML nests too deep: {element.tag}/{child.tag} has child elements"
            )
        vector.setdefault(normalize_name(child.tag), child.text or "")
    return vector


# -- either form ----------------------------------------------------------------


def parse_any(text: str) -> Template:
    """Parse ``text`` as XML when it starts with ``<`` (after whitespace), else as text.

    Raises:
        TemplateError: See :func:`~cloudburst.template.syntax.parse` and
            :func:`parse_xml`.
    """
    if text.lstrip().startswith("<"):
        return parse_xml(text)
    return parse(text)
