"""docs/compatibility.md names every method cloudburst answers, with a status that says so."""

from __future__ import annotations

import re
from pathlib import Path

from cloudburst.api.xmlrpc import METHODS

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
_ROW = re.compile(r"^\| `(one\.[a-z_.]+)` \| (same|deliberately different|not yet) \|", re.M)


def test_every_method_we_answer_is_listed_as_answered() -> None:
    statuses = dict(_ROW.findall(DOC.read_text(encoding="utf-8")))
    missing = sorted(set(METHODS) - set(statuses))
    assert not missing, f"methods missing from docs/compatibility.md: {missing}"
    wrong = sorted(method for method in METHODS if statuses[method] == "not yet")
    assert not wrong, f"answered but listed as 'not yet': {wrong}"
    unanswered = sorted(method for method, status in statuses.items()
                        if status != "not yet" and method not in METHODS)
    assert not unanswered, f"listed as answered but not in the dispatch table: {unanswered}"
