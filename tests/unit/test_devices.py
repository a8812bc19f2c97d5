"""A VM's devices numbered and completed as oned 6.10.5 does (values seen on the peer)."""

from __future__ import annotations

from cloudburst.model import devices
from cloudburst.template import Template, parse


def test_disks_nics_and_context_are_numbered_and_completed_as_oned() -> None:
    template = parse(
        'DISK = [ TYPE = fs, SIZE = 10, DEV_PREFIX = vd ]\n'
        'DISK = [ TYPE = fs, SIZE = 10, TARGET = sdf ]\n'
        'DISK = [ TYPE = fs, SIZE = 30, FORMAT = qcow2, DISK_ID = 9 ]\n'
        'DISK = [ TYPE = swap, SIZE = 20, DRIVER = qcow2 ]\n'
        'NIC = [ BRIDGE = br0, NAME = "mine" ]\n'
        'NIC = [ BRIDGE = br1, MAC = "02:00:00:00:00:01" ]\n'
        'NIC_ALIAS = [ BRIDGE = br1, PARENT = NIC1 ]\n'
        'CONTEXT = [ NETWORK = YES ]\nGRAPHICS = [ TYPE = vnc ]\n')
    done = devices.numbered(template)
    disks = done.vectors("DISK")
    assert [(d["DISK_ID"], d["DEV_PREFIX"], d["TARGET"], d["FORMAT"], d["DRIVER"])
            for d in disks] == [("0", "vd", "vda", "raw", "raw"), ("1", "sd", "sdf", "raw", "raw"),
                                ("2", "sd", "sda", "qcow2", "qcow2"),
                                ("3", "sd", "sdb", "raw", "raw")]
    assert {d["DISK_TYPE"] for d in disks} == {"FILE"}
    nics = done.vectors("NIC")
    assert [(n["NIC_ID"], n["NAME"], n.get("ALIAS_IDS")) for n in nics] == [
        ("0", "mine", None), ("1", "NIC1", "2")]
    assert done.get_vector("NIC_ALIAS") == {"BRIDGE": "br1", "PARENT": "NIC1", "NIC_ID": "2",
                                            "NAME": "NIC1_ALIAS2", "ALIAS_ID": "0",
                                            "PARENT_ID": "1"}
    context = done.get_vector("CONTEXT")
    assert context is not None
    assert (context["DISK_ID"], context["TARGET"]) == ("4", "hda")
    assert (context["ETH1_MAC"], context["ETH0_MAC"], context["ETH0_IP"]) == (
        "02:00:00:00:00:01", "", "")
    assert len([key for key in context if key.startswith("ETH0_")]) == 21
    assert len([key for key in context if key.startswith("ETH1_ALIAS0_")]) == 21
    assert done.get_vector("GRAPHICS") == {"TYPE": "vnc"}  # the host picks the port
    assert done.names() == template.names()  # same attributes, same order


def test_a_disk_the_driver_places_keeps_what_was_given_and_the_context_follows_it() -> None:
    done = devices.numbered(parse('DISK = [ SOURCE = "/img/a" ]\nDISK = [ TYPE = swap, '
                                  'SIZE = 1, DEV_PREFIX = hd ]\nCONTEXT = [ X = 1 ]\n'))
    assert done.vectors("DISK")[0] == {"SOURCE": "/img/a", "DISK_ID": "0"}
    assert done.vectors("DISK")[1]["TARGET"] == "hdc"  # hda: the kvm driver's, hdb: context
    assert done.get_vector("CONTEXT") == {"X": "1", "DISK_ID": "2", "TARGET": "hdb"}


def test_hot_plugged_devices_continue_the_numbering_on_free_targets() -> None:
    vm = devices.numbered(parse('DISK = [ TYPE = fs, SIZE = 1 ]\nNIC = [ BRIDGE = b ]\n'
                                'NIC_ALIAS = [ PARENT = NIC0 ]\nCONTEXT = [ X = 1 ]\n'))
    disk_id = devices.next_id(vm, "DISK")
    assert disk_id == 1
    assert devices.attached(vm, "DISK", {"TYPE": "fs", "SIZE": "5"}, disk_id) == {
        "TYPE": "fs", "SIZE": "5", "DISK_ID": "1", "DEV_PREFIX": "sd", "TARGET": "sdb",
        "DISK_TYPE": "FILE", "FORMAT": "raw", "DRIVER": "raw"}
    assert devices.next_id(vm, "NIC") == 2  # after the alias
    assert devices.attached(vm, "NIC", {"BRIDGE": "b"}, 2) == {"BRIDGE": "b", "NIC_ID": "2",
                                                             "NAME": "NIC2"}
    assert devices.next_id(Template(), "NIC") == 0
