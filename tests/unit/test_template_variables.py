"""``$VARIABLE`` expansion in CONTEXT (cloudburst.template.variables, and
cloudburst.service.vm_template for ``$TEMPLATE`` and ``one.vm.updateconf``): the rules
the OpenNebula 6.10 peer follows (tests/e2e/test_context_variables.py compares both)."""

from __future__ import annotations

import base64

import pytest

from cloudburst.errors import ValidationError
from cloudburst.service.vm_template import check_raw, expand_context, reconfigured
from cloudburst.template import Template, parse
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


def test_template_is_the_rendered_document_in_base64_and_rendered_only_when_named() -> None:
    rendered: list[str] = []

    def document() -> str:
        rendered.append("x")
        return "<VM><ID>7</ID></VM>"

    def expanded(context: str) -> dict[str, str]:
        template = parse(f"CPU = 1\nCONTEXT = [ {context} ]")
        result = expand_context(template, Template(), vm_id=7, name="web", owner=None,
                                group=None, document=document)
        return result.get_vector("CONTEXT") or {}

    assert expanded('T = "$TEMPLATE", N = "$NAME"') == {
        "T": base64.b64encode(b"<VM><ID>7</ID></VM>").decode(), "N": "web"}
    assert expanded('T = "$template[X]", N = "\\$TEMPLATE"') == {"T": "", "N": "\\$TEMPLATE"}
    assert rendered == ["x"]


def test_updateconf_changes_only_its_sections_and_keeps_the_context_cd() -> None:
    vm = parse('CPU = 1\nOS = [ ARCH = "x86_64" ]\nGRAPHICS = [ TYPE = "vnc" ]\n'
               'CONTEXT = [ A = "1", DISK_ID = "0", TARGET = "hda" ]')
    replaced = reconfigured(vm, parse('CONTEXT = [ B = "$NAME" ]\nCPU = 8\nFOO = 1'),
                            merge=False)
    assert replaced.to_text() == parse(
        'CPU = 1\nCONTEXT = [ DISK_ID = "0", TARGET = "hda", B = "$NAME" ]').to_text()
    kept = reconfigured(vm, parse('GRAPHICS = [ TYPE = "spice" ]'), merge=False)
    assert kept.get_vector("CONTEXT") == vm.get_vector("CONTEXT") and "OS" not in kept
    video = reconfigured(vm, parse('VIDEO = [ TYPE = "virtio" ]\nEMULATOR = "x"'), merge=True)
    assert video.get_vector("VIDEO") == {"TYPE": "virtio"} and "EMULATOR" not in video
    merged = reconfigured(vm, parse('GRAPHICS = [ LISTEN = "0.0.0.0" ]'), merge=True)
    assert merged.get_vector("GRAPHICS") == {"TYPE": "vnc", "LISTEN": "0.0.0.0"}
    assert merged.get_vector("OS") == {"ARCH": "x86_64"}
    with pytest.raises(ValidationError, match="GRAPHICS must be given once, as a vector"):
        reconfigured(vm, parse('GRAPHICS = "vnc"'), merge=False)
    # RAW names a configured VM driver (oned's rule at allocate and updateconf).
    check_raw(parse('RAW = [ TYPE = "KVM", DATA = "<x/>" ]'), ("dummy", "kvm"))
    for raw in ('RAW = [ TYPE = "lxc", DATA = "x" ]', 'RAW = [ DATA = "x" ]'):
        with pytest.raises(ValidationError, match=r"^Invalid RAW section: unsupported TYPE$"):
            check_raw(parse(raw), ("dummy", "kvm"))
    # As oned: a VM created without CONTEXT gets none later (no context CD-ROM to change).
    for merge in (False, True):
        with pytest.raises(ValidationError, match=r"^Virtual machine does not have context, "
                                                  r"cannot add a new one\.$"):
            reconfigured(parse("CPU = 1"), parse('CONTEXT = [ A = "1" ]'), merge=merge)
