"""Per-instance-type capacity of cloud sites (``CAPACITY = [ M1_SMALL = 4 ]``).

Template keys can only hold ``[A-Z0-9_]``, so instance types are stored the way
OpenNebula 5.4 stored them: upper case with ``_`` for ``.``.
"""

from __future__ import annotations


def capacity_key(instance_type: str) -> str:
    """``m1.small`` -> ``M1_SMALL``."""
    return instance_type.strip().upper().replace(".", "_").replace("-", "_")


def instance_type_name(key: str) -> str:
    """``M1_SMALL`` -> ``m1.small`` (the inverse of :func:`capacity_key` for AWS names)."""
    return key.strip().lower().replace("_", ".")
