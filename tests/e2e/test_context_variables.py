"""``$VARIABLE`` references in CONTEXT: cloudburst expands them as the OpenNebula 6.10
peer does, at ``one.vm.allocate`` (a held VM shows them expanded), and refuses the
same malformed ones.

Both servers get the same user template (``SSH_PUBLIC_KEY``) and the same VM
template; each VM's CONTEXT is compared key by key, with each server's own VM id.
NIC references need the peer's virtual networks (cloudburst has none): they are
checked in tests/unit/test_template_variables.py.
"""

from __future__ import annotations

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
        contexts.append({key: value for key, value in context.items()
                         if key not in ("DISK_ID", "TARGET")})  # oned's CD-ROM disk
    peer, mine = contexts
    assert mine == peer
    assert peer["SET_HOSTNAME"] == "ctx-web" and peer["SSH_PUBLIC_KEY"] == KEY
    assert peer["OWNER"] == "0:oneadmin 0:oneadmin"
    assert peer["UNKNOWN"] == "(  )" and peer["KEPT"] == "\\$NAME"


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
