"""The database schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Templates are stored as JSON text (:meth:`Template.to_json`), times as UNIX
seconds. Every mutable row has a ``version`` column: writers update with
``WHERE version = :expected`` so two racing actions cannot both win.

This module is the schema the code reads and writes; the store is brought to
it by the Alembic revisions in ``store/migrations/versions``. Change both
together (docs/architecture.md, "Changing the schema"); a test compares them.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

#: Permissions of a new VM or template: OpenNebula's UMASK 177 gives ``um- --- ---`` (0o600).
DEFAULT_PERMS = str(0o600)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

sequences = Table(
    "sequences",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("next_id", Integer, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(128), nullable=False, unique=True),
    Column("gid", Integer, nullable=False, default=0),
    Column("password_hash", Text, nullable=False),
    Column("auth_driver", String(32), nullable=False, default="core"),
    Column("enabled", Integer, nullable=False, default=1),
    Column("template", Text, nullable=False, default="[]"),
)

hosts = Table(
    "hosts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False, unique=True),
    Column("state", Integer, nullable=False),
    Column("prev_state", Integer, nullable=False),
    Column("im_mad", String(128), nullable=False),
    Column("vm_mad", String(128), nullable=False),
    Column("tm_mad", String(128), nullable=False, default="dummy"),
    Column("vn_mad", String(128), nullable=False, default="dummy"),
    Column("cluster_id", Integer, nullable=False, default=0),
    Column("template", Text, nullable=False, default="[]"),
    Column("last_mon_time", Integer, nullable=False, default=0),
    Column("error", Text, nullable=False, default=""),
    Column("max_cpu", Integer, nullable=False, default=0),
    Column("max_mem", Integer, nullable=False, default=0),
    Column("free_cpu", Integer, nullable=False, default=0),
    Column("free_mem", Integer, nullable=False, default=0),
    Column("used_cpu", Integer, nullable=False, default=0),
    Column("used_mem", Integer, nullable=False, default=0),
    Column("version", Integer, nullable=False, default=0),
)

vms = Table(
    "vms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False),
    Column("uid", Integer, nullable=False),
    Column("gid", Integer, nullable=False),
    Column("state", Integer, nullable=False),
    Column("lcm_state", Integer, nullable=False),
    Column("prev_state", Integer, nullable=False),
    Column("prev_lcm_state", Integer, nullable=False),
    Column("stime", Integer, nullable=False),
    Column("etime", Integer, nullable=False, default=0),
    Column("deploy_id", String(255), nullable=False, default=""),
    Column("host_id", Integer, nullable=True),
    Column("cpu", Float, nullable=False),
    Column("cpu_share", Integer, nullable=False),
    Column("memory", Integer, nullable=False),
    Column("template", Text, nullable=False),
    Column("user_template", Text, nullable=False),
    Column("monitoring", Text, nullable=False, default="{}"),
    Column("last_poll", Integer, nullable=False, default=0),
    Column("error", Text, nullable=False, default=""),
    Column("sched_message", Text, nullable=False, default=""),
    Column("resched", Integer, nullable=False, default=0),
    Column("version", Integer, nullable=False, default=0),
    Column("perms", Integer, nullable=False, server_default=DEFAULT_PERMS),
    #: Why the VM went where it went or why it waits (``model/reasons.py``, JSON).
    Column("placement", Text, nullable=False, server_default=""),
    Index("ix_vms_state", "state", "id"),
    Index("ix_vms_host", "host_id", "state"),
    #: The capacity held per host, summed from the index alone (``host_usage``).
    Index("ix_vms_usage", "state", "host_id", "cpu_share", "memory"),
)

history = Table(
    "history",
    metadata,
    Column("vm_id", Integer, ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("host_id", Integer, nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("vm_mad", String(128), nullable=False),
    Column("tm_mad", String(128), nullable=False),
    Column("stime", Integer, nullable=False),
    Column("etime", Integer, nullable=False, default=0),
    Column("pstime", Integer, nullable=False, default=0),
    Column("petime", Integer, nullable=False, default=0),
    Column("rstime", Integer, nullable=False, default=0),
    Column("retime", Integer, nullable=False, default=0),
    Column("estime", Integer, nullable=False, default=0),
    Column("eetime", Integer, nullable=False, default=0),
    Column("action", Integer, nullable=False, default=0),
    Column("reason", Text, nullable=False, default=""),
    #: The stay's price per hour, fixed when it opens (cloud sites; NULL: none known).
    Column("price", Float, nullable=True),
    Column("cluster_id", Integer, nullable=False, server_default="0"),
)

#: The entries ``ix_journal_handed`` holds; a query names them with this very text, so
#: SQLite (which cannot see through a bound parameter) uses the index too.
JOURNAL_HANDED: Final = "status = 'handed'"

journal = Table(
    "journal",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vm_id", Integer, nullable=False),
    Column("host_id", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("action", String(32), nullable=False),
    Column("token", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("finished", Float, nullable=False, default=0.0),
    Column("result", Text, nullable=False, default=""),
    UniqueConstraint("token", "action", name="uq_journal_token_action"),
    # Entries handed to the leader, found by the adopter's scans (every 1-10 s). Not an
    # index of every status: finishing an entry (one update per VM action) changes its
    # status, and one on status was the plan PostgreSQL chose without statistics (early
    # in a burst), walking every started entry (0.4 ms per update; migration 0011).
    Index("ix_journal_handed", "id", sqlite_where=text(JOURNAL_HANDED),
          postgresql_where=text(JOURNAL_HANDED)),
    Index("ix_journal_vm", "vm_id"),
)

vm_templates = Table(
    "vm_templates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False),
    Column("uid", Integer, nullable=False),
    Column("gid", Integer, nullable=False),
    Column("regtime", Integer, nullable=False),
    Column("template", Text, nullable=False),
    Column("perms", Integer, nullable=False, server_default=DEFAULT_PERMS),
)

# -- tenancy (revision 0002) -----------------------------------------------------------

groups = Table(
    "groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(128), nullable=False, unique=True),
    Column("template", Text, nullable=False, default="[]"),
)

user_groups = Table(
    "user_groups",
    metadata,
    Column("user_id", Integer, primary_key=True, autoincrement=False),
    Column("group_id", Integer, primary_key=True, autoincrement=False),
    Index("ix_user_groups_group", "group_id"),
)
"""Every group a user belongs to, the primary one (``users.gid``) included."""

group_admins = Table(
    "group_admins",
    metadata,
    Column("group_id", Integer, primary_key=True, autoincrement=False),
    Column("user_id", Integer, primary_key=True, autoincrement=False),
)

clusters = Table(
    "clusters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(128), nullable=False, unique=True),
    Column("template", Text, nullable=False, default="[]"),
)

login_tokens = Table(
    "login_tokens",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("expires", Integer, nullable=False),
    Column("egid", Integer, nullable=False),
    Index("ix_login_tokens_user", "user_id"),
)
"""``one.user.login`` tokens, stored as SHA-256 digests; ``expires`` -1 never expires."""

acl_rules = Table(
    "acl_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("user", BigInteger, nullable=False),
    Column("resource", BigInteger, nullable=False),
    Column("rights", BigInteger, nullable=False),
    Column("zone", BigInteger, nullable=False),
    UniqueConstraint("user", "resource", "rights", "zone", name="uq_acl_rule"),
)
"""OpenNebula's ACL rules in their numeric form (``auth/acl.py``)."""

