"""What a VM costs: one rule for the scheduler, budgets, documents and the dashboard.

Two sources of a price per hour:

* **Cloud sites** price the instance a VM gets there: the site's offers
  (``INSTANCE_TYPES``, what the EC2 information driver reports from its price
  table, :mod:`cloudburst.model.offers`), else its ``PRICE_PER_HOUR``. A site's
  host template (probes or ``onehost update``) carries ``PRICE_PER_HOUR``, either one figure
  for every instance (``PRICE_PER_HOUR = 0.05``, what a script provider's probe
  prints) or one per instance type in the ``CAPACITY`` key form
  (``PRICE_PER_HOUR = [ M1_SMALL = 0.02, T3_MICRO = 0.0104 ]``); a type missing
  from the vector falls back to its ``DEFAULT`` entry. The price of a stay is
  recorded when it opens (``history.price``), so a later price change does not
  rewrite what was spent.
* **Local hosts** are already paid for: they rank as free. A template's
  OpenNebula showback attributes (``CPU_COST`` per CPU per hour, ``MEMORY_COST``
  per MB per hour, or per GB with ``MEMORY_UNIT_COST="GB"``) still give a local
  VM a shown cost; budgets count recorded stay prices only, i.e. cloud spending.

``None`` means "no known price", which is not the same as free.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Iterable

from cloudburst.model import offers
from cloudburst.model.capacity import capacity_key
from cloudburst.model.records import VmRecord
from cloudburst.template import Template

__all__ = ["SECONDS_PER_HOUR", "accrued", "hourly_cost", "money", "month_start", "site_price",
           "stay_cost", "vm_figures", "vm_price"]

SECONDS_PER_HOUR = 3600.0

#: The host attribute holding a site's prices.
PRICE_ATTRIBUTE = "PRICE_PER_HOUR"


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def hourly_cost(template: Template, cpu: float, memory_mb: int) -> float | None:
    """The VM's showback cost per hour from its template, or ``None`` when none is set."""
    cpu_rate = _number(template.get("CPU_COST"))
    memory_rate = _number(template.get("MEMORY_COST"))
    if cpu_rate is None and memory_rate is None:
        return None
    unit = (template.get("MEMORY_UNIT_COST") or "MB").strip().upper()
    memory = memory_mb / 1024 if unit == "GB" else memory_mb
    return (cpu_rate or 0.0) * cpu + (memory_rate or 0.0) * memory


def site_price(host_template: Template, instance_type: str | None) -> float | None:
    """The hourly price of ``instance_type`` at a cloud site (``None``: unknown): the
    site's ``INSTANCE_TYPES`` offers (:mod:`cloudburst.model.offers`), else its
    ``PRICE_PER_HOUR``."""
    listed = offers.price_of(offers.offers_of(host_template), instance_type)
    if listed is not None:
        return listed
    table = host_template.get_vector(PRICE_ATTRIBUTE)
    if table is None:
        return _number(host_template.get(PRICE_ATTRIBUTE))
    if instance_type:
        found = _number(table.get(capacity_key(instance_type)))
        if found is not None:
            return found
    return _number(table.get("DEFAULT"))


def vm_price(stay_price: float | None, template: Template, cpu: float,
             memory_mb: int) -> float | None:
    """A VM's current hourly price: its stay's recorded cloud price, else its showback."""
    return stay_price if stay_price is not None else hourly_cost(template, cpu, memory_mb)


def vm_figures(vm: VmRecord, now: float | None = None) -> tuple[float | None, float]:
    """``(price per hour now, cost accrued so far)`` of a VM (with its history).

    The price now is its open stay's (``None`` when it holds no host or none is
    known); the cost sums every stay at its recorded price, or the VM's
    showback rate for stays without one.
    """
    showback = hourly_cost(vm.full_template(), vm.cpu, vm.memory)
    stays = [(showback if stay.price is None else stay.price, stay.stime, stay.etime)
             for stay in vm.history]
    last = vm.last_history
    current = None
    if last is not None and last.etime == 0:
        current = showback if last.price is None else last.price
    return current, accrued(stays, now)


def stay_cost(price: float | None, start: int, end: int, now: float,
              since: float = 0.0) -> float:
    """What a stay from ``start`` to ``end`` (0: still open) at ``price`` cost,
    counting only the part after ``since``."""
    if price is None or start <= 0:
        return 0.0
    finish = end if end > 0 else now
    begin = max(float(start), since)
    return price * max(0.0, finish - begin) / SECONDS_PER_HOUR


def accrued(stays: Iterable[tuple[float | None, int, int]], now: float | None = None,
            since: float = 0.0) -> float:
    """The cost of ``(price, start, end)`` stays up to ``now`` (after ``since``)."""
    moment = time.time() if now is None else now
    return sum(stay_cost(price, start, end, moment, since) for price, start, end in stays)


def money(value: float) -> str:
    """A figure as shown everywhere: at most 6 decimals, no trailing zeros."""
    return f"{round(value, 6):.6f}".rstrip("0").rstrip(".")


def month_start(now: float | None = None) -> float:
    """UNIX time of the start of the current calendar month (UTC): monthly budgets' window."""
    moment = time.gmtime(time.time() if now is None else now)
    return float(calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0)))
