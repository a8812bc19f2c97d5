"""Documents of users, groups, clusters, ACL rules, quotas and the audit trail.

Shapes follow oned 6.10 (``one.user.info``, ``one.grouppool.info``, ...). No
password hash or login token ever appears: PASSWORD is a placeholder and a
token shows only its first 7 characters (the id ``oneuser show`` prints).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from cloudburst.api.documents import PASSWORD_PLACEHOLDER, _str
from cloudburst.auth import acl
from cloudburst.auth.quotas import ALL_CLUSTERS, BUDGET_METRICS, shown_clusters
from cloudburst.model.cost import money
from cloudburst.model.records import ClusterRecord, GroupRecord, LoginToken, UserRecord
from cloudburst.store.audit_log import AuditEntry

#: ``{cluster_id: {metric: limit}}`` and ``{cluster_id: {metric: used}}``.
Limits = Mapping[int, Mapping[str, float]]
Usage = Mapping[int, Mapping[str, float]]

_OTHER_QUOTAS: Final = ("<DATASTORE_QUOTA/>", "<NETWORK_QUOTA/>", "<IMAGE_QUOTA/>")
_QUOTA_ORDER: Final = ("CPU", "MEMORY", "RUNNING_CPU", "RUNNING_MEMORY", "RUNNING_VMS", "VMS",
                       *BUDGET_METRICS)


def _number(value: float) -> str:
    return f"{value:.2f}" if value != int(value) else str(int(value))


def vm_quota(limits: Limits, usage: Usage, *, with_usage: bool = True) -> str:
    """``<VM_QUOTA>``: one ``<VM>`` per cluster that has a limit (all clusters first)
    or, for all clusters, usage. Limits not set read -1 (the default)."""
    clusters = shown_clusters(limits, usage)
    if not clusters:
        return "<VM_QUOTA/>"
    parts = ["<VM_QUOTA>"]
    for cluster in clusters:
        parts.append("<VM>")
        if cluster != ALL_CLUSTERS:
            parts.append(f"<CLUSTER_ID>{cluster}</CLUSTER_ID>")
        for metric in _QUOTA_ORDER:
            limit = limits.get(cluster, {}).get(metric, -1)
            parts.append(_str(metric, money(limit) if limit >= 0 else _number(limit)))
            if with_usage:
                used = usage.get(cluster, {}).get(metric, 0.0)
                shown = (f"{used:.2f}" if metric.endswith("CPU") else
                         money(used) if metric in BUDGET_METRICS else _number(used))
                parts.append(_str(f"{metric}_USED", shown))
        parts.append(_str("SYSTEM_DISK_SIZE", "-1"))
        if with_usage:
            parts.append(_str("SYSTEM_DISK_SIZE_USED", "0"))
        parts.append("</VM>")
    parts.append("</VM_QUOTA>")
    return "".join(parts)


def _quotas(limits: Limits, usage: Usage) -> str:
    return (_OTHER_QUOTAS[0] + _OTHER_QUOTAS[1] + vm_quota(limits, usage) + _OTHER_QUOTAS[2])


def default_quotas(tag: str, limits: Limits) -> str:
    """``<DEFAULT_USER_QUOTAS>`` / ``<DEFAULT_GROUP_QUOTAS>``."""
    return (f"<{tag}>{_OTHER_QUOTAS[0]}{_OTHER_QUOTAS[1]}"
            f"{vm_quota(limits, {}, with_usage=False)}{_OTHER_QUOTAS[2]}</{tag}>")


# -- users --------------------------------------------------------------------------------


def _user(user: UserRecord, gname: Callable[[int], str], tokens: Iterable[LoginToken]) -> str:
    groups = "".join(f"<ID>{gid}</ID>" for gid in user.groups)
    shown_tokens = "".join(
        f"<LOGIN_TOKEN>{_str('TOKEN', token.prefix)}"
        f"<EXPIRATION_TIME>{token.expires}</EXPIRATION_TIME>"
        f"<EGID>{token.egid}</EGID></LOGIN_TOKEN>" for token in tokens)
    return (f"<ID>{user.id}</ID><GID>{user.gid}</GID><GROUPS>{groups}</GROUPS>"
            f"{_str('GNAME', gname(user.gid))}{_str('NAME', user.name)}"
            f"{_str('PASSWORD', PASSWORD_PLACEHOLDER)}{_str('AUTH_DRIVER', user.auth_driver)}"
            f"<ENABLED>{int(user.enabled)}</ENABLED>{shown_tokens}"
            f"{user.template.to_xml('TEMPLATE')}")


def user_document(user: UserRecord, *, gname: Callable[[int], str],
                  tokens: Iterable[LoginToken], limits: Limits, usage: Usage,
                  defaults: Limits) -> str:
    """``USER`` of ``one.user.info``, with its quotas and the default ones."""
    return (f"<USER>{_user(user, gname, tokens)}{_quotas(limits, usage)}"
            f"{default_quotas('DEFAULT_USER_QUOTAS', defaults)}</USER>")


def user_pool_document(users: Iterable[tuple[UserRecord, Limits, Usage]], *,
                       gname: Callable[[int], str], defaults: Limits) -> str:
    """``USER_POOL``: each USER then its QUOTAS, then DEFAULT_USER_QUOTAS (oned's shape)."""
    parts = ["<USER_POOL>"]
    for user, limits, usage in users:
        parts.append(f"<USER>{_user(user, gname, ())}</USER>"
                     f"<QUOTAS><ID>{user.id}</ID>{_quotas(limits, usage)}</QUOTAS>")
    parts.append(default_quotas("DEFAULT_USER_QUOTAS", defaults))
    parts.append("</USER_POOL>")
    return "".join(parts)


# -- groups -------------------------------------------------------------------------------


def _group(group: GroupRecord) -> str:
    users = "".join(f"<ID>{uid}</ID>" for uid in group.users)
    admins = "".join(f"<ID>{uid}</ID>" for uid in group.admins)
    return (f"<ID>{group.id}</ID>{_str('NAME', group.name)}{group.template.to_xml('TEMPLATE')}"
            f"<USERS>{users}</USERS><ADMINS>{admins}</ADMINS>")


def group_document(group: GroupRecord, *, limits: Limits, usage: Usage,
                   defaults: Limits) -> str:
    """``GROUP`` of ``one.group.info``."""
    return (f"<GROUP>{_group(group)}{_quotas(limits, usage)}"
            f"{default_quotas('DEFAULT_GROUP_QUOTAS', defaults)}</GROUP>")


def group_pool_document(groups: Iterable[tuple[GroupRecord, Limits, Usage]], *,
                        defaults: Limits) -> str:
    """``GROUP_POOL``: each GROUP then its QUOTAS, then DEFAULT_GROUP_QUOTAS."""
    parts = ["<GROUP_POOL>"]
    for group, limits, usage in groups:
        parts.append(f"<GROUP>{_group(group)}</GROUP>"
                     f"<QUOTAS><ID>{group.id}</ID>{_quotas(limits, usage)}</QUOTAS>")
    parts.append(default_quotas("DEFAULT_GROUP_QUOTAS", defaults))
    parts.append("</GROUP_POOL>")
    return "".join(parts)


def quota_defaults_document(tag: str, limits: Limits) -> str:
    """``one.userquota.info`` / ``one.groupquota.info``: the default quotas."""
    return default_quotas(tag, limits)


# -- clusters -----------------------------------------------------------------------------


def _cluster(cluster: ClusterRecord) -> str:
    hosts = "".join(f"<ID>{host}</ID>" for host in cluster.hosts)
    return (f"<CLUSTER><ID>{cluster.id}</ID>{_str('NAME', cluster.name)}"
            f"<HOSTS>{hosts}</HOSTS><DATASTORES/><VNETS/>"
            f"{cluster.template.to_xml('TEMPLATE')}</CLUSTER>")


def cluster_document(cluster: ClusterRecord, limits: Limits | None = None,
                     usage: Usage | None = None) -> str:
    """``CLUSTER`` of ``one.cluster.info``; with budgets set, their ``VM_QUOTA`` too."""
    rendered = _cluster(cluster)
    if not limits:
        return rendered
    return rendered[:-len("</CLUSTER>")] + vm_quota(limits, usage or {}) + "</CLUSTER>"


def cluster_pool_document(clusters: Iterable[ClusterRecord]) -> str:
    """``CLUSTER_POOL``."""
    return "<CLUSTER_POOL>" + "".join(_cluster(cluster) for cluster in clusters) + \
        "</CLUSTER_POOL>"


# -- ACL rules and the audit trail --------------------------------------------------------


def acl_pool_document(rules: Iterable[acl.AclRule]) -> str:
    """``ACL_POOL``: numbers in hex, as oned writes them, and the rule's text."""
    return "<ACL_POOL>" + "".join(
        f"<ACL><ID>{rule.id}</ID><USER>{rule.user:X}</USER><RESOURCE>{rule.resource:X}"
        f"</RESOURCE><RIGHTS>{rule.rights:X}</RIGHTS><ZONE>{rule.zone:X}</ZONE>"
        f"{_str('STRING', str(rule))}</ACL>" for rule in rules) + "</ACL_POOL>"


def audit_document(entries: Iterable[AuditEntry]) -> str:
    """``AUDIT_POOL`` of ``cloudburst.audit.info`` (a cloudburst call; see docs/tenancy.md)."""
    return "<AUDIT_POOL>" + "".join(
        f"<RECORD><ID>{entry.id}</ID><TIME>{entry.time:.3f}</TIME><UID>{entry.uid}</UID>"
        f"{_str('UNAME', entry.uname)}{_str('METHOD', entry.method)}"
        f"{_str('OBJECT', entry.object)}<SUCCESS>{int(entry.success)}</SUCCESS>"
        f"{_str('MESSAGE', entry.message)}</RECORD>" for entry in entries) + "</AUDIT_POOL>"

