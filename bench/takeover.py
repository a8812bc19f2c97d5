"""What a re-election costs mid-burst: used by ``bench_scale.py --step-down-at N``.

When ``N`` VMs are RUNNING, :func:`step_down_at` ends the daemon's lease in
the database (as an expiry would: its next renewal is refused), so the daemon
stops leading, waits one lease time (nobody else competes) and is elected
again under a new epoch. It samples the daemon every 50 ms meanwhile and
returns, in seconds from the moment the lease was ended:

* ``takeover_deposed_s``: the daemon stopped leading;
* ``takeover_elected_s``: it led again (new epoch);
* ``takeover_first_pass_s``: its scheduler began a pass (recovery done);
* ``takeover_first_deploy_s``: a driver deploy call started;
* ``takeover_first_running_s``: one more VM was RUNNING than when it was elected;
* ``takeover_normal_s``: VMs reached RUNNING, over 2 s, at half the rate of the
  10 s before the lease ended (nan if the burst ended first);
* ``takeover_stall_s``: the longest stretch with no new RUNNING VM after the end.

It also prints a line a second (RUNNING count, rate, leader, epoch, passes).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from sqlalchemy import text

from cloudburst import metrics
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.lease_keeper import lease_engine

_END_LEASE = text("UPDATE leases SET expires = extract(epoch from clock_timestamp()) - 1 "
                  "WHERE name = 'leader'")


def _deploy_calls() -> float:
    total = 0.0
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "cloudburst_driver_calls_total" and \
                    sample.labels.get("action") == "deploy":
                total += sample.value
    return total


async def step_down_at(daemon: Daemon, running_query: object, at: int, total: int
                       ) -> dict[str, float]:
    """Take the lease away when ``at`` VMs run; the takeover figures (see the doc)."""
    async def running() -> int:
        return int(await daemon.db.read(
            lambda connection: connection.execute(running_query).scalar_one()))

    history: deque[tuple[float, int]] = deque()
    while True:
        count = await running()
        now = time.monotonic()
        history.append((now, count))
        while history and history[0][0] < now - 10:
            history.popleft()
        if count >= at:
            break
        await asyncio.sleep(0.25)
    before_rate = (history[-1][1] - history[0][1]) / max(1e-9, history[-1][0] - history[0][0])
    old_epoch = daemon.leadership.epoch
    engine = lease_engine(daemon.settings.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(_END_LEASE)
    finally:
        engine.dispose()
    ended = time.monotonic()
    print(f"  lease ended at {count} RUNNING (epoch {old_epoch}; {before_rate:.0f} VMs/s "
          "over the 10 s before)", flush=True)
    figures = dict.fromkeys(("takeover_deposed_s", "takeover_elected_s", "takeover_first_pass_s",
                             "takeover_first_deploy_s", "takeover_first_running_s",
                             "takeover_normal_s"), math.nan)
    passes = daemon.scheduler.passes
    deploys = _deploy_calls()
    elected_running = None
    samples: deque[tuple[float, int]] = deque([(ended, count)])
    last_new, stall, printed = ended, 0.0, ended
    while True:
        await asyncio.sleep(0.05)
        now = time.monotonic()
        since = now - ended
        epoch = daemon.leadership.epoch
        if math.isnan(figures["takeover_deposed_s"]) and epoch != old_epoch:
            figures["takeover_deposed_s"] = since
        if math.isnan(figures["takeover_elected_s"]) and epoch is not None and \
                epoch != old_epoch:
            figures["takeover_elected_s"] = since
            passes, deploys = daemon.scheduler.passes, _deploy_calls()
        elected = not math.isnan(figures["takeover_elected_s"])
        if elected and math.isnan(figures["takeover_first_pass_s"]) and \
                daemon.scheduler.passes > passes:
            figures["takeover_first_pass_s"] = since
        if elected and math.isnan(figures["takeover_first_deploy_s"]) and \
                _deploy_calls() > deploys:
            figures["takeover_first_deploy_s"] = since
        if now - samples[-1][0] < 0.25:
            continue
        count = await running()
        now = time.monotonic()
        if count > samples[-1][1]:
            stall = max(stall, now - last_new)
            last_new = now
        samples.append((now, count))
        while samples[0][0] < now - 2:
            samples.popleft()
        if elected:
            if elected_running is None:
                elected_running = count
            elif math.isnan(figures["takeover_first_running_s"]) and count > elected_running:
                figures["takeover_first_running_s"] = now - ended
            rate = (count - samples[0][1]) / max(1e-9, now - samples[0][0])
            if math.isnan(figures["takeover_normal_s"]) and now - samples[0][0] >= 1.5 and \
                    rate >= before_rate / 2:
                figures["takeover_normal_s"] = now - ended
        if now - printed >= 1:
            printed = now
            rate = (count - samples[0][1]) / max(1e-9, now - samples[0][0])
            print(f"  +{now - ended:6.1f} s  running {count:6d} ({rate:5.0f}/s)  leader "
                  f"{daemon.leadership.is_leader!s:5}  epoch {epoch}  passes "
                  f"{daemon.scheduler.passes}", flush=True)
        if not math.isnan(figures["takeover_normal_s"]) or count >= total:
            break
    figures["takeover_stall_s"] = max(stall, time.monotonic() - last_new)
    figures["takeover_rate_before"] = before_rate
    return figures
