"""REQUIREMENTS (boolean) and RANK (arithmetic) expressions, as OpenNebula 4.x+.

An expression is compiled once into nested closures and then evaluated
against any number of hosts without re-parsing. Variables are resolved through
a :data:`Lookup`, a function returning every value a host has for a name (an
empty sequence when it has none).

REQUIREMENTS::

    FREECPU > 60 & HOSTNAME = "ec2*"
    !(PUBLIC_CLOUD = YES)
    (CURRENT_VMS != 5) & (CURRENT_VMS != 7)

* ``VAR = V``, ``VAR != V``, ``VAR @> V`` (any value matches), ``VAR > N``,
  ``VAR < N``; ``&``, ``|`` and ``!``; parentheses. ``&`` and ``|`` have the
  same precedence and group to the left, so ``A | B & C`` is ``(A | B) & C``.
  There are no ``==``, ``>=`` or ``<=`` operators.
* When ``V`` is a number (``5``, ``-3``, ``0.5``) the comparison is numeric
  and false when the host value is missing or not a decimal number, for ``!=``
  too. The host value is compared as the number it spells (``"3.7" > 3`` is
  true), where OpenNebula would first read it as an integer (``3``).
* Otherwise ``V`` (a bare word such as ``YES`` or a ``"quoted"`` string) is a
  case-sensitive shell glob matched against the host value; a missing value
  makes both ``=`` and ``!=`` false.
* ``=``, ``!=``, ``>`` and ``<`` look at a variable's first value only.
  ``CURRENT_VMS`` is special, as in OpenNebula: its values are the ids of the
  VMs on the host, and ``CURRENT_VMS = 5`` is true when 5 is among them,
  ``CURRENT_VMS != 5`` when it is not.

RANK: ``+ - * /`` (``* /`` bind tighter), unary minus, parentheses, numbers and
variables (a missing or non-numeric variable is 0). Division by zero gives 0.
The result is not truncated; OpenNebula truncates it to an integer.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from cloudburst.errors import ExpressionError

__all__ = [
    "MAX_NESTING",
    "Lookup",
    "Rank",
    "Requirements",
    "parse_rank",
    "parse_requirements",
]

Lookup = Callable[[str], Sequence[str]]
"""Returns every value of a variable for one host; empty when it has none."""

_Test = Callable[[Lookup], bool]
_Arith = Callable[[Lookup], float]
_Number = int | float

MAX_NESTING: Final = 100
"""Deepest nesting of ``(``, ``!`` and unary ``-`` an expression may use."""

_CURRENT_VMS: Final = "CURRENT_VMS"
_INTEGER_RE: Final = re.compile(r"[+-]?[0-9]+")
_DECIMAL_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GLOB_CHARS: Final = frozenset("*?[")


# -- lexer ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "STR", "INT", "FLOAT", "END" or the operator character itself
    text: str
    column: int  # 1-based


def _token_pattern(signed_numbers: bool) -> re.Pattern[str]:
    sign = "-?" if signed_numbers else ""
    return re.compile(
        rf"(?P<FLOAT>{sign}[0-9]+\.[0-9]+)"
        rf"|(?P<INT>{sign}[0-9]+)"
        r"|(?P<STR>[A-Za-z][A-Za-z0-9_]*)"
        r'|"(?P<QUOTED>[^"]*)"'
        r"|(?P<OP>[!&|=><()*+/^@-])"
    )


# REQUIREMENTS reads "-3" as one number; in RANK "-" is always an operator,
# which accepts everything OpenNebula does ("A -3" too).
_REQUIREMENTS_TOKEN_RE: Final = _token_pattern(signed_numbers=True)
_RANK_TOKEN_RE: Final = _token_pattern(signed_numbers=False)
_SPACE_RE: Final = re.compile(r"[ \t\r\n]+")


def _skip_space(text: str, pos: int) -> int:
    match = _SPACE_RE.match(text, pos)
    return pos if match is None else match.end()


def _tokenize(text: str, pattern: re.Pattern[str], what: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        match = pattern.match(text, pos)
        if match is None or match.lastgroup is None:
            raise _lex_error(text, pos, what)
        kind = match.lastgroup
        if kind == "QUOTED":
            tokens.append(_Token("STR", match.group(kind), pos + 1))
        elif kind == "OP":
            tokens.append(_Token(match.group(), match.group(), pos + 1))
        else:
            tokens.append(_Token(kind, match.group(), pos + 1))
        pos = _skip_space(text, match.end())
    tokens.append(_Token("END", "", len(text) + 1))
    return tokens


def _lex_error(text: str, pos: int, what: str) -> ExpressionError:
    if text[pos] == '"':
        return ExpressionError(
            f"{what} syntax error at column {pos + 1}: unterminated string (missing '\"')"
        )
    return ExpressionError(
        f"{what} syntax error at column {pos + 1}: unexpected {text[pos]!r}"
        " (write values with such characters in double quotes)"
    )


def _describe(token: _Token) -> str:
    if token.kind == "END":
        return "the end of the expression"
    if token.kind == "STR":
        return f"{token.text!r}"
    return f"'{token.text}'"


class _Parser:
    """Shared token cursor for both grammars."""

    def __init__(self, text: str, tokens: list[_Token], what: str) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.what = what
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def error(self, expected: str, token: _Token | None = None) -> ExpressionError:
        found = self.token if token is None else token
        return ExpressionError(
            f"{self.what} syntax error at column {found.column}: "
            f"expected {expected}, found {_describe(found)}{self.hint(found)}"
        )

    def hint(self, found: _Token) -> str:
        """Explain a number glued to a word, as in ``HOSTNAME = node-1``."""
        glued = found.column > 1 and not self.text[found.column - 2].isspace()
        if glued and found.kind in ("INT", "FLOAT") and found.text.startswith("-"):
            return " (write values that contain '-' in double quotes)"
        return ""

    @contextlib.contextmanager
    def nested(self) -> Iterator[None]:
        """Count one level of '(', '!' or unary '-' (bounded to protect the stack)."""
        if self.depth >= MAX_NESTING:
            raise ExpressionError(
                f"{self.what} syntax error at column {self.token.column}: "
                f"more than {MAX_NESTING} nested levels of '(', '!' or '-'"
            )
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def expect_close(self, opening: _Token) -> None:
        if self.token.kind != ")":
            raise self.error(f"')' to close the '(' at column {opening.column}")
        self.advance()

    def expect_end(self, expected: str) -> None:
        if self.token.kind != "END":
            raise self.error(expected)


# -- host values ----------------------------------------------------------------


def _number(text: str) -> _Number | None:
    """Return the decimal number ``text`` spells (blanks around allowed), or None."""
    stripped = text.strip()
    if _INTEGER_RE.fullmatch(stripped):
        try:
            return int(stripped)
        except ValueError:  # beyond Python's digit limit for int()
            return float(stripped)
    if _DECIMAL_RE.fullmatch(stripped):
        return float(stripped)
    return None


def _float_value(values: Sequence[str]) -> float:
    """Return the first value as a float; 0 when missing or not a number."""
    if not values:
        return 0.0
    stripped = values[0].strip()
    return float(stripped) if _DECIMAL_RE.fullmatch(stripped) else 0.0


def _glob(pattern: str) -> Callable[[str], bool]:
    """Return a case-sensitive shell-glob matcher for ``pattern``."""
    if _GLOB_CHARS.isdisjoint(pattern):
        return lambda value: value == pattern
    match = re.compile(fnmatch.translate(pattern)).match
    return lambda value: match(value) is not None


# -- REQUIREMENTS ---------------------------------------------------------------

_NUMERIC_OPERATORS: Final[dict[str, Callable[[_Number, _Number], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}


def _numeric_test(name: str, op: str, literal: _Number) -> _Test:
    if op == "@>":
        return lambda lookup: any(_number(value) == literal for value in lookup(name))
    compare = _NUMERIC_OPERATORS[op]
    if name == _CURRENT_VMS:
        # OpenNebula reads CURRENT_VMS as the literal itself when the host runs
        # that VM and as -1 otherwise, then compares as usual.
        def current_vms(lookup: Lookup) -> bool:
            present = any(_number(value) == literal for value in lookup(name))
            return compare(literal if present else -1, literal)

        return current_vms

    def test(lookup: Lookup) -> bool:
        values = lookup(name)
        if not values:
            return False
        number = _number(values[0])
        return number is not None and compare(number, literal)

    return test


def _string_test(name: str, op: str, pattern: str) -> _Test:
    matches = _glob(pattern)
    if op == "@>":
        return lambda lookup: any(matches(value) for value in lookup(name))
    expected = op == "="

    def test(lookup: Lookup) -> bool:
        values = lookup(name)
        return bool(values) and matches(values[0]) == expected

    return test


def _chain(first: _Test, rest: list[tuple[str, _Test]]) -> _Test:
    """Fold ``first op1 t1 op2 t2 ...`` left to right, skipping what cannot matter.

    A loop rather than nested closures, so that long generated chains such as
    ``CURRENT_VMS != 1 & CURRENT_VMS != 2 & ...`` cannot exhaust the stack.
    """
    if not rest:
        return first

    def test(lookup: Lookup) -> bool:
        result = first(lookup)
        for op, operand in rest:
            if result is (op == "|"):
                continue  # TRUE | x and FALSE & x are decided already
            result = operand(lookup)
        return result

    return test


def _not(inner: _Test) -> _Test:
    return lambda lookup: not inner(lookup)


def _always(lookup: Lookup) -> bool:
    return True


class _RequirementsParser(_Parser):
    """``expr := unary (('&' | '|') unary)*``; ``unary := '!' unary | '(' expr ')' | cmp``."""

    def __init__(self, text: str) -> None:
        tokens = _tokenize(text, _REQUIREMENTS_TOKEN_RE, "REQUIREMENTS")
        super().__init__(text, tokens, "REQUIREMENTS")
        self.variables: set[str] = set()

    def statement(self) -> _Test:
        if self.token.kind == "END":
            return _always
        test = self.expression()
        self.expect_end("'&', '|' or the end of the expression")
        return test

    def expression(self) -> _Test:
        first = self.unary()
        rest: list[tuple[str, _Test]] = []
        while self.token.kind in ("&", "|"):
            op = self.advance().kind
            rest.append((op, self.unary()))
        return _chain(first, rest)

    def unary(self) -> _Test:
        token = self.token
        if token.kind == "!":
            with self.nested():
                self.advance()
                return _not(self.unary())
        if token.kind == "(":
            with self.nested():
                self.advance()
                test = self.expression()
            self.expect_close(token)
            return test
        if token.kind == "STR":
            return self.comparison()
        raise self.error("a comparison such as 'FREECPU > 50', '!' or '('")

    def comparison(self) -> _Test:
        name = self.advance().text
        self.variables.add(name)
        op = self.operator(name)
        value = self.token
        if value.kind in ("INT", "FLOAT"):
            self.advance()
            return _numeric_test(name, op, _literal(value))
        if value.kind == "STR" and op not in (">", "<"):
            self.advance()
            return _string_test(name, op, value.text)
        if op in (">", "<"):
            raise self.error(f"a number after '{op}'")
        raise self.error(f"a value after '{op}'")

    def operator(self, name: str) -> str:
        first = self.advance()
        if first.kind == "=":
            self.refuse_equals(first, "'==' is not an operator, use '='")
            return "="
        if first.kind in (">", "<"):
            self.refuse_equals(
                first,
                f"'{first.kind}=' is not an operator, write ({name} {first.kind} N | {name} = N)",
            )
            return first.kind
        if first.kind in ("!", "@"):
            second = "=" if first.kind == "!" else ">"
            if self.token.kind != second:
                raise self.error(f"'{second}' after '{first.kind}'")
            self.advance()
            return first.kind + second
        raise self.error(f"an operator (=, !=, >, <, @>) after {name!r}", first)

    def refuse_equals(self, first: _Token, explanation: str) -> None:
        """Explain the C-style operators OpenNebula lacks (``==``, ``>=``, ``<=``)."""
        if self.token.kind == "=":
            raise ExpressionError(
                f"{self.what} syntax error at column {first.column}: {explanation}"
            )


def _literal(token: _Token) -> _Number:
    if token.kind == "FLOAT":
        return float(token.text)
    try:
        return int(token.text)
    except ValueError:  # beyond Python's digit limit for int()
        return float(token.text)


@dataclass(frozen=True, slots=True, eq=False)
class Requirements:
    """A compiled REQUIREMENTS expression.

    Attributes:
        source: The expression as written.
        variables: The names the expression looks up.
    """

    source: str
    variables: frozenset[str]
    _test: _Test = field(repr=False)

    def evaluate(self, lookup: Lookup) -> bool:
        """Return whether a host whose variables ``lookup`` resolves qualifies.

        Never raises unless ``lookup`` does.
        """
        return self._test(lookup)


def parse_requirements(text: str) -> Requirements:
    """Compile a REQUIREMENTS expression (cached); empty text is always true.

    Raises:
        ExpressionError: ``text`` is not a valid expression; the message gives
            the 1-based column and what was expected there.
    """
    return _compile_requirements(text)


@functools.lru_cache(maxsize=4096)
def _compile_requirements(text: str) -> Requirements:
    parser = _RequirementsParser(text)
    test = parser.statement()
    return Requirements(text, frozenset(parser.variables), test)


# -- RANK -----------------------------------------------------------------------


def _divide(left: float, right: float) -> float:
    return left / right if right else 0.0


_ARITH_OPERATORS: Final[dict[str, Callable[[float, float], float]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
}


def _fold(first: _Arith, rest: list[tuple[str, _Arith]]) -> _Arith:
    """Apply ``first op1 t1 op2 t2 ...`` left to right, in a loop (see :func:`_chain`)."""
    if not rest:
        return first
    steps = [(_ARITH_OPERATORS[op], operand) for op, operand in rest]

    def value(lookup: Lookup) -> float:
        result = first(lookup)
        for apply, operand in steps:
            result = apply(result, operand(lookup))
        return result

    return value


def _negate(inner: _Arith) -> _Arith:
    return lambda lookup: -inner(lookup)


def _constant(value: float) -> _Arith:
    return lambda lookup: value


def _variable(name: str) -> _Arith:
    return lambda lookup: _float_value(lookup(name))


class _RankParser(_Parser):
    """``sum := term (('+' | '-') term)*``, ``term := factor (('*' | '/') factor)*``.

    ``factor := '-' factor | '(' sum ')' | NUMBER | VARIABLE``.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text, _tokenize(text, _RANK_TOKEN_RE, "RANK"), "RANK")
        self.variables: set[str] = set()

    def statement(self) -> _Arith:
        if self.token.kind == "END":
            return _constant(0.0)
        value = self.sum()
        self.expect_end("an operator (+, -, *, /) or the end of the expression")
        return value

    def sum(self) -> _Arith:
        first = self.term()
        rest: list[tuple[str, _Arith]] = []
        while self.token.kind in ("+", "-"):
            op = self.advance().kind
            rest.append((op, self.term()))
        return _fold(first, rest)

    def term(self) -> _Arith:
        first = self.factor()
        rest: list[tuple[str, _Arith]] = []
        while self.token.kind in ("*", "/"):
            op = self.advance().kind
            rest.append((op, self.factor()))
        return _fold(first, rest)

    def factor(self) -> _Arith:
        token = self.advance()
        if token.kind == "-":
            with self.nested():
                return _negate(self.factor())
        if token.kind == "(":
            with self.nested():
                value = self.sum()
            self.expect_close(token)
            return value
        if token.kind in ("INT", "FLOAT"):
            return _constant(float(token.text))
        if token.kind == "STR":
            self.variables.add(token.text)
            return _variable(token.text)
        raise self.error("a number, a variable, '-' or '('", token)


@dataclass(frozen=True, slots=True, eq=False)
class Rank:
    """A compiled RANK expression.

    Attributes:
        source: The expression as written.
        variables: The names the expression looks up.
    """

    source: str
    variables: frozenset[str]
    _value: _Arith = field(repr=False)

    def evaluate(self, lookup: Lookup) -> float:
        """Return the rank of a host whose variables ``lookup`` resolves.

        Never raises unless ``lookup`` does; the result may be ``inf`` or
        ``nan`` when the arithmetic overflows.
        """
        return self._value(lookup)


def parse_rank(text: str) -> Rank:
    """Compile a RANK expression (cached); empty text evaluates to 0.

    Raises:
        ExpressionError: ``text`` is not a valid expression; the message gives
            the 1-based column and what was expected there.
    """
    return _compile_rank(text)


@functools.lru_cache(maxsize=4096)
def _compile_rank(text: str) -> Rank:
    parser = _RankParser(text)
    value = parser.statement()
    return Rank(text, frozenset(parser.variables), value)
