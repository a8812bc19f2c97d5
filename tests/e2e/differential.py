"""Comparing what two XML-RPC servers answer: reply shapes, chosen values, CLI output.

A reply is reduced to its *shape*: for ``[ok, value, code, ...]`` arrays the
length, the success flag, the error code, the value's type and, for an XML
document, the set of its element paths with the kind of their text
(``int``, ``float``, ``text``, ``empty``, or ``element`` when it has
children) plus the order of the ids of a pool's entries. Error messages are
compared as they are. :func:`compare` lists every difference as one line;
differences an :class:`AllowList` names (by pattern, each with its reason)
are left out. :func:`compare_values` compares the values of chosen elements (a
VM's devices); :func:`compare_cli` compares the Ruby CLI's output line by line
after the rules of :data:`CLI_RULES` (times, durations, generated ids).
"""

from __future__ import annotations

import re
import xmlrpc.client
from collections import Counter
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


_HEADING = re.compile(r"[A-Z][A-Z0-9 &_-]+[A-Z0-9]")


#: How the Ruby CLI's output is normalised before values are compared: each rule names
#: what differs by nature between two servers (when, and the ids they make), never a field.
CLI_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b\d\d/\d\d \d\d:\d\d:\d\d\b"), "<time>"),   # a date and time
    (re.compile(r"\b\d+d \d\dh\d\dm?\b"), "<duration>"),          # how long, so far
    (re.compile(r"\b\d+h\d\dm\d\ds\b"), "<duration>"),
    (re.compile(r"^(TIMESTAMP\s+:) \d+", re.M), r"\1 <time>"),    # monitoring's UNIX time
    (re.compile(r"^(DEPLOY ID\s+:) \S+", re.M), r"\1 <deploy id>"),  # the driver's own id
    (re.compile(r'UUID="[0-9a-f-]+"'), 'UUID="<uuid>"'),            # a VM's generated UUID
)


def cli_sections(output: str) -> dict[str, list[str]]:
    """The Ruby CLI's output as sections (its headings, "" before the first), each a list
    of normalised lines (:data:`CLI_RULES`, spaces collapsed)."""
    for pattern, replacement in CLI_RULES:
        output = pattern.sub(replacement, output)
    sections: dict[str, list[str]] = {}
    heading = ""
    for raw in output.splitlines():
        line = " ".join(raw.split())
        if not line:
            continue
        if _HEADING.fullmatch(line) and not line.startswith("ID "):
            heading = line
            sections.setdefault(heading, [])
            continue
        sections.setdefault(heading, []).append(line)
    return sections


def compare_cli(command: str, reference: str, ours: str) -> list[str]:
    """Differences between the Ruby CLI's output against oned and against cloudburst, value
    by value: each line (normalised, see :func:`cli_sections`) one server printed in a
    section and the other did not, and each section only one printed. Lines are compared
    as a multiset: a template's attributes have no order clients rely on, and a pool's
    order is compared on its document (:func:`compare`)."""
    theirs, mine = cli_sections(reference), cli_sections(ours)
    lines = [f"{command}: missing heading {head}" for head in theirs if head not in mine]
    lines += [f"{command}: extra heading {head}" for head in mine if head not in theirs]
    for head in [head for head in theirs if head in mine]:
        where = f"[{head}] " if head else ""
        only_theirs = Counter(theirs[head]) - Counter(mine[head])
        only_mine = Counter(mine[head]) - Counter(theirs[head])
        lines += [f"{command}: {where}only from oned: {line}" for line in only_theirs]
        lines += [f"{command}: {where}only from cloudburst: {line}" for line in only_mine]
    return lines