quotas = Table(
    "quotas",
    metadata,
    Column("owner_kind", String(8), primary_key=True),
    Column("owner_id", Integer, primary_key=True, autoincrement=False),
    Column("cluster_id", Integer, primary_key=True, autoincrement=False),
    Column("metric", String(32), primary_key=True),
    Column("limit", Float, nullable=False),
)
"""Quota limits: owner_kind "user"/"group", owner_id -1 is the default of the kind,
cluster_id -1 counts every cluster. Usage is derived from the VM pool, never stored."""

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("uid", Integer, nullable=False),
    Column("uname", String(128), nullable=False),
    Column("method", String(64), nullable=False),
    Column("object", String(64), nullable=False),
    Column("success", Integer, nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_audit_time", "time"),
)
"""Every state-changing call: who, what, when and the result."""

# -- leader lease (revision 0003) ------------------------------------------------------

leases = Table(
    "leases",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("expires", Float, nullable=False),
)


# -- capacity cool-offs (revision 0004) --------------------------------------------------

#: A site (host) that refused a deploy for capacity or quota is skipped until
#: ``until`` (UNIX time) for VMs of ``instance_type`` ('' = every VM).
cooloffs = Table(
    "cooloffs",
    metadata,
    Column("host_id", Integer, primary_key=True, autoincrement=False),
    Column("instance_type", String(64), primary_key=True),
    Column("until", Float, nullable=False),
    Column("reason", Text, nullable=False),
)


