"""What the core hands a driver's deploy: the parsed deployment (no XML to parse again)
and the one cloud section chosen for the site (model/cloud_sections.py); a manual deploy
to a site none of the VM's sections applies to is refused before any state changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_daemon import add_provider_host, make_home, run, running

from cloudburst.errors import ValidationError
from cloudburst.model import lifecycle
from cloudburst.template import parse_xml

TWO_SECTIONS = ('CPU=1 MEMORY=256 NAME="web" CONTEXT=[ GREETING="hi" ] '
                'PUBLIC_CLOUD=[ TYPE=provider_name, HOST="elsewhere", IMAGE="a" ] '
                'PUBLIC_CLOUD=[ TYPE=provider_name, HOST="remote_provider", IMAGE="b" ]')


def test_the_parsed_deployment_and_the_chosen_section_reach_the_driver(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_provider_host(daemon)
            other = await add_provider_host(daemon, "second_provider")
            vm_id = await daemon.vms.allocate(TWO_SECTIONS, hold=True)
            vm = await daemon.vms.info(vm_id)
            assert vm.position == lifecycle.HOLD
            spec = await daemon.lifecycle.deploy_spec(vm, host, tmp_path / "deployment.0", "t")
            assert spec.template == parse_xml(daemon.lifecycle.deployment_document(vm))
            assert spec.template.get("VMID") == str(vm_id)
            # with the context CD-ROM's DISK_ID and TARGET, as oned numbers it
            assert spec.template.get_vector("CONTEXT") == {"GREETING": "hi", "DISK_ID": "0",
                                                           "TARGET": "hda"}
            assert spec.section == {"TYPE": "provider_name", "HOST": "remote_provider",
                                    "IMAGE": "b"}
            # Two sites of the type, no section for the second one: refused, VM untouched.
            with pytest.raises(ValidationError, match=r"cannot be deployed on second_provider: "
                               r"its sections of TYPE provider_name are for site\(s\) "
                               r"elsewhere, remote_provider"):
                await daemon.vms.deploy(vm_id, other.id)
            assert (await daemon.vms.info(vm_id)).position == lifecycle.HOLD

    run(scenario)
