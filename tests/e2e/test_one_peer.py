"""The peer fixture itself: it starts a real OpenNebula, serves pyone and the Ruby CLI,
ordinary accounts see only their own objects, and it stops everything it started."""

from __future__ import annotations

from pathlib import Path

import pytest

from one_peer import OnePeer, peer_fixture, start_peer, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

one_peer = peer_fixture()


def test_pyone_and_the_ruby_cli_talk_to_the_same_peer(one_peer: OnePeer) -> None:
    one = one_peer.client()
    assert one.system.version().startswith("6.10")
    host_id = one_peer.add_host("fixture-host")
    try:
        assert "fixture-host" in one_peer.cli("onehost", "list")
        alice = one_peer.add_user("fixture-alice", "secret",
                                  quota="VM = [ CPU = 2, MEMORY = 1024, VMS = 3 ]")
        try:
            # An ordinary account does not see the host pool: it answers empty.
            assert not one_peer.client(alice.session).hostpool.info().HOST
            assert "fixture-host" not in one_peer.cli("onehost", "list",
                                                      session=alice.session)
        finally:
            one.user.delete(alice.id)
    finally:
        one.host.delete(host_id)


def test_the_peer_is_stopped_and_its_processes_gone(tmp_path: Path) -> None:
    with start_peer(tmp_path / "peer") as peer:
        pids = [int(line.split()[-1]) for line in
                (peer.dir / "var" / "peer.pids").read_text().split("\n") if line.strip()]
        assert pids
    for pid in pids:
        wait_until(lambda pid=pid: not _alive(pid), 5, f"peer process {pid} gone")


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status
