"""Shared pieces of the tenancy commands (oneuser, onegroup, oneacl, onecluster, oneaudit):
a plain table row, name-or-id lookup, and the quota cells and tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree import ElementTree

from cloudburst.cli.client import Client, CliError, number, text


@dataclass(frozen=True, slots=True)
class Row:
    """A ``list`` line: its cells (one per column) and its JSON object."""

    values: list[str]
    data: dict[str, object] = field(default_factory=dict)

    def cells(self) -> list[str]:
        return self.values

    def as_json(self) -> dict[str, object]:
        return self.data


def find_id(client: Client, token: str, pool_method: str, tag: str,
            *params: object) -> int:
    """An object id given as a number or a name (looked up in ``pool_method``'s ``tag``s).

    Raises:
        CliError: nothing of that kind has that name (OpenNebula's wording).
    """
    if token.lstrip("-").isdigit():
        return int(token)
    for element in client.document(pool_method, *params).findall(tag):
        if text(element, "NAME") == token:
            return number(element, "ID")
    raise CliError(f"{tag} named {token} not found.")


def _limit(value: str) -> str:
    return "-" if value in ("", "-1", "-2") else value


def quota_cell(quota: ElementTree.Element | None, metric: str, *, memory: bool = False,
               cpu: bool = False, money: bool = False) -> str:
    """``used / limit`` of one VM quota metric (``-`` when unlimited), as oneuser list."""
    if quota is None:
        used, limit = "0", "-"
    else:
        used, limit = text(quota, f"{metric}_USED", "0"), _limit(text(quota, metric))
    if memory:
        return f"{float(used):.0f}M / {limit if limit == '-' else limit + 'M':>5}"
    if cpu:
        return f"{float(used):.1f} / {limit:>5}"
    if money:
        return f"{used} / {limit:>7}"
    return f"{used} / {limit:>3}"


def total_quota(element: ElementTree.Element) -> ElementTree.Element | None:
    """The all-clusters ``VM`` entry of an element's ``VM_QUOTA`` (None when none)."""
    for vm in element.findall("VM_QUOTA/VM"):
        if vm.find("CLUSTER_ID") is None:
            return vm
    return None


def quota_tables(element: ElementTree.Element) -> list[str]:
    """The ``VMS USAGE & QUOTAS`` sections of ``oneuser show``/``onegroup show``."""
    lines = ["VMS USAGE & QUOTAS", ""]
    for vm in element.findall("VM_QUOTA/VM") or [None]:  # type: ignore[list-item]
        where = "" if vm is None or vm.find("CLUSTER_ID") is None else (
            f" (CLUSTER {text(vm, 'CLUSTER_ID')})")
        lines.append(f"{'VMS':>17}{'MEMORY':>21}{'CPU':>21}{where}")
        lines.append(f"{quota_cell(vm, 'VMS'):>17}{quota_cell(vm, 'MEMORY', memory=True):>21}"
                     f"{quota_cell(vm, 'CPU', cpu=True):>21}")
    lines += ["", "VMS USAGE & QUOTAS - RUNNING", ""]
    for vm in element.findall("VM_QUOTA/VM") or [None]:  # type: ignore[list-item]
        lines.append(f"{'RUNNING VMS':>17}{'RUNNING MEMORY':>21}{'RUNNING CPU':>21}")
        lines.append(f"{quota_cell(vm, 'RUNNING_VMS'):>17}"
                     f"{quota_cell(vm, 'RUNNING_MEMORY', memory=True):>21}"
                     f"{quota_cell(vm, 'RUNNING_CPU', cpu=True):>21}")
    return [*lines, "", *budget_table(element)]


def budget_table(element: ElementTree.Element) -> list[str]:
    """The ``BUDGETS`` section of ``oneuser show``, ``onegroup show``, ``onecluster show``."""
    lines = ["BUDGETS (cloud spending)", ""]
    for vm in element.findall("VM_QUOTA/VM") or [None]:  # type: ignore[list-item]
        where = "" if vm is None or vm.find("CLUSTER_ID") is None else (
            f" (CLUSTER {text(vm, 'CLUSTER_ID')})")
        lines.append(f"{'HOURLY COST':>21}{'MONTHLY COST':>25}{where}")
        lines.append(f"{quota_cell(vm, 'HOURLY_COST', money=True):>21}"
                     f"{quota_cell(vm, 'MONTHLY_COST', money=True):>25}")
    return lines
