"""The driver work on its way to the drivers (:class:`cloudburst.drivers.base.Backlog`).

Between the state change that starts a VM's work and the driver call there
are store reads, a deployment file and the dispatcher; for a burst of a
thousand VMs that takes seconds, and a driver that batches would otherwise
cut its batches whenever the trickle pauses. The life-cycle manager notes
each work here when it starts and drops it when the work reaches the driver
(or ends without reaching it); batching drivers read :meth:`WorkBacklog.waiting`.

It is in memory and per daemon: it only tells a driver of this process that
more is coming, it decides nothing about what is launched.
"""

from __future__ import annotations

from collections.abc import Collection


class WorkBacklog:
    """VMs whose work has started and not yet reached their host's driver."""

    def __init__(self) -> None:
        #: host id -> work label -> VM ids
        self._by_host: dict[int, dict[str, set[int]]] = {}
        #: (host id, VM id) -> work label
        self._labels: dict[tuple[int, int], str] = {}

    def add(self, host_id: int, label: str, vm_id: int) -> None:
        """VM ``vm_id``'s ``label`` work for host ``host_id`` is on its way."""
        self.discard(host_id, vm_id)
        self._labels[(host_id, vm_id)] = label
        self._by_host.setdefault(host_id, {}).setdefault(label, set()).add(vm_id)

    def discard(self, host_id: int, vm_id: int) -> None:
        """The VM's work reached the driver or ended (no-op when not noted)."""
        label = self._labels.pop((host_id, vm_id), None)
        if label is None:
            return
        labels = self._by_host[host_id]
        labels[label].discard(vm_id)
        if not labels[label]:
            del labels[label]
            if not labels:
                del self._by_host[host_id]

    def waiting(self, host_id: int, actions: Collection[str]) -> int:
        labels = self._by_host.get(host_id)
        if not labels:
            return 0
        return sum(len(labels.get(action, ())) for action in actions)
