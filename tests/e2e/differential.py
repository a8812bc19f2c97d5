"""Comparing what two XML-RPC servers answer: reply shapes, not values.

A reply is reduced to its *shape*: for ``[ok, value, code, ...]`` arrays the
length, the success flag, the error code, the value's type and, for an XML
document, the set of its element paths with the kind of their text
(``int``, ``float``, ``text``, ``empty``, or ``element`` when it has
children) plus the order of the ids of a pool's entries. Error messages are
compared as they are. :func:`compare` lists every difference as one line;
differences an :class:`AllowList` names (by pattern, each with its reason)
are left out.
"""

from __future__ import annotations

import re
import xmlrpc.client
from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.etree import ElementTree

_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?\d+\.\d*(e-?\d+)?")


def call(url: str, session: str, method: str, *params: object) -> object:
    """The raw reply array of ``method`` (or ``("fault", code, message)``)."""
    proxy = xmlrpc.client.ServerProxy(url, allow_none=False)
    try:
        reply: object = getattr(proxy, method)(session, *params)
    except xmlrpc.client.Fault as fault:
        return ("fault", fault.faultCode, fault.faultString)
    finally:
        proxy("close")()
    return reply


def _kind(element: ElementTree.Element) -> str:
    if len(element):
        return "element"
    text = (element.text or "").strip()
    if not text:
        return "empty"
    if _INT.fullmatch(text):
        return "int"
    if _FLOAT.fullmatch(text):
        return "float"
    return "text"


def document_paths(text: str) -> dict[str, set[str]]:
    """Each element path of an XML document with the kinds of text found there."""
    root = ElementTree.fromstring(text)
    paths: dict[str, set[str]] = {}

    def walk(element: ElementTree.Element, prefix: str) -> None:
        path = f"{prefix}/{element.tag}" if prefix else element.tag
        paths.setdefault(path, set()).add(_kind(element))
        for child in element:
            walk(child, path)

    walk(root, "")
    return paths


def pool_order(text: str) -> list[int]:
    """The ids of a pool document's entries, in the order listed."""
    root = ElementTree.fromstring(text)
    return [int(child.findtext("ID") or -1) for child in root]


@dataclass
class Shape:
    """A reply reduced to what a client can rely on."""

    summary: tuple[object, ...]
    message: str = ""
    paths: dict[str, set[str]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)


def shape(reply: object) -> Shape:
    """The shape of a reply array (see the module docstring)."""
    if isinstance(reply, tuple) and reply and reply[0] == "fault":
        return Shape(("fault", reply[1]), message=str(reply[2]))
    assert isinstance(reply, list), reply
    ok, value = reply[0], reply[1]
    summary: tuple[object, ...] = (len(reply), ok, reply[2] if len(reply) > 2 else None,
                                   type(value).__name__)
    if not ok:
        return Shape(summary, message=str(value))
    if isinstance(value, str) and value.lstrip().startswith("<"):
        paths = document_paths(value)
        root = ElementTree.fromstring(value)
        order = pool_order(value) if root.tag.endswith("_POOL") else []
        return Shape(summary, paths=paths, order=order)
    return Shape(summary)


@dataclass(frozen=True)
class Allowed:
    """A reviewed difference: ``pattern`` matches difference lines, ``reason`` says why.

    ``optional``: a run may not see the difference (it depends on when
    monitoring arrived, or on work in flight elsewhere), so the entry is not
    reported as unused.
    """

    pattern: str
    reason: str
    optional: bool = False


class AllowList:
    """Differences that are known and accepted, each with its reason."""

    def __init__(self, entries: Iterable[Allowed]) -> None:
        self.entries = list(entries)
        self._compiled = [(re.compile(entry.pattern), entry) for entry in self.entries]
        self.used: set[str] = set()

    def allows(self, line: str) -> bool:
        for pattern, entry in self._compiled:
            if pattern.search(line):
                self.used.add(entry.pattern)
                return True
        return False

    def unused(self) -> list[str]:
        """Entries no difference needed (stale: remove them)."""
        return [entry.pattern for entry in self.entries
                if entry.pattern not in self.used and not entry.optional]


def compare(step: str, reference: Shape, ours: Shape) -> list[str]:
    """Every difference between the peer's shape and ours, one line each."""
    lines: list[str] = []
    if reference.summary != ours.summary:
        lines.append(f"{step}: reply {ours.summary} != oned's {reference.summary}")
    if reference.message != ours.message:
        lines.append(f"{step}: message {ours.message!r} != oned's {reference.message!r}")
    if reference.order != ours.order and len(reference.order) == len(ours.order):
        lines.append(f"{step}: order {ours.order} != oned's {reference.order}")
    for path in sorted(set(reference.paths) - set(ours.paths)):
        lines.append(f"{step}: missing {path}")
    for path in sorted(set(ours.paths) - set(reference.paths)):
        lines.append(f"{step}: extra {path}")
    for path in sorted(set(reference.paths) & set(ours.paths)):
        if reference.paths[path] != ours.paths[path]:
            lines.append(f"{step}: kind of {path} {sorted(ours.paths[path])} != oned's "
                         f"{sorted(reference.paths[path])}")
    return lines


def element_values(text: str, paths: Iterable[str]) -> dict[str, str]:
    """The text of each child of the elements at ``paths`` (relative to the document's
    root), keyed ``<path>[<n>]/<child>`` (n counts the elements found at the path)."""
    root = ElementTree.fromstring(text)
    values: dict[str, str] = {}
    for path in paths:
        for number, element in enumerate(root.findall(path)):
            for child in element:
                values[f"{path}[{number}]/{child.tag}"] = (child.text or "").strip()
    return values


def compare_values(step: str, reference: str, ours: str, paths: Iterable[str]) -> list[str]:
    """Values that differ between two documents, for the children of the elements at
    ``paths`` both have (a child only one has is a shape difference, see :func:`compare`)."""
    paths = list(paths)
    theirs, mine = element_values(reference, paths), element_values(ours, paths)
    return [f"{step}: value of {key} {mine[key]!r} != oned's {theirs[key]!r}"
            for key in sorted(set(theirs) & set(mine)) if theirs[key] != mine[key]]


_LABEL = re.compile(r"^([A-Z][A-Z0-9 _/()-]*?)\s+:", re.M)
_HEADING = re.compile(r"^([A-Z][A-Z0-9 &_-]+[A-Z0-9])\s*$", re.M)


def cli_shape(output: str) -> tuple[list[str], list[str]]:
    """What a client (or a script parsing it) relies on in the Ruby CLI's output: the
    ``LABEL :`` fields and section headings of ``show``, the column headers of ``list``."""
    labels = [label.strip() for label in _LABEL.findall(output)]
    headings = [heading.strip() for heading in _HEADING.findall(output)]
    first = output.splitlines()[0] if output.strip() else ""
    columns = first.split() if first.lstrip().startswith("ID") else []
    return labels, headings + columns


def compare_cli(command: str, reference: str, ours: str) -> list[str]:
    """Differences between the Ruby CLI's output against oned and against cloudburst."""
    (ref_labels, ref_heads), (our_labels, our_heads) = cli_shape(reference), cli_shape(ours)
    lines = [f"{command}: missing field {label}" for label in ref_labels
             if label not in our_labels]
    lines += [f"{command}: extra field {label}" for label in our_labels
              if label not in ref_labels]
    lines += [f"{command}: missing heading {head}" for head in ref_heads if head not in our_heads]
    lines += [f"{command}: extra heading {head}" for head in our_heads if head not in ref_heads]
    return lines
