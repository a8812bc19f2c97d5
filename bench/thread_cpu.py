"""Per-thread CPU of this process, for the benches that run the daemon in-process."""

from __future__ import annotations

import os
import threading


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each live thread, by name
    (the loop is ``MainThread``; a pool's threads add up under their prefix)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat", encoding="ascii") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        name = thread.name.rpartition("_")[0] or thread.name
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used