# -- recalls (revision 0006) ---------------------------------------------------------------

#: A cloud VM with ``RECALL = "YES"`` being brought home: its local ``replacement``
#: on ``host_id`` started at ``started`` (UNIX time); ``state`` is ``started`` until
#: the replacement runs and the cloud VM is terminated (``done``) or it fails
#: (``failed``). Rows started in the last minute are the rate limit's count.
recalls = Table(
    "recalls",
    metadata,
    Column("vm_id", Integer, primary_key=True, autoincrement=False),
    Column("replacement_id", Integer, nullable=False),
    Column("host_id", Integer, nullable=False),
    Column("started", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Index("ix_recalls_started", "started"),
)


# -- per-VM backoffs (revision 0008) -------------------------------------------------------

#: The leader's retry state of one VM's work, so a new leader continues a backoff
#: instead of restarting it. ``work`` is ``deploy``: host ``host_id`` is skipped for
#: the VM until ``until`` (UNIX time) and ``tries`` counts deploys in a row that
#: failed having created nothing; or ``stop``: the VM's stop on ``host_id`` is tried
#: again at ``until``, ``tries`` counting the stops in a row that hit an outage.
vm_backoffs = Table(
    "vm_backoffs",
    metadata,
    Column("vm_id", Integer, primary_key=True, autoincrement=False),
    Column("work", String(16), primary_key=True),
    Column("host_id", Integer, primary_key=True, autoincrement=False),
    Column("tries", Integer, nullable=False, server_default="0"),
    Column("until", Float, nullable=False),
)


# -- orphan sightings and VM logs (revision 0009) ---------------------------------------

#: Orphans (instances or partner VMs of ours that no live VM owns) the leader's
#: sweeps of host ``host_id`` have seen: ``orphan`` is the deploy id, ``first_seen``
#: the UNIX time of the first sighting, ``sweeps`` the sweeps in a row that saw it
#: (counted up to the number that matters). A new leader continues the grace period.
orphan_sightings = Table(
    "orphan_sightings",
    metadata,
    Column("host_id", Integer, primary_key=True, autoincrement=False),
    Column("orphan", String(128), primary_key=True),
    Column("first_seen", Float, nullable=False),
    Column("sweeps", Integer, nullable=False),
)

#: Each VM's log (what ``vms/<id>/vm.log`` holds), whichever daemon wrote the line:
#: ``time`` is UNIX time, ``level`` ``I``/``W``/``E``/``D``.
vm_logs = Table(
    "vm_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vm_id", Integer, nullable=False),
    Column("time", Float, nullable=False),
    Column("level", String(1), nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_vm_logs_vm_id", "vm_id", "id"),
)
