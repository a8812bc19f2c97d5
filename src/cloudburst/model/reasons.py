"""Why a VM went where it went, or why it waits: kept with the VM, shown by
``onevm show`` and ``one.vm.info`` (``<PLACEMENT>``).

A reason is small on purpose: the scheduler places 10,000 VMs in one pass, so
it keeps counts per refusal kind and a few named hosts of each, never a line
per host per VM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

#: Refusal kinds, in the order they are checked and shown.
EXCLUDED: Final = "excluded"
COOLOFF: Final = "cool-off"
BUDGET: Final = "budget"
QUOTA: Final = "quota"
CLOUD_RULE: Final = "cloud section"
REQUIREMENTS: Final = "requirements"
CAPACITY: Final = "capacity"
INSTANCE_TYPE: Final = "instance-type limit"
KINDS: Final = (EXCLUDED, COOLOFF, QUOTA, BUDGET, CLOUD_RULE, REQUIREMENTS, CAPACITY,
                INSTANCE_TYPE)

#: Hosts named per refusal kind.
EXAMPLES: Final = 3

LOCAL_TIER: Final = "local"
CLOUD_TIER: Final = "cloud"


@dataclass(frozen=True, slots=True)
class Refused:
    """``count`` hosts were refused for ``kind``; ``examples`` names a few of them."""

    kind: str
    count: int
    examples: tuple[str, ...] = ()


@dataclass(slots=True)
class PlacementReason:
    """The candidates a placement considered, the refusals, and the winner if any.

    Not frozen, for speed (one is made per placed VM); never change one: the
    VMs of a group share them.

    Attributes:
        message: one line (the VM's ``SCHED_MESSAGE`` while it waits).
        considered: hosts the scheduler looked at.
        refused: refusals by kind, in :data:`KINDS` order.
        host_id, host: the chosen host (``None``/"" while waiting).
        tier: ``local`` or ``cloud`` for the chosen host.
        price: the chosen cloud site's price per hour for the VM (``None``: unknown
            or local).
        rank: the chosen host's ``RANK`` score (default policy or the VM's).
        order: what decided among fitting hosts, e.g. ``"tier, price, RANK"``.
    """

    message: str
    considered: int = 0
    refused: tuple[Refused, ...] = ()
    host_id: int | None = None
    host: str = ""
    tier: str = ""
    price: float | None = None
    rank: float | None = None
    order: str = ""

    def to_json(self) -> str:
        body: dict[str, Any] = {"message": self.message, "considered": self.considered,
                                "refused": [[r.kind, r.count, list(r.examples)]
                                            for r in self.refused]}
        if self.host_id is not None:
            body |= {"host_id": self.host_id, "host": self.host, "tier": self.tier,
                     "price": self.price, "rank": self.rank, "order": self.order}
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PlacementReason | None:
        """The reason stored as ``text`` (``None`` for "" or anything unreadable)."""
        if not text:
            return None
        try:
            body = json.loads(text)
            refused = tuple(Refused(str(kind), int(count), tuple(str(e) for e in examples))
                            for kind, count, examples in body.get("refused", ()))
            host_id = body.get("host_id")
            price = body.get("price")
            rank = body.get("rank")
            return cls(
                message=str(body.get("message", "")), considered=int(body.get("considered", 0)),
                refused=refused, host_id=None if host_id is None else int(host_id),
                host=str(body.get("host", "")), tier=str(body.get("tier", "")),
                price=None if price is None else float(price),
                rank=None if rank is None else float(rank), order=str(body.get("order", "")))
        except (ValueError, TypeError, AttributeError):
            return None

    def summary(self) -> str:
        """One line: the waiting message, or where the VM went and why."""
        if self.host_id is None:
            return self.message
        if self.message:
            return self.message
        price = "" if self.price is None else f", {self.price:g}/h"
        rank = "" if self.rank is None else f", RANK {self.rank:g}"
        lower = self.considered - 1 - sum(refused.count for refused in self.refused)
        ranked = f"; {lower} other fitting host(s) ranked lower" if lower > 0 else ""
        return (f"Placed on {self.host} ({self.tier} tier{price}{rank}; order: {self.order})"
                f"{ranked}")

    def refusals_text(self) -> str:
        """``"2 for capacity (h1, h2); 1 for requirements (h3)"`` ("" when none)."""
        parts = []
        for refused in self.refused:
            named = f" ({', '.join(refused.examples)}" + (
                ", ...)" if refused.count > len(refused.examples) else ")")
            parts.append(f"{refused.count} for {refused.kind}"
                         f"{named if refused.examples else ''}")
        return "; ".join(parts)


def manual(host_id: int, host: str, tier: str, price: float | None) -> PlacementReason:
    """The reason of a placement an administrator chose (``one.vm.deploy``)."""
    return PlacementReason(message=f"Deployed on host {host} by one.vm.deploy (chosen by the "
                                   "caller, not the scheduler)", considered=1,
                           host_id=host_id, host=host, tier=tier, price=price,
                           order="chosen by the caller")
