"""The pool-entry cache of ``one.vmpool.info`` (api/vm_pool_cache.py) in a daemon run in
this process: what the warmer renders ahead stays rendered when a page is listed, and
the entries of VMs that are DONE are forgotten, or trimmed past a bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

from test_daemon import make_home, run, running, wait_until

from cloudburst.api.vm_pool_cache import VmPoolCache

HELD = 'NAME = "c"\nCPU = 0.1\nMEMORY = 32\n'


def test_entries_rendered_ahead_outlive_a_page_and_done_ones_are_forgotten(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(make_home(tmp_path)) as daemon:
            cache = VmPoolCache(spare=5)
            warmer = asyncio.create_task(cache.keep_warm(daemon))
            try:
                # Created after the warmer's first pass (as in a burst): rendered once quiet.
                ids = [await daemon.vms.allocate(HELD, hold=True) for _ in range(30)]
                every = await daemon.vms.pool_stamps(state=-2, descending=True)
                await wait_until(lambda: cache.rendered(every) == 30, 60,
                                 "the warmer to render the 30 VMs")
                # A page of 10 keeps the others' entries (it used to drop them: the count of
                # VMs not DONE was the one at the warmer's first pass, 0).
                await cache.document(daemon, every[:10], extended=False)
                assert cache.rendered(every) == 30
                for vm_id in ids[10:]:
                    await daemon.vms.action("terminate-hard", vm_id)
                done = await daemon.vms.pool_stamps(state=6, descending=True)
                assert len(done) == 20
                # The warmer forgets DONE VMs (a listing of them renders them again).
                await wait_until(lambda: cache.rendered(done) == 0, 60,
                                 "the warmer to forget the DONE VMs")
                live = await daemon.vms.pool_stamps(state=-1, descending=True)
                assert cache.rendered(live) == 10
                await cache.document(daemon, live[:3], extended=False)
                assert cache.rendered(live) == 10
                # Listings of DONE VMs (full entries: not rendered ahead) are kept while the
                # entries stay within the VMs not DONE and the spare; beyond, a listing
                # counts the VMs not DONE again and drops the DONE ones it does not list.
                for vm_id in [await daemon.vms.allocate(HELD, hold=True) for _ in range(10)]:
                    await daemon.vms.action("terminate-hard", vm_id)
                done = await daemon.vms.pool_stamps(state=6, descending=True)
                await cache.document(daemon, done, extended=True)
                assert cache.rendered(done, extended=True) == 30
                await cache.document(daemon, live, extended=True)
                assert cache.rendered(done, extended=True) == 0
                assert cache.rendered(live, extended=True) == 10
            finally:
                warmer.cancel()
                await asyncio.gather(warmer, return_exceptions=True)

    run(scenario)
