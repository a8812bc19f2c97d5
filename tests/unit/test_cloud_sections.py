"""The one rule for which cloud section applies on a site (model/cloud_sections.py)."""

from __future__ import annotations

import pytest

from cloudburst.model.cloud_sections import (
    cloud_sections,
    no_section_reason,
    section_for,
    sites_by_type,
)
from cloudburst.model.records import HostRecord
from cloudburst.model.states import HostState
from cloudburst.template import Template, parse

SEED_TWO_SITES = ('EC2 = [ CLOUD="ec2_eu_west", AMI="ami-0022c769" ]\n'
                  'EC2 = [ CLOUD="ec2_eu_east", AMI="ami-03324cc9" ]')


def ami(template: str, site: str, kind: str = "ec2", sites: int = 2) -> str | None:
    chosen = section_for(cloud_sections(parse(template)), site, kind, sites)
    return None if chosen is None else chosen.attributes.get("AMI")


def test_sections_are_public_cloud_of_a_type_and_legacy_ec2_in_template_order() -> None:
    sections = cloud_sections(parse(
        'PUBLIC_CLOUD = [ TYPE="EC2", HOST="a", INSTANCETYPE="M1.Small" ]\n'
        'CPU = 1\nEC2 = [ CLOUD="b", INSTANCE_TYPE="u-6tb1.metal" ]\n'
        'PUBLIC_CLOUD = [ AMI="no-type" ]\nPUBLIC_CLOUD = [ TYPE="one", TEMPLATE_ID="7" ]'))
    assert [(s.type, s.host, s.cloud, s.instance_type, s.site) for s in sections] == [
        ("ec2", "a", None, "m1.small", "a"), ("ec2", None, "b", "u-6tb1.metal", "b"),
        ("one", None, None, None, None)]
    assert sections[2].attributes == {"TYPE": "one", "TEMPLATE_ID": "7"}
    assert cloud_sections(Template()) == ()


def test_the_seed_multi_site_example_sends_each_site_its_ami() -> None:
    assert ami(SEED_TWO_SITES, "ec2_eu_west") == "ami-0022c769"
    assert ami(SEED_TWO_SITES, "EC2_EU_EAST") == "ami-03324cc9"  # names ignore case
    assert ami(SEED_TWO_SITES, "ec2_us") is None


def test_host_wins_over_cloud_then_a_section_naming_no_site() -> None:
    template = ('PUBLIC_CLOUD = [ TYPE=ec2, CLOUD="west", AMI="by-cloud" ]\n'
                'PUBLIC_CLOUD = [ TYPE=ec2, AMI="any" ]\n'
                'PUBLIC_CLOUD = [ TYPE=ec2, HOST="west", AMI="by-host" ]')
    assert ami(template, "west") == "by-host"
    assert ami(template.replace('HOST="west"', 'HOST="north"'), "west") == "by-cloud"
    assert ami(template, "south") == "any"


def test_a_lone_section_is_used_whatever_it_names_only_on_the_only_site() -> None:
    lone = 'EC2 = [ CLOUD="elsewhere", AMI="ami-one" ]'
    assert ami(lone, "ec2", sites=1) == "ami-one"  # the seed's rule
    assert ami(lone, "ec2", sites=2) is None  # another region's image: not sent here
    asked: list[int] = []

    def count() -> int:
        asked.append(1)
        return 1

    sections = cloud_sections(parse(lone))
    assert section_for(sections, "elsewhere", "ec2", count) is sections[0]
    assert asked == []  # the site count is read only when step 4 needs it
    assert section_for(sections, "ec2", "ec2", count) is sections[0]
    assert asked == [1]


def test_the_type_must_be_the_sites_hypervisor() -> None:
    template = 'PUBLIC_CLOUD = [ TYPE="provider_name", IMAGE="x" ]\nEC2 = [ AMI="ami-1" ]'
    sections = cloud_sections(parse(template))
    assert section_for(sections, "remote_provider", "PROVIDER_NAME", 3) is sections[0]
    assert section_for(sections, "aws", "ec2", 3) is sections[1]
    assert section_for(sections, "partner", "one", 1) is None


@pytest.mark.parametrize(("template", "message"), [
    ("CPU=1", "it has no PUBLIC_CLOUD (or EC2) section of TYPE ec2 for cloud site x"),
    (SEED_TWO_SITES, "its sections of TYPE ec2 are for site(s) ec2_eu_east, ec2_eu_west, "
                     'not x: add one with HOST="x" or one naming no site'),
])
def test_the_reason_names_what_is_missing(template: str, message: str) -> None:
    assert no_section_reason(cloud_sections(parse(template)), "x", "ec2") == message


def test_sites_by_type_counts_cloud_hosts_of_every_state() -> None:
    def host(host_id: int, template: str, state: HostState = HostState.MONITORED) -> HostRecord:
        return HostRecord(id=host_id, name=f"h{host_id}", state=state, prev_state=state,
                          im_mad="x", vm_mad="x", tm_mad="dummy", vn_mad="dummy", cluster_id=0,
                          template=parse(template), last_mon_time=1, version=0)

    hosts = [host(0, "PUBLIC_CLOUD=YES HYPERVISOR=ec2"),
             host(1, "PUBLIC_CLOUD=yes HYPERVISOR=EC2", HostState.DISABLED),
             host(2, "HYPERVISOR=kvm"), host(3, "PUBLIC_CLOUD=YES HYPERVISOR=one")]
    assert sites_by_type(hosts) == {"ec2": 2, "one": 1}
