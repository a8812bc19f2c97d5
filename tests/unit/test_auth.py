"""The pure authorization logic: ACL syntax, permissions, the decision, quotas."""

from __future__ import annotations

import pytest

from cloudburst.api.xmlrpc import METHODS
from cloudburst.auth import acl, permissions, quotas
from cloudburst.auth.engine import Caller, Operation, Target, allowed, denied
from cloudburst.errors import ApiArgumentError
from cloudburst.service import access_table

# The default rules' numeric forms as OpenNebula 6.10.5's `oneacl list -x` shows them.
ONE_DEFAULTS = {
    "@1 VM+IMAGE+TEMPLATE+DOCUMENT+SECGROUP+VMGROUP+BACKUPJOB/* CREATE *":
        (0x200000001, 0x121429400000000, 0x8, 0x400000000),
    "@1 HOST/* MANAGE #0": (0x200000001, 0x2400000000, 0x2, 0x100000000),
    "* ZONE/* USE *": (0x400000000, 0x800400000000, 0x1, 0x400000000),
    "#4 VM/@1 USE #0": (0x100000004, 0x1200000001, 0x1, 0x100000000),
}


@pytest.mark.parametrize("text", list(ONE_DEFAULTS))
def test_rule_text_and_numbers_agree_with_opennebula(text: str) -> None:
    assert acl.parse(text) == ONE_DEFAULTS[text]
    assert acl.to_string(*ONE_DEFAULTS[text]) == text


def test_a_rule_without_zone_is_for_zone_0() -> None:
    assert acl.parse("@100 HOST/%100 USE+MANAGE")[3] == acl.INDIVIDUAL


@pytest.mark.parametrize(("text", "names"), [
    ("@1 FOO/* USE", "resource type 'FOO'"),
    ("x1 VM/* USE", "user 'x1'"),
    ("@1 VM/* FLY", "right 'FLY'"),
    ("@1 VM USE", "expected TYPE"),
    ("@1", "expected 'USER RESOURCES/ID RIGHTS"),
])
def test_wrong_rule_text_names_the_part(text: str, names: str) -> None:
    with pytest.raises(acl.AclError, match=names):
        acl.parse(text)


def test_malformed_hex_rule_reads_as_oned_says_it() -> None:
    with pytest.raises(acl.AclError) as info:
        acl.parse_hex("#4", "FOO/@1", "USE", None)
    assert info.value.message == (
        "Rule ?? /??  #0 is malformed: [user] is missing one of the INDIVIDUAL, GROUP or ALL "
        "bits; [resource] is missing one of the INDIVIDUAL, GROUP, CLUSTER or ALL bits; "
        "[resource] type is missing; wrong [rights], it cannot be 0")


def test_chmod_applies_nine_values_and_minus_one_keeps() -> None:
    assert permissions.chmod(0o600, [1, 1, 0, 1, 0, 0, 0, 0, 0]) == 0o640
    assert permissions.chmod(0o640, [-1] * 8 + [1]) == 0o641
    with pytest.raises(ApiArgumentError, match="OWNER_U"):
        permissions.chmod(0o600, [2] + [-1] * 8)


ALICE = Caller(uid=2, gid=1, groups=frozenset({1}))
CAROL = Caller(uid=4, gid=100, groups=frozenset({100}))
ADMIN = Caller(uid=0, gid=0, groups=frozenset({0}))
DEFAULT_RULES = [acl.AclRule(i, *acl.parse(text)) for i, text in enumerate([
    "@1 VM+IMAGE+TEMPLATE+DOCUMENT+SECGROUP+VMGROUP+BACKUPJOB/* CREATE *",
    "* ZONE/* USE *", "* MARKETPLACE+MARKETPLACEAPP/* USE *", "@1 HOST/* MANAGE #0",
    "@1 NET/* USE #0", "@1 DATASTORE/* USE #0"])]


def vm(uid: int, gid: int, perms: int = 0o600, cluster: int = 0) -> Target:
    return Target("VM", 7, uid, gid, perms, frozenset({cluster}))


@pytest.mark.parametrize(("caller", "operation", "target", "expected"), [
    (ALICE, Operation.USE, vm(2, 1), True),          # owner, um-
    (ALICE, Operation.ADMIN, vm(2, 1), False),       # no owner_a
    (CAROL, Operation.USE, vm(2, 1), False),         # other
    (Caller(3, 1, frozenset({1})), Operation.USE, vm(2, 1, 0o640), True),     # group u
    (Caller(3, 1, frozenset({1})), Operation.MANAGE, vm(2, 1, 0o640), False),
    (ADMIN, Operation.ADMIN, vm(2, 1, 0), True),     # oneadmin's group
    (ALICE, Operation.CREATE, Target("VM", -1, 2, 1), True),    # default rule 0
    (CAROL, Operation.CREATE, Target("VM", -1, 4, 100), False),
    (ALICE, Operation.MANAGE, Target("HOST", 0, 0, 0, None, frozenset({0})), True),
    (ALICE, Operation.USE, Target("HOST", 0, 0, 0, None, frozenset({0})), False),  # independent
    (ALICE, Operation.MANAGE, Target("ACL"), False),
])
def test_the_decision_follows_permissions_then_rules(
        caller: Caller, operation: Operation, target: Target, expected: bool) -> None:
    assert allowed(caller, operation, target, DEFAULT_RULES) is expected


def test_a_cluster_rule_grants_only_inside_its_cluster() -> None:
    rules = [acl.AclRule(9, *acl.parse("#4 VM/%100 USE"))]
    assert allowed(CAROL, Operation.USE, vm(2, 1, cluster=100), rules)
    assert not allowed(CAROL, Operation.USE, vm(2, 1, cluster=0), rules)


def test_refusals_read_as_oned_words_them() -> None:
    assert denied(ALICE, (Operation.USE, vm(3, 1))).message == (
        "User [2] : Not authorized to perform USE VM [7].")
    assert denied(ALICE, (Operation.CREATE, Target("USER"))).message == (
        "User [2] : Not authorized to perform CREATE USER.")
    assert denied(ALICE, (Operation.MANAGE, Target("USER", 3)),
                  (Operation.USE, Target("GROUP", 100))).message == (
        "User [2] : Not authorized to perform MANAGE USER [3]; Not authorized to perform "
        "USE GROUP [100].")


def test_quota_engine_is_general_over_named_metrics() -> None:
    limits = {"VMS": 2.0, "COST": 10.0}
    assert quotas.first_exceeded(limits, {"VMS": 1}, {"VMS": 1, "COST": 3}) is None
    assert quotas.first_exceeded(limits, {"VMS": 2}, {"VMS": 1}) == ("VMS", 2.0)
    assert quotas.first_exceeded(limits, {"COST": 8}, {"COST": 3}) == ("COST", 10.0)
    assert quotas.effective(quotas.DEFAULT, 5.0) == 5.0
    assert quotas.effective(quotas.DEFAULT, None) == quotas.UNLIMITED


def test_every_api_method_has_an_authorization_entry() -> None:
    assert set(METHODS) <= set(access_table.CHECKS), set(METHODS) - set(access_table.CHECKS)
