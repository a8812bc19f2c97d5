"""``$VARIABLE`` expansion in CONTEXT (cloudburst.template.variables): the rules the
OpenNebula 6.10 peer follows (tests/e2e/test_context_variables.py compares both)."""

from __future__ import annotations

import pytest

from cloudburst.errors import ValidationError
from cloudburst.template import parse
from cloudburst.template.variables import Reference, Scope, expand, expand_vector, references

VM = parse('''
CPU = 0.5
MEMORY = 128
VMID = 7
OS = [ ARCH = "x86_64" ]
NIC = [ NETWORK_ID = "0", IP = "10.0.0.10" ]
NIC = [ NETWORK_ID = "1", IP = "10.1.0.10", MAC = "02:00:0a:01:00:0a" ]
CONTEXT = [ W = "w1" ]
''')
SCOPE = Scope(template=VM, user_template=parse('FOO = "bar"\nVEC = [ A = "1" ]'),
              owner_template=parse('SSH_PUBLIC_KEY = "ssh-ed25519 AAAA alice@x"'),
              names={"NAME": "web", "UID": "3", "UNAME": "alice", "GID": "1",
                     "GNAME": "users"})


@pytest.mark.parametrize(("value", "expanded"), [
    ("$NAME", "web"),
    ("host-$NAME-$VMID", "host-web-7"),
    ("$NAME$NAME", "webweb"),
    ("$NAME.example", "web.example"),
    ("$NAME|$OS[ARCH]|", "web|x86_64|"),
    ("$UID $UNAME $GID $GNAME", "3 alice 1 users"),
    ("$USER[SSH_PUBLIC_KEY]", "ssh-ed25519 AAAA alice@x"),
    ("$user[ssh_public_key]", "ssh-ed25519 AAAA alice@x"),
    ("$USER[SSH_PUBLIC_KEY, X=1]", "ssh-ed25519 AAAA alice@x"),  # no condition on USER
    ("$MEMORY/$CPU", "128/0.5"),
    ("$foo", "bar"),                       # USER_TEMPLATE singles, any case
    ("$OS[ARCH]", "x86_64"),
    ("$OS[ ARCH ]-x", "x86_64-x"),
    ("$NIC[IP]", "10.0.0.10"),             # the first NIC
    ("$NIC[IP, NETWORK_ID=1]", "10.1.0.10"),
    ('$NIC[MAC, NETWORK_ID="1"]', "02:00:0a:01:00:0a"),
    ("$NIC[IP, NETWORK_ID=9]", ""),        # no NIC meets the condition
    ("$OS[ARCH, X=1]", ""),
    ("$CONTEXT[W]", "w1"),
    ("$W", ""),                            # a CONTEXT key is not a top-level name
    ("$VEC[A]", ""),                       # USER_TEMPLATE vectors are not read
    ("$NOPE", ""), ("$NOPE[X]", ""), ("$NAME[X]", ""), ("$9A", ""),
    ("a$b", "a"),
    ("no reference", "no reference"),
    ("\\$NAME", "\\$NAME"),                # kept as written
])
def test_references_expand_as_the_peer_does(value: str, expanded: str) -> None:
    assert expand(value, SCOPE) == expanded


@pytest.mark.parametrize("value", ["$", "a$", "$$", "${NAME}", "$ NAME", "x $ y", "$NIC[IP",
                                   "$NIC[IP, NETWORK_ID]", "$NIC[]", "$NAME]", "$NAME,",
                                   "$NAME=", "$OS[ARCH]x", "$OS[ARCH]_", "$OS[ARCH]1",
                                   "$OS[ARCH][", "$OS[ARCH]]", "$OS[ARCH],x"])
def test_a_dollar_that_starts_no_reference_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        expand(value, SCOPE, "CONTEXT/V")
    assert refused.value.message.startswith("CONTEXT/V: ")
    assert "\n" not in refused.value.message


def test_references_are_listed_with_their_parts() -> None:
    assert references("$NAME and $NIC[ip, network_id = 1] and $USER[KEY]") == [
        Reference("NAME"), Reference("NIC", "IP", ("NETWORK_ID", "1")),
        Reference("USER", "KEY")]


def test_a_vector_is_expanded_key_by_key_and_errors_name_the_key() -> None:
    assert expand_vector({"HOSTNAME": "$NAME", "PLAIN": "x"}, SCOPE, "CONTEXT") == {
        "HOSTNAME": "web", "PLAIN": "x"}
    with pytest.raises(ValidationError, match=r"^CONTEXT/BAD: "):
        expand_vector({"OK": "$NAME", "BAD": "$"}, SCOPE, "CONTEXT")
