"""The EC2 VM driver's ``ARGUMENTS`` (``VM_MAD`` in ``oned.conf``).

``ARGUMENTS = "<flags> vmm_ec2/vmm_ec2.conf"``: the last plain word is the
defaults file (relative to ``etc/``). The seed's flags:

* ``-u URL``: the endpoint (``EC2_URL``), any EC2-compatible URL;
* ``-h DIR``, ``-k FILE``, ``-c FILE``: ``EC2_HOME``, ``EC2_PRIVATE_KEY`` and
  ``EC2_CERT`` of the Java API tools. They are accepted so old lines still
  load, and are otherwise ignored with a warning (:mod:`.config`): AWS no
  longer accepts X.509 certificates for the EC2 API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class VmmArguments:
    """The words of a ``VM_MAD``'s ``ARGUMENTS`` (dispatcher flags removed)."""

    endpoint: str | None = None
    ec2_home: str | None = None
    private_key: str | None = None
    cert: str | None = None
    defaults: str | None = None


_FLAGS: Final = {"-u": "endpoint", "-h": "ec2_home", "-k": "private_key", "-c": "cert"}


def parse_vmm_arguments(words: Sequence[str]) -> VmmArguments:
    """Read ``-u/-h/-k/-c`` and the defaults file (the last plain word).

    Raises:
        ValueError: an unknown flag, a flag without its value, or two files.
    """
    found: dict[str, str] = {}
    positional: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in _FLAGS:
            if index + 1 >= len(words):
                raise ValueError(f"option {word} needs a value")
            found[_FLAGS[word]] = words[index + 1]
            index += 2
            continue
        if word.startswith("-") and len(word) > 1:
            raise ValueError(f"unknown option {word} for the EC2 driver "
                             "(known: -u EC2_URL, -h EC2_HOME, -k EC2_PRIVATE_KEY, -c EC2_CERT)")
        positional.append(word)
        index += 1
    if len(positional) > 1:
        raise ValueError(f"expected one defaults file as the last argument, got {positional}")
    return VmmArguments(defaults=positional[0] if positional else None, **found)
