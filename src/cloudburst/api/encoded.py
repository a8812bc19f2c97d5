"""Reply strings escaped and encoded once, for replies sent many times.

A pool listing of thousands of VMs is mostly documents that did not change
since the last listing. Escaping a 2 MB string for XML-RPC and encoding it to
UTF-8 costs more than joining the pieces, so cached pieces are kept already
escaped and encoded (:func:`escaped`), and a handler answers with
:class:`EncodedText`, which the server puts into the ``methodResponse`` as is.
"""

from __future__ import annotations

__all__ = ["EncodedText", "escaped"]


def escaped(text: str) -> bytes:
    """``text`` as the content of an XML-RPC ``<string>``: ``&``, ``<`` and ``>``
    escaped (as ``xmlrpc.client`` escapes them), then UTF-8."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode("utf-8")


class EncodedText:
    """A string reply value given as :func:`escaped` parts, in order (the client reads
    one string: their concatenation). Kept as parts so that the reply is copied once,
    into the response body."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
