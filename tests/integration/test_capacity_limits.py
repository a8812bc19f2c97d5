"""A site's per-instance-type limits, end to end with exact type names: a script
provider's probe reports ``u-6tb1.metal`` (exact form) and ``E2_STANDARD_2`` (OpenNebula's
key form), the monitor stores them, and the scheduler runs one VM of each type and no more."""

from __future__ import annotations

from pathlib import Path

from test_daemon import add_provider_host, install, make_home, run, running, wait_vm

from cloudburst.model import lifecycle
from cloudburst.model.capacity import limits_of

LIMITS_PROBE = """\
#!/bin/sh
echo 'CAPACITY = [ INSTANCE_TYPE = "u-6tb1.metal", LIMIT = 1 ]'
echo 'CAPACITY = [ E2_STANDARD_2 = 1 ]'
"""


def vm_of(instance_type: str) -> str:
    return f'CPU=0.1 MEMORY=64 PUBLIC_CLOUD=[ TYPE=provider_name, INSTANCETYPE="{instance_type}" ]'


def test_limits_of_exact_type_names_are_honoured(tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    install(settings.home / "remotes" / "im" / "provider_name.d" / "30-limits", LIMITS_PROBE)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_provider_host(daemon)
            assert limits_of(host.template) == {"u-6tb1.metal": 1, "E2_STANDARD_2": 1}
            assert {"INSTANCE_TYPE": "u-6tb1.metal", "LIMIT": "1"} in host.template.vectors(
                "CAPACITY")
            metal = [await daemon.vms.allocate(vm_of("u-6tb1.metal")) for _ in range(2)]
            standard = [await daemon.vms.allocate(vm_of("e2-standard-2")) for _ in range(2)]
            other = await daemon.vms.allocate(vm_of("m1.small"))  # no limit: no room
            await daemon.scheduler.pass_once()
            await wait_vm(daemon, metal[0], lifecycle.RUNNING, timeout=60)
            await wait_vm(daemon, standard[0], lifecycle.RUNNING, timeout=60)
            await daemon.scheduler.pass_once()
            for vm_id in (metal[1], standard[1], other):
                vm = await daemon.vms.info(vm_id)
                assert vm.position == lifecycle.PENDING, vm_id
            # A freed slot is taken by the VM of that type that waited.
            await daemon.vms.action("terminate-hard", metal[0])
            await wait_vm(daemon, metal[0], lifecycle.DONE, timeout=60)
            await daemon.scheduler.pass_once()
            await wait_vm(daemon, metal[1], lifecycle.RUNNING, timeout=60)
            assert (await daemon.vms.info(other)).position == lifecycle.PENDING

    run(scenario)
