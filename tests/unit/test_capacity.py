"""Per-instance-type capacity limits keep the exact type name (model/capacity.py)."""

from __future__ import annotations

import logging

import pytest

from cloudburst.drivers.script_output import parse_host_info
from cloudburst.model.capacity import capacity_key, limits_of, set_limits
from cloudburst.template import Template, parse


def test_both_forms_are_read_and_the_exact_form_is_stored() -> None:
    template = parse('CAPACITY = [ INSTANCE_TYPE = "u-6tb1.metal", LIMIT = 2 ]\n'
                     'CAPACITY = [ M1_SMALL = 4, E2_STANDARD_2 = "1" ]\n'
                     'CAPACITY = [ INSTANCE_TYPE = "e2-standard-2", LIMIT = -3 ]')
    limits = limits_of(template)
    assert limits == {"u-6tb1.metal": 2, "M1_SMALL": 4, "E2_STANDARD_2": 1, "e2-standard-2": 0}
    stored = Template([("CPU", "1")])
    set_limits(stored, {"u-6tb1.metal": 2, "Standard_D2s_v3": 1})
    assert stored.vectors("CAPACITY") == [
        {"INSTANCE_TYPE": "Standard_D2s_v3", "LIMIT": "1"},
        {"INSTANCE_TYPE": "u-6tb1.metal", "LIMIT": "2"}]
    assert limits_of(parse(stored.to_text())) == {"u-6tb1.metal": 2, "Standard_D2s_v3": 1}
    set_limits(stored, {})
    assert "CAPACITY" not in stored and stored.get("CPU") == "1"


@pytest.mark.parametrize(("name", "key"), [
    ("m1.small", "M1_SMALL"), ("u-6tb1.metal", "U_6TB1_METAL"),
    ("e2-standard-2", "E2_STANDARD_2"), ("E2_STANDARD_2", "E2_STANDARD_2"),
    (" Standard_D2s_v3 ", "STANDARD_D2S_V3")])
def test_a_type_and_a_limit_match_by_their_key(name: str, key: str) -> None:
    assert capacity_key(name) == key == capacity_key(key)


def test_probe_output_keeps_exact_names_and_skips_bad_counts(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        info = parse_host_info('PUBLIC_CLOUD=YES\nHYPERVISOR=acme\n'
                               'CAPACITY=[ INSTANCE_TYPE="u-6tb1.metal", LIMIT=1 ]\n'
                               'CAPACITY=[ T3_MICRO=2, M5_LARGE=lots ]')
    assert info.capacity == {"u-6tb1.metal": 1, "T3_MICRO": 2}
    assert "CAPACITY M5_LARGE='lots' is not a whole number" in caplog.text
