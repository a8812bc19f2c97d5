"""Where a kvm host's context CD-ROM goes: a file the hypervisor reads, or a volume
uploaded into a storage pool of a hypervisor on another machine."""

from __future__ import annotations

import pytest

from cloudburst.drivers.base import HostRef
from cloudburst.drivers.kvm.connection import is_remote
from cloudburst.drivers.kvm.settings import HostSettings


@pytest.mark.parametrize(("uri", "remote"), [
    ("qemu:///system", False), ("qemu:///session", False),
    ("qemu+unix:///session?socket=/tmp/x/libvirt-sock", False),
    ("qemu+ssh://localhost/system", False), ("test:///default", False),
    ("qemu+ssh://node1/system", True), ("qemu+tcp://10.0.0.5/system", True),
    ("qemu+ssh://root@node1.example:2222/system", True),
])
def test_a_uri_naming_another_machine_is_remote(uri: str, remote: bool) -> None:
    assert is_remote(uri) is remote


def test_remote_hosts_upload_into_a_pool_local_ones_write_files() -> None:
    # a host not called localhost is reached with qemu+ssh: its pool "default"
    assert HostSettings.of(HostRef(1, "node1")).context_pool == "default"
    assert HostSettings.of(HostRef(2, "node1", {"CONTEXT_POOL": "iso"})).context_pool == "iso"
    local = {"LIBVIRT_URI": "qemu:///system"}
    assert HostSettings.of(HostRef(3, "h", local)).context_pool is None
    assert HostSettings.of(HostRef(4, "h", {**local, "CONTEXT_POOL": "ctx"})).context_pool == "ctx"
