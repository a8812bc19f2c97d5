"""What the XML-RPC API says about quotas and the audit trail, for tests that compare
the dashboard and the JSON API with it (raw XML-RPC, parsed with ElementTree)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import xmlrpc.client


def _call(url: str, session: str, method: str, *params: object) -> ET.Element:
    proxy = xmlrpc.client.ServerProxy(url)
    ok, body, *_ = getattr(proxy, method)(session, *params)
    assert ok, body
    return ET.fromstring(body)


def vm_quota(url: str, session: str, kind: str, owner_id: int
             ) -> dict[int, dict[str, tuple[float, float]]]:
    """``one.<kind>.info``'s VM quota: ``{cluster id: {metric: (limit, used)}}``
    (cluster -1: all clusters)."""
    document = _call(url, session, f"one.{kind}.info", owner_id)
    found: dict[int, dict[str, tuple[float, float]]] = {}
    for vm in document.iterfind("VM_QUOTA/VM"):
        values = {child.tag: child.text or "" for child in vm}
        cluster = int(values.pop("CLUSTER_ID", "-1"))
        found[cluster] = {name: (float(value), float(values[f"{name}_USED"]))
                          for name, value in values.items()
                          if not name.endswith("_USED") and f"{name}_USED" in values
                          and name != "SYSTEM_DISK_SIZE"}
    return found


def audit_ids(url: str, session: str, uid: int = -1, limit: int = 200) -> list[int]:
    """The ids ``one.audit.info`` lists (oldest first)."""
    document = _call(url, session, "one.audit.info", 0, uid, limit)
    return [int(record.findtext("ID", "-1")) for record in document.iterfind("RECORD")]
