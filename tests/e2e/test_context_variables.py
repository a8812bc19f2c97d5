"""``$VARIABLE`` references in CONTEXT: cloudburst expands them as the OpenNebula 6.10
peer does, at ``one.vm.allocate`` (a held VM shows them expanded), and refuses the
same malformed ones.

Both servers get the same user template (``SSH_PUBLIC_KEY``) and the same VM
template; each VM's CONTEXT is compared key by key, with each server's own VM id.
NIC references need the peer's virtual networks (cloudburst has none): they are
checked in tests/unit/test_template_variables.py.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from xml.etree import ElementTree

import pytest
from burst_helpers import RunningDaemon, conf_text, running_daemon
from differential import call

from one_peer import OnePeer, peer_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

one_peer = peer_fixture()

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIContextTest context@test"

TEMPLATE = """
NAME = "ctx-web"
CPU = 0.1
VCPU = 2
MEMORY = 64
FOO = "bar"
VEC = [ A = "1" ]
OS = [ ARCH = "x86_64" ]
CONTEXT = [
  SET_HOSTNAME = "$NAME",
  SSH_PUBLIC_KEY = "$USER[SSH_PUBLIC_KEY]",
  ID = "vm-$VMID",
  OWNER = "$UID:$UNAME $GID:$GNAME",
  SIZES = "$CPU/$VCPU/$MEMORY",
  MINE = "$foo",
  ARCH = "$OS[ ARCH ]-x",
  ARCH_IF = "$OS[ARCH, X=1]",
  SELF = "$CONTEXT[PLAIN]",
  USER_VECTOR = "$VEC[A]",
  UNKNOWN = "($NOPE $NOPE[X] $NAME[X])",
  PARTLY = "a$b",
  KEPT = "\\$NAME",
  WHOLE = "$TEMPLATE",
  PLAIN = "no references" ]
