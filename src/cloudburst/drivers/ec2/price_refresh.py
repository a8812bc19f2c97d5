"""The price table refreshed by the daemon on a timer (``PRICES_REFRESH`` of ``im_ec2.conf``).

The EC2 information driver asks :meth:`PriceRefresher.consider` at each
monitoring of a site. When the site's table (the file it reads prices from,
:mod:`.pricing`) is older than ``PRICES_REFRESH`` seconds, or missing, the
table is fetched again from the AWS Price List API by the same code as
``cloudburst ec2-prices`` (:func:`.price_list.refresh_site`), in a thread, in
the background: the monitoring in progress reports the table in place and the
next one reads the new file. Monitoring runs only in the daemon that leads, so
only the leader refreshes; sites sharing one table cost one refresh.

A refresh that fails leaves the table as it is and logs one line (the error
holds no credential); it is tried again after :data:`RETRY_SECONDS` (or
``PRICES_REFRESH``, when shorter), not at every monitoring.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Final

from cloudburst.drivers.ec2.price_list import refresh_site
from cloudburst.errors import CloudburstError, one_line

__all__ = ["RETRY_SECONDS", "PriceRefresher"]

log = logging.getLogger(__name__)

#: Seconds before a failed refresh is tried again (at most ``PRICES_REFRESH``).
RETRY_SECONDS: Final = 3600.0


class PriceRefresher:
    """Refreshes price tables that are too old, one at a time per table."""

    def __init__(self, etc: Path) -> None:
        self.etc = etc
        #: When each table's last refresh failed (``time.time()``).
        self._failed: dict[Path, float] = {}
        self._running: dict[Path, asyncio.Task[None]] = {}

    def consider(self, table: Path, every: int, endpoint: str | None) -> None:
        """Start refreshing ``table`` if it is more than ``every`` seconds old (or
        missing) and was not tried in the last :data:`RETRY_SECONDS`; ``every`` 0: never."""
        if every <= 0 or table in self._running:
            return
        now = time.time()
        try:
            fresh = now - table.stat().st_mtime < every
        except OSError:
            fresh = False
        failed = self._failed.get(table)
        if fresh or (failed is not None and now - failed < min(every, RETRY_SECONDS)):
            return
        task = asyncio.get_running_loop().create_task(self._refresh(table, endpoint),
                                                      name=f"price-refresh-{table.name}")
        self._running[table] = task
        task.add_done_callback(lambda _: self._running.pop(table, None))

    async def _refresh(self, table: Path, endpoint: str | None) -> None:
        try:
            fetched, _ = await asyncio.to_thread(refresh_site, self.etc, endpoint_url=endpoint,
                                                 output=table)
        except (CloudburstError, OSError) as exc:
            problem = exc.message if isinstance(exc, CloudburstError) else str(exc)
            log.warning("EC2 price table %s not refreshed (kept as it is): %s", table,
                        one_line(problem))
            self._failed[table] = time.time()
            return
        self._failed.pop(table, None)
        log.info("EC2 price table %s refreshed: %d on-demand prices of %s", table,
                 len(fetched.prices), fetched.region)

    async def settled(self) -> None:
        """Wait for the refreshes under way (tests, shutdown)."""
        while self._running:
            await asyncio.wait(set(self._running.values()))

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
