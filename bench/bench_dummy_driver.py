"""The dummy driver's own cost: 10,000 deploys, with and without an injection file.

The dummy driver stands in for real hypervisors in the core benchmark, so its
own overhead must stay negligible (goal: under 50 us a deploy, i.e. 10,000 in
under 0.5 s, also when an injection file under ``var/dummy/`` is present and
must be consulted). Prints the best of three runs of each case; the last line
is ``RESULT key=value ...``.

Usage: ``python bench/bench_dummy_driver.py [--deploys N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from cloudburst.drivers.base import DeploySpec, DriverContext, DriverOptions, HostRef
from cloudburst.drivers.dummy import DummyVmDriver
from cloudburst.template import Template


def _driver(root: Path) -> DummyVmDriver:
    return DummyVmDriver(DriverContext(
        name="dummy", executable="one_vmm_dummy", arguments=(), options=DriverOptions(),
        etc_dir=root / "etc", remotes_dir=root / "remotes", var_dir=root / "var"))


async def _deploys(driver: DummyVmDriver, count: int) -> float:
    host = HostRef(id=7, name="dummy-host", attributes={})
    started = time.perf_counter()
    for vm_id in range(count):
        await driver.deploy(DeploySpec(vm_id=vm_id, host=host,
                                       deployment_file=Path("/nonexistent"),
                                       template=Template(), token=f"t{vm_id}"))
    return time.perf_counter() - started


def _best(count: int, *, injection: bool) -> float:
    best = float("inf")
    for _ in range(3):
        with tempfile.TemporaryDirectory(prefix="cloudburst-bench-dummy-") as directory:
            root = Path(directory)
            if injection:
                (root / "var" / "dummy").mkdir(parents=True)
                (root / "var" / "dummy" / "deploy").write_text("success\n")
            best = min(best, asyncio.run(_deploys(_driver(root), count)))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=10_000)
    count = parser.parse_args().deploys
    plain = _best(count, injection=False)
    injected = _best(count, injection=True)
    print(f"{count} dummy deploys: {plain:.3f} s; with an injection file: {injected:.3f} s")
    print(f"RESULT deploys={count} seconds={plain:.3f} seconds_injection_file={injected:.3f} "
          f"us_per_deploy={plain / count * 1e6:.1f} goal_seconds=0.5")


if __name__ == "__main__":
    main()
