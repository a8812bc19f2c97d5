"""A method's parameters come from its handler's signature and are all checked at once."""

from __future__ import annotations

import pytest

from cloudburst.api.calls import Call, ParameterFault, Signature
from cloudburst.api.xmlrpc import METHODS, SIGNATURES
from cloudburst.errors import ApiArgumentError


async def _handler(call: Call, id: int, name: str, hold: bool = False,
                   groups: list[object] = []) -> object:  # noqa: B006 (never changed)
    return id


async def _open(call: Call, name: str, *rest: object) -> object:
    return name


def test_arguments_are_typed_in_order_with_defaults() -> None:
    signature = Signature.of(_handler)
    assert signature.parse([3, "a"]) == [3, "a", False, []]
    assert signature.parse([3, "a", True, [1]]) == [3, "a", True, [1]]
    assert Signature.of(_open).parse(["a", 1, "b"]) == ["a", 1, "b"]


@pytest.mark.parametrize(("values", "error", "message"), [
    (["3", "a"], ParameterFault,
     "Wrong type of parameter 1 (id): expected an integer, got a string"),
    ([True, "a"], ParameterFault,
     "Wrong type of parameter 1 (id): expected an integer, got a boolean"),
    ([3, "a", 1], ParameterFault,
     "Wrong type of parameter 3 (hold): expected a boolean, got an integer"),
    ([3], ParameterFault, "Missing parameter 2 (name): expected a string"),
    ([3, "a", True, [], 5], ApiArgumentError, "Too many parameters: expected at most 4, got 5"),
    ([2**31, "a"], ApiArgumentError, "Parameter 1 (id) is out of range"),
])
def test_a_wrong_argument_is_named(values: list[object], error: type[Exception],
                                   message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        Signature.of(_handler).parse(values)


def test_every_method_declares_xmlrpc_types() -> None:
    assert set(SIGNATURES) == set(METHODS)
    vm_info = SIGNATURES["one.vm.info"].parameters
    assert [(p.name, p.kind) for p in vm_info] == [("id", int), ("decrypt", bool)]
