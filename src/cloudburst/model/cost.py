"""What a VM costs per hour: OpenNebula's showback attributes, one rule for everyone.

A VM template may carry ``CPU_COST`` (per CPU per hour) and ``MEMORY_COST``
(per MB per hour, or per GB with ``MEMORY_UNIT_COST="GB"``), as in
OpenNebula's showback. A VM with neither has no known cost (``None``), which
is not the same as a free VM. Cloud price tables, where a driver provides
them, are to plug in here, so every view agrees on one figure.
"""

from __future__ import annotations

import math

from cloudburst.template import Template

__all__ = ["hourly_cost"]


def _rate(template: Template, name: str) -> float | None:
    text = template.get(name)
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def hourly_cost(template: Template, cpu: float, memory_mb: int) -> float | None:
    """The VM's cost per hour from its template, or ``None`` when none is set."""
    cpu_rate = _rate(template, "CPU_COST")
    memory_rate = _rate(template, "MEMORY_COST")
    if cpu_rate is None and memory_rate is None:
        return None
    unit = (template.get("MEMORY_UNIT_COST") or "MB").strip().upper()
    memory = memory_mb / 1024 if unit == "GB" else memory_mb
    return (cpu_rate or 0.0) * cpu + (memory_rate or 0.0) * memory
