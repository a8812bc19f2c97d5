"""Formulas and formatting of the CLI's list columns (spec/opennebula.md 3.4, 7.1-7.3)."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from cloudburst.api.documents import vm_pool_document
from cloudburst.cli import onehost, onevm
from cloudburst.cli.tables import (
    Column,
    allocated,
    elapsed,
    period,
    render_table,
    short_date,
    template_json,
    unit_to_str,
)
from cloudburst.model.records import HistoryRecord, VmRecord
from cloudburst.model.states import LcmState, VmState
from cloudburst.template import Template
from seed_templates import SEED_ONEHOST_LIST

HOST_COLUMNS = [column for column in onehost.LIST_COLUMNS if column.default]


@pytest.mark.parametrize(("kilobytes", "unit", "shown"), [
    (0, "K", "0K"),
    (512, "K", "512K"),
    (1024, "K", "1024K"),
    (1025, "K", "1M"),
    (1126, "K", "1.1M"),
    (8912896, "K", "8.5G"),
    (16777216, "K", "16G"),
    (1887437, "K", "1.8G"),
    (1048576, "K", "1024M"),
    (1073741824, "K", "1024G"),
    (2147483648, "K", "2T"),
    (5 * 1073741824 * 1024, "K", "5120T"),
    (512, "M", "512M"),
    (2048.5, "M", "2G"),
])
def test_unit_to_str(kilobytes: float, unit: str, shown: str) -> None:
    assert unit_to_str(kilobytes, unit) == shown


def test_unit_to_str_rounds_half_up() -> None:
    # 1.25 M exactly: Python's round() would give 1.2.
    assert unit_to_str(1280) == "1.3M"


@pytest.mark.parametrize(("usage", "maximum", "memory", "shown"), [
    (0, 500, False, "0 / 500 (0%)"),
    (0, 8912896, True, "0K / 8.5G (0%)"),
    (0, 0, False, "-"),
    (0, 0, True, "-"),
    (50, 0, False, "50 / -"),
    (131072, 0, True, "128M / -"),
    (333, 800, False, "333 / 800 (41%)"),
    (1048576, 16777216, True, "1024M / 16G (6%)"),
    (900, 800, False, "900 / 800 (112%)"),
])
def test_allocated(usage: int, maximum: int, memory: bool, shown: str) -> None:
    assert allocated(usage, maximum, memory=memory) == shown


def test_cells_are_padded_truncated_and_aligned() -> None:
    right, left = Column("N", 4), Column("NAME", 5, left=True)
    assert right.cell("7") == "   7"
    assert left.cell("ab") == "ab   "
    assert left.cell("abcdefgh") == "abcde"
    assert right.cell("123456") == "1234"
    lines = render_table([right, left], [["1", "x"], ["22", "yy"]])
    assert lines == ["   N NAME", "   1 x", "  22 yy"]


def test_onehost_list_reproduces_the_cloud_bursting_guide() -> None:
    expected = SEED_ONEHOST_LIST.splitlines()
    rows = [
        onehost.HostRow(id=2, name="kvm-", cluster="", running_vms=0, cpu_usage=0,
                        max_cpu=800, mem_usage=0, max_mem=16777216, stat="on", reason=""),
        onehost.HostRow(id=3, name="kvm-1", cluster="", running_vms=0, cpu_usage=0,
                        max_cpu=100, mem_usage=0, max_mem=1887437, stat="on", reason=""),
        onehost.HostRow(id=4, name="remote_provider", cluster="", running_vms=0, cpu_usage=0,
                        max_cpu=500, mem_usage=0, max_mem=8912896, stat="on", reason=""),
    ]
    lines = render_table(HOST_COLUMNS, [row.cells()[:-1] for row in rows])
    # The guide's ID column lost two leading blanks in the rendering (width 4 in 3.8-4.x).
    assert [line[2:] for line in lines] == expected


def test_stat_column_is_coloured_on_a_terminal() -> None:
    row = onehost.HostRow(id=0, name="h", cluster="default", running_vms=0, cpu_usage=0,
                          max_cpu=0, mem_usage=0, max_mem=0, stat="err", reason="")
    plain = render_table(HOST_COLUMNS, [row.cells()[:-1]])
    coloured = render_table(HOST_COLUMNS, [row.cells()[:-1]], colour=True)
    assert "\033[" not in "".join(plain)
    assert coloured[0].startswith("\033[1;4m")
    assert "\033[91merr" in coloured[1]
    assert plain[1].endswith(" - err")


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "00 00:00:00"),
    (423, "00 00:07:03"),
    (90061, "01 01:01:01"),
    (-5, "00 00:00:00"),
])
def test_elapsed(seconds: int, shown: str) -> None:
    assert elapsed(seconds) == shown


def test_short_date() -> None:
    assert short_date(0) == "-"
    assert len(short_date(1_700_000_000)) == len("11/14 22:13:20")


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "  0d 00h00m"),
    (423, "  0d 00h07m"),
    (90061, "  1d 01h01m"),
    (1000 * 86400, "1000d 00h00m"),
    (-5, "  0d 00h00m"),
])
def test_period(seconds: int, shown: str) -> None:
    assert period(seconds) == shown


def _vm(vm_id: int, state: VmState, lcm_state: LcmState, *, etime: int = 0,
        monitoring: dict[str, str] | None = None) -> VmRecord:
    history = (HistoryRecord(vm_id=vm_id, seq=0, host_id=4, hostname="remote_provider",
                             vm_mad="dummy", tm_mad="dummy", stime=1000),)
    return VmRecord(
        id=vm_id, name=f"one-{vm_id}", uid=0, gid=0, state=state, lcm_state=lcm_state,
        prev_state=state, prev_lcm_state=lcm_state, stime=1000, etime=etime, deploy_id="i-1",
        host_id=4, template=Template([("CPU", "1"), ("MEMORY", "128")]),
        user_template=Template(), cpu=1.0, memory=128, version=0,
        monitoring=monitoring or {}, history=history)


def _rows(vms: list[VmRecord], now: int) -> list[onevm.VmRow]:
    pool = ElementTree.fromstring(vm_pool_document(vms, extended=False,
                                                   uname=lambda uid: "oneadmin",
                                                   gname=lambda gid: "oneadmin"))
    return [onevm.vm_row(vm, now) for vm in pool.findall("VM")]


def test_onevm_list_rows() -> None:
    running = _vm(0, VmState.ACTIVE, LcmState.RUNNING,
                  monitoring={"CPU": "12.7", "MEMORY": "8912896"})
    off = _vm(1, VmState.POWEROFF, LcmState.LCM_INIT)
    done = _vm(2, VmState.DONE, LcmState.LCM_INIT, etime=1060)
    held = _vm(3, VmState.HOLD, LcmState.LCM_INIT)
    failed = _vm(4, VmState.ACTIVE, LcmState.BOOT_FAILURE)
    rows = _rows([running, off, done, held, failed], now=1423)

    # OpenNebula 6: the allocated CPU and memory (not the monitored usage), the group.
    assert rows[0].cells() == ["0", "oneadmin", "oneadmin", "one-0", "runn", "1", "128M",
                               "remote_provider", "  0d 00h07m", ""]
    assert [row.stat for row in rows] == ["runn", "poff", "done", "hold", "fail"]
    # HOST only while ACTIVE, SUSPENDED or POWEROFF.
    assert [row.host for row in rows] == ["remote_provider", "remote_provider", None, None,
                                          "remote_provider"]
    # TIME runs to ETIME once the VM has ended.
    assert rows[2].time == 60
    assert rows[3].cells()[5:7] == ["1", "128M"]
    assert rows[0].as_json() == {"ID": 0, "USER": "oneadmin", "GROUP": "oneadmin",
                                 "NAME": "one-0", "STAT": "runn", "CPU": 1, "MEM": 128,
                                 "HOST": "remote_provider", "TIME": 423, "IP": None}


def test_onevm_list_layout() -> None:
    vm = _vm(0, VmState.ACTIVE, LcmState.RUNNING, monitoring={"IP": "10.0.0.7"})
    assert onevm.vm_table(ElementTree.fromstring(vm_pool_document(
        [vm], extended=False, uname=lambda uid: "oneadmin",
        gname=lambda gid: "oneadmin")).findall("VM"))[0] == (
        "  ID USER     GROUP    NAME            STAT  CPU     MEM HOST             TIME")
    [row] = _rows([vm], now=1423)
    lines = render_table(onevm.LIST_COLUMNS, [row.cells()])
    # As OpenNebula 6.10's onevm list (TIME cut to its 10 characters), plus the IP asked for.
    assert lines == [
        "  ID USER     GROUP    NAME            STAT  CPU     MEM HOST             TIME IP",
        "   0 oneadmin oneadmin one-0           runn    1    128M remote_pro   0d 00h07 10.0.0.7",
    ]


def test_template_json_keeps_repeats_as_lists() -> None:
    template = Template([("CPU", "1"), ("DISK", {"IMAGE": "a"}), ("DISK", {"IMAGE": "b"})])
    assert template_json(template) == {"CPU": "1",
                                       "DISK": [{"IMAGE": "a"}, {"IMAGE": "b"}]}