"""


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with running_daemon(tmp_path_factory.mktemp("cb"), conf_text()) as daemon:
        yield daemon


def _servers(peer: OnePeer, daemon: RunningDaemon) -> list[tuple[str, str]]:
    return [(peer.url, peer.session), (daemon.url, daemon.session)]


def _context(url: str, session: str, vm_id: int) -> dict[str, str]:
    reply = call(url, session, "one.vm.info", vm_id)
    assert isinstance(reply, list) and reply[0], reply
    root = ElementTree.fromstring(str(reply[1]))
    context = root.find("TEMPLATE/CONTEXT")
    assert context is not None
    return {child.tag: child.text or "" for child in context}


def _document_summary(encoded: str, vm_id: int) -> str:
    """What ``$TEMPLATE`` gave (the VM document in base64), read back: the parts both
    servers write alike, the CONTEXT as it was before its expansion."""
    root = ElementTree.fromstring(base64.b64decode(encoded, validate=True))
    assert root.tag == "VM" and root.findtext("ID") == str(vm_id)
    return " ".join(f"{path}={root.findtext(path)}" for path in (
        "NAME", "UID", "UNAME", "GNAME", "STATE", "LCM_STATE", "TEMPLATE/MEMORY",
        "TEMPLATE/VMID", "TEMPLATE/CONTEXT/WHOLE", "TEMPLATE/CONTEXT/SIZES",
        "USER_TEMPLATE/FOO", "USER_TEMPLATE/VEC/A"))


def test_context_references_expand_at_allocate_as_on_the_peer(
        one_peer: OnePeer, ours: RunningDaemon) -> None:
    contexts = []
    for url, session in _servers(one_peer, ours):
        updated = call(url, session, "one.user.update", 0, f'SSH_PUBLIC_KEY = "{KEY}"', 1)
        assert isinstance(updated, list) and updated[0], updated
        reply = call(url, session, "one.vm.allocate", TEMPLATE, True)
        assert isinstance(reply, list) and reply[0], (url, reply)
        vm_id = int(reply[1])
        try:
            context = _context(url, session, vm_id)
        finally:
            call(url, session, "one.vm.action", "terminate-hard", vm_id)
        assert context["ID"] == f"vm-{vm_id}", (url, context)
        context["ID"] = "vm-<id>"
        context["WHOLE"] = _document_summary(context["WHOLE"], vm_id)
        contexts.append({key: value for key, value in context.items()
                         if key not in ("DISK_ID", "TARGET")})  # oned's CD-ROM disk
    peer, mine = contexts
    assert mine == peer
    assert peer["SET_HOSTNAME"] == "ctx-web" and peer["SSH_PUBLIC_KEY"] == KEY
    assert peer["OWNER"] == "0:oneadmin 0:oneadmin"
    assert peer["UNKNOWN"] == "(  )" and peer["KEPT"] == "\\$NAME"
    assert "CONTEXT/WHOLE=$TEMPLATE" in peer["WHOLE"] and "STATE=2" in peer["WHOLE"]


@pytest.mark.parametrize("value", ["$", "cost: $$", "${NAME}", "$NIC[IP", "$NIC[IP, NETWORK_ID]",
                                   "$NAME]", "$OS[ARCH]x"])
def test_a_malformed_reference_is_refused_by_both(one_peer: OnePeer, ours: RunningDaemon,
                                                  value: str) -> None:
    template = f'CPU = 0.1\nMEMORY = 64\nCONTEXT = [ V = "{value}" ]'
    replies = [call(url, session, "one.vm.allocate", template, True)
               for url, session in _servers(one_peer, ours)]
    for reply in replies:
        assert isinstance(reply, list) and not reply[0], replies
    message = str(replies[1][1])  # type: ignore[index]
    assert "CONTEXT/V" in message and "\n" not in message, message


def test_updateconf_replaces_and_expands_context_and_update_does_not(
        one_peer: OnePeer, ours: RunningDaemon) -> None:
    """``one.vm.update`` leaves the expanded CONTEXT alone (a CONTEXT in the user
    template is kept as written); ``one.vm.updateconf`` replaces it and expands
    the new one with the VM as it is now; without a CONTEXT it keeps it."""
    steps: list[list[object]] = []
    for url, session in _servers(one_peer, ours):
        reply = call(url, session, "one.vm.allocate",
                     'CPU = 0.1\nMEMORY = 64\nFOO = "bar"\nCONTEXT = [ F = "$FOO" ]', True)
        assert isinstance(reply, list) and reply[0], (url, reply)
        vm_id = int(reply[1])
        seen: list[object] = []
        try:
            for method, text, kind in (
                    ("one.vm.update", 'FOO = "baz"\nCONTEXT = [ Z = "$NAME" ]', 0),
                    ("one.vm.updateconf",
                     'CONTEXT = [ F = "$FOO", N = "$NAME", W = "$TEMPLATE" ]\nCPU = 4', 0),
                    ("one.vm.updateconf", 'GRAPHICS = [ TYPE = "vnc" ]', 0),
                    ("one.vm.updateconf", 'CONTEXT = [ M = "$MEMORY" ]', 1),
                    ("one.vm.updateconf", 'CONTEXT = [ A = "$X[" ]', 0),
                    ("one.vm.updateconf", 'CONTEXT = [ B = "1" ]', 2)):
                answer = call(url, session, method, vm_id, text, kind)
                assert isinstance(answer, list)
                context = _context(url, session, vm_id)
                if "W" in context:
                    summary = _document_summary(context["W"], vm_id)
                    assert "CONTEXT/WHOLE=None" in summary and "STATE=2" in summary
                    assert f"TEMPLATE/VMID={vm_id}" in summary
                    context["W"] = summary
                if "N" in context:
                    assert context["N"] == f"one-{vm_id}"
                    context["N"] = "one-<id>"
                seen.append((bool(answer[0]), sorted(context.items())))
            xml = call(url, session, "one.vm.info", vm_id)
            assert isinstance(xml, list)
            root = ElementTree.fromstring(str(xml[1]))
            assert root.findtext("TEMPLATE/CPU") == "0.1"
            assert root.findtext("USER_TEMPLATE/CONTEXT/Z") == "$NAME"
        finally:
            call(url, session, "one.vm.action", "terminate-hard", vm_id)
        steps.append(seen)
    peer, mine = steps
    assert mine == peer
    assert [ok for ok, _ in peer] == [True, True, True, True, False, False]
    after_update, after_conf, after_graphics, after_merge = (dict(c) for _, c in peer[:4])
    assert after_update["F"] == "bar" and "Z" not in after_update
    assert after_conf["F"] == "baz" and "DISK_ID" in after_conf
    assert after_graphics == after_conf
    assert after_merge == {**after_conf, "M": "64"}
