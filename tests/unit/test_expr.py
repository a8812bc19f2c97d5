"""Tests for cloudburst.template.expr: REQUIREMENTS and RANK expressions."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudburst.errors import ExpressionError
from cloudburst.template import MAX_NESTING, Lookup, parse_rank, parse_requirements

HOST: dict[str, list[str]] = {
    "FREECPU": ["80"],
    "FREEMEMORY": ["1048576"],
    "LOAD": ["0.75"],
    "NEGATIVE": ["-5"],
    "HOSTNAME": ["ec2-eu-west"],
    "HYPERVISOR": ["kvm"],
    "PUBLIC_CLOUD": ["YES"],
    "ARCH": ["x86_64"],
    "LABEL": [" 42 "],
    "TEXT": ["forty"],
    "EMPTY": [""],
    "DATASTORE": ["100", "200", "ssd"],
    "CURRENT_VMS": ["3", "5", "8"],
}


def lookup_in(values: dict[str, list[str]]) -> Lookup:
    def lookup(name: str) -> Sequence[str]:
        return values.get(name, [])

    return lookup


def holds(expression: str, host: dict[str, list[str]] | None = None) -> bool:
    return parse_requirements(expression).evaluate(lookup_in(HOST if host is None else host))


def rank(expression: str, host: dict[str, list[str]] | None = None) -> float:
    return parse_rank(expression).evaluate(lookup_in(HOST if host is None else host))


# -- REQUIREMENTS: comparisons ------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("FREECPU > 60", True),
        ("FREECPU > 80", False),
        ("FREECPU < 81", True),
        ("FREECPU < 80", False),
        ("FREECPU = 80", True),
        ("FREECPU = 81", False),
        ("FREECPU != 81", True),
        ("FREECPU != 80", False),
        ("FREECPU ! = 80", False),  # blanks between the two characters are allowed
        ("FREECPU=80", True),
        ("LOAD > 0.5", True),
        ("LOAD < 0.5", False),
        ("LOAD = 0.75", True),
        ("LOAD > 0", True),  # the host value is compared as the number it spells
        ("NEGATIVE < -4", True),
        ("NEGATIVE > -6", True),
        ("NEGATIVE = -5", True),
        ("LABEL = 42", True),  # blanks around a host value are ignored
        ("FREEMEMORY > 1000000", True),
    ],
)
def test_numeric_comparisons(expression: str, expected: bool) -> None:
    assert holds(expression) is expected


@pytest.mark.parametrize("op", ["=", "!=", ">", "<", "@>"])
@pytest.mark.parametrize("variable", ["MISSING", "TEXT", "EMPTY"])
def test_numeric_comparison_is_false_without_a_number(op: str, variable: str) -> None:
    assert holds(f"{variable} {op} 5") is False
    assert holds(f"{variable} {op} 5.5") is False


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('HOSTNAME = "ec2-eu-west"', True),
        ('HOSTNAME = "ec2*"', True),
        ('HOSTNAME = "*west"', True),
        ('HOSTNAME = "ec2-??-west"', True),
        ('HOSTNAME = "ec2-[de]u-*"', True),
        ('HOSTNAME = "ec2-[!e]u-*"', False),
        ('HOSTNAME = "EC2*"', False),  # case-sensitive
        ('HOSTNAME = "ec2"', False),  # the whole value must match
        ('HOSTNAME != "ec2*"', False),
        ('HOSTNAME != "local*"', True),
        ("PUBLIC_CLOUD = YES", True),  # a bare word on the right is a string
        ("PUBLIC_CLOUD = yes", False),
        ("HYPERVISOR = kvm", True),
        ("ARCH = x86_64", True),
        ('EMPTY = ""', True),
        ('EMPTY != ""', False),
        ('EMPTY = "*"', True),
        ('"HYPERVISOR" = kvm', True),  # a quoted variable name works too
    ],
)
def test_string_comparisons(expression: str, expected: bool) -> None:
    assert holds(expression) is expected


def test_missing_attribute_makes_string_comparisons_false() -> None:
    assert holds('MISSING = "*"') is False
    assert holds('MISSING != "x"') is False
    assert holds("!(MISSING = x)") is True


def test_comparisons_use_the_first_value() -> None:
    assert holds("DATASTORE = 100") is True
    assert holds("DATASTORE = 200") is False
    assert holds("DATASTORE > 150") is False
    assert holds("DATASTORE = ssd") is False


def test_any_value_operator() -> None:
    assert holds("DATASTORE @> 200") is True
    assert holds("DATASTORE @ > 200") is True
    assert holds("DATASTORE @> 300") is False
    assert holds("DATASTORE @> ssd") is True
    assert holds('DATASTORE @> "s*"') is True
    assert holds('DATASTORE @> "hdd"') is False
    assert holds("MISSING @> 1") is False
    assert holds("MISSING @> x") is False


def test_current_vms() -> None:
    assert holds("CURRENT_VMS = 5") is True
    assert holds("CURRENT_VMS = 3") is True
    assert holds("CURRENT_VMS = 7") is False
    assert holds("CURRENT_VMS != 5") is False
    assert holds("(CURRENT_VMS != 5) & (CURRENT_VMS != 7)") is False
    assert holds("(CURRENT_VMS != 4) & (CURRENT_VMS != 7)") is True
    assert holds("CURRENT_VMS != 5", {}) is True  # a host with no VMs
    assert holds("CURRENT_VMS = 5", {}) is False


# -- REQUIREMENTS: logic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("FREECPU > 60 & HYPERVISOR = kvm", True),
        ("FREECPU > 60 & HYPERVISOR = xen", False),
        ("FREECPU > 90 | HYPERVISOR = kvm", True),
        ("FREECPU > 90 | HYPERVISOR = xen", False),
        ("!(PUBLIC_CLOUD = YES)", False),
        ("!PUBLIC_CLOUD = YES", False),
        ("!!PUBLIC_CLOUD = YES", True),
        ("! ( ! (FREECPU > 60))", True),
        ("((FREECPU > 60))", True),
    ],
)
def test_logic(expression: str, expected: bool) -> None:
    assert holds(expression) is expected


def test_and_or_have_equal_precedence_and_group_left() -> None:
    # TRUE | TRUE & FALSE: OpenNebula reads (TRUE | TRUE) & FALSE.
    assert holds("FREECPU > 1 | FREECPU > 2 & FREECPU > 100") is False
    assert holds("FREECPU > 1 | (FREECPU > 2 & FREECPU > 100)") is True
    # FALSE & FALSE | TRUE: (FALSE & FALSE) | TRUE.
    assert holds("FREECPU > 100 & FREECPU > 200 | FREECPU > 1") is True


def test_not_binds_to_the_next_operand_only() -> None:
    # !(TRUE) | TRUE is TRUE; !(TRUE | TRUE) would be FALSE.
    assert holds("!FREECPU > 1 | FREECPU > 2") is True


@pytest.mark.parametrize("expression", ["", "   ", "\n\t"])
def test_empty_requirements_are_true(expression: str) -> None:
    assert holds(expression, {}) is True
    assert parse_requirements(expression).variables == frozenset()


def test_requirements_metadata_and_cache() -> None:
    compiled = parse_requirements('(FREECPU > 60) & !(HOSTNAME = "x") | "LOAD" < 1')
    assert compiled.variables == {"FREECPU", "HOSTNAME", "LOAD"}
    assert compiled.source == '(FREECPU > 60) & !(HOSTNAME = "x") | "LOAD" < 1'
    assert parse_requirements(compiled.source) is compiled


def test_lookup_is_asked_for_names_as_written() -> None:
    asked: list[str] = []

    def lookup(name: str) -> Sequence[str]:
        asked.append(name)
        return ["1"]

    assert parse_requirements("freeCpu > 0 & Arch = x").evaluate(lookup) is False
    assert asked == ["freeCpu", "Arch"]


def test_long_generated_chains_do_not_exhaust_the_stack() -> None:
    avoid = " & ".join(f"(CURRENT_VMS != {vm})" for vm in range(10, 5010))
    assert holds(avoid) is True
    assert holds(avoid + " & (CURRENT_VMS != 5)") is False
    assert holds(" | ".join(["FREECPU > 100"] * 5000)) is False
    assert rank(" + ".join(["FREECPU"] * 5000)) == 400000.0
    assert rank(" * ".join(["1"] * 5000)) == 1.0


def test_nesting_is_bounded() -> None:
    deep = "(" * MAX_NESTING + "FREECPU > 1" + ")" * MAX_NESTING
    assert holds(deep) is True
    assert holds("!" * MAX_NESTING + "FREECPU > 1") is True
    assert rank("-" * MAX_NESTING + "2") == 2.0
    too_deep = "(" * (MAX_NESTING + 1) + "FREECPU > 1" + ")" * (MAX_NESTING + 1)
    with pytest.raises(ExpressionError, match=f"column {MAX_NESTING + 1}: more than"):
        parse_requirements(too_deep)
    with pytest.raises(ExpressionError, match="nested levels"):
        parse_rank("(" * 10_000 + "1" + ")" * 10_000)


# -- REQUIREMENTS: errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("FREECPU >", "at column 10: expected a number after '>', found the end of the expression"),
        ("FREECPU > high", "at column 11: expected a number after '>', found 'high'"),
        ('FREECPU < "5"', "at column 11: expected a number after '<', found '5'"),
        ("FREECPU >= 5", "at column 9: '>=' is not an operator, write (FREECPU > N | FREECPU = N)"),
        ("FREECPU <= 5", "at column 9: '<=' is not an operator, write (FREECPU < N | FREECPU = N)"),
        ("FREECPU == 5", "at column 9: '==' is not an operator, use '='"),
        ("FREECPU = ", "at column 11: expected a value after '=', found the end of the expression"),
        ("FREECPU ! 5", "at column 11: expected '=' after '!', found '5'"),
        ("FREECPU @ 5", "at column 11: expected '>' after '@', found '5'"),
        ("FREECPU 5", "at column 9: expected an operator (=, !=, >, <, @>) after 'FREECPU', found"),
        ("FREECPU", "at column 8: expected an operator (=, !=, >, <, @>) after 'FREECPU', found"),
        ("(A = 1", "at column 7: expected ')' to close the '(' at column 1, found the end"),
        ("A = 1)", "at column 6: expected '&', '|' or the end of the expression, found ')'"),
        ("A = 1 B = 2", "at column 7: expected '&', '|' or the end of the expression, found 'B'"),
        ("A = 1 &", "at column 8: expected a comparison such as 'FREECPU > 50', '!' or '('"),
        ("& A = 1", "at column 1: expected a comparison such as 'FREECPU > 50', '!' or '('"),
        ("5 = A", "at column 1: expected a comparison such as 'FREECPU > 50', '!' or '('"),
        ("A = 1.2.3", "at column 8: unexpected '.'"),
        (
            "HOSTNAME = node-1",
            "at column 16: expected '&', '|' or the end of the expression, found '-1'"
            " (write values that contain '-' in double quotes)",
        ),
        ('NAME = "ec2', "at column 8: unterminated string (missing '\"')"),
        ("A = $B", "at column 5: unexpected '$'"),
    ],
)
def test_requirements_syntax_errors(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_requirements(expression)
    assert str(caught.value).startswith(f"REQUIREMENTS syntax error {message}")


# -- RANK ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("", 0.0),
        ("  ", 0.0),
        ("42", 42.0),
        ("1.5", 1.5),
        ("FREECPU", 80.0),
        ("LOAD", 0.75),
        ("NEGATIVE", -5.0),
        ("LABEL", 42.0),
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("8 - 4 - 2", 2.0),
        ("8 / 4 / 2", 1.0),
        ("2 * 3 / 4", 1.5),
        ("7 / 2", 3.5),
        ("-FREECPU", -80.0),
        ("- - 3", 3.0),
        ("-(1 + 2) * 2", -6.0),
        ("2 * -3", -6.0),
        ("FREECPU -3", 77.0),
        ("FREECPU - 3", 77.0),
        ("FREECPU * 2 + FREEMEMORY / 1024", 1184.0),
        ("MISSING", 0.0),
        ("TEXT + 1", 1.0),
        ("EMPTY + 1", 1.0),
        ("DATASTORE", 100.0),
        ("FREECPU / 0", 0.0),
        ("FREECPU / MISSING", 0.0),
        ("FREECPU / (1 - 1)", 0.0),
        ('"FREECPU" + 1', 81.0),
    ],
)
def test_rank(expression: str, expected: float) -> None:
    assert rank(expression) == pytest.approx(expected)


def test_rank_metadata_and_cache() -> None:
    compiled = parse_rank("FREECPU * 2 - LOAD")
    assert compiled.variables == {"FREECPU", "LOAD"}
    assert compiled.source == "FREECPU * 2 - LOAD"
    assert parse_rank("FREECPU * 2 - LOAD") is compiled


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("FREECPU *", "at column 10: expected a number, a variable, '-' or '(', found the end"),
        ("* 2", "at column 1: expected a number, a variable, '-' or '(', found '*'"),
        ("(1 + 2", "at column 7: expected ')' to close the '(' at column 1"),
        ("1 2", "at column 3: expected an operator (+, -, *, /) or the end of the expression"),
        ("FREECPU ^ 2", "at column 9: expected an operator (+, -, *, /) or the end"),
        ("FREECPU > 2", "at column 9: expected an operator (+, -, *, /) or the end"),
        ("1.", "at column 2: unexpected '.'"),
    ],
)
def test_rank_syntax_errors(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_rank(expression)
    assert str(caught.value).startswith(f"RANK syntax error {message}")


# -- properties ----------------------------------------------------------------------------

_variables = st.sampled_from(["A", "B", "CURRENT_VMS", '"C"'])
_literals = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(0, 1e6, allow_nan=False).map(lambda x: f"{x:.3f}"),
    st.sampled_from(["YES", "x86_64", '"*"', '"a?[b-"', '""', '"[!z-a]*"']),
)
_comparisons = st.builds(
    lambda var, op, value: f"{var} {op} {value}",
    _variables,
    st.sampled_from(["=", "!=", "@>"]),
    _literals,
) | st.builds(
    lambda var, op, value: f"{var} {op} {value}",
    _variables,
    st.sampled_from([">", "<"]),
    st.integers(-(10**30), 10**30).map(str),
)
_requirements = st.recursive(
    _comparisons,
    lambda inner: st.one_of(
        inner.map(lambda e: f"!({e})"),
        st.tuples(inner, st.sampled_from(["&", "|"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
    ),
    max_leaves=8,
)
_host_values = st.lists(
    st.one_of(
        st.text(max_size=10),
        st.integers().map(str),
        st.floats().map(str),
        st.sampled_from(["1e999", "-0", " 7 ", "nan", "inf", "1_000", "٣", "9" * 5000]),
    ),
    max_size=3,
)
_hosts = st.dictionaries(st.sampled_from(["A", "B", "C", "CURRENT_VMS"]), _host_values)
_ranks = st.recursive(
    st.one_of(_variables, st.integers(0, 10**400).map(str), st.sampled_from(["0", "0.0", "1.5"])),
    lambda inner: st.one_of(
        inner.map(lambda e: f"-({e})"),
        st.tuples(inner, st.sampled_from("+-*/"), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    ),
    max_leaves=8,
)


@given(_requirements, _hosts)
@settings(max_examples=300)
def test_requirements_evaluation_never_raises(expression: str, host: dict[str, list[str]]) -> None:
    assert isinstance(parse_requirements(expression).evaluate(lookup_in(host)), bool)


@given(_ranks, _hosts)
@settings(max_examples=300)
def test_rank_evaluation_never_raises(expression: str, host: dict[str, list[str]]) -> None:
    assert isinstance(parse_rank(expression).evaluate(lookup_in(host)), float)


@given(st.text(alphabet=st.sampled_from('AB1 .-=!<>@&|()"*+/^x$'), max_size=20))
@settings(max_examples=500)
def test_parsers_fail_only_with_expression_errors(text: str) -> None:
    for parser in (parse_requirements, parse_rank):
        try:
            parser(text)
        except ExpressionError as error:
            assert "syntax error at column" in str(error)
