"""OpenNebula's object permissions: ``UUU GGG OOO`` as an octal number.

Each digit is one class of users (owner, group, others); within a digit 4 is
USE, 2 MANAGE and 1 ADMIN, so ``chmod 640`` lets the owner use and manage the
object and its group use it. New objects get 0o600 (OpenNebula's UMASK 177).
"""

from __future__ import annotations

from typing import Final

from cloudburst.errors import ApiArgumentError

DEFAULT: Final = 0o600
#: A user as an object: the user may use and manage itself.
USER_SELF: Final = 0o600
#: A group as an object: its members may use it (read it).
GROUP_MEMBERS: Final = 0o040

#: The nine permission bits in ``one.*.chmod`` parameter order.
_BITS: Final = (0o400, 0o200, 0o100, 0o040, 0o020, 0o010, 0o004, 0o002, 0o001)
#: XML element names in the same order.
NAMES: Final = ("OWNER_U", "OWNER_M", "OWNER_A", "GROUP_U", "GROUP_M", "GROUP_A",
                "OTHER_U", "OTHER_M", "OTHER_A")
#: Bit of each right within a digit.
DIGIT: Final = {1: 4, 2: 2, 4: 1}


def chmod(current: int, values: list[int]) -> int:
    """``current`` with the nine ``one.*.chmod`` values applied (-1 keeps a bit).

    Raises:
        ApiArgumentError: a value other than -1, 0 or 1.
    """
    result = current
    for bit, name, value in zip(_BITS, NAMES, values, strict=True):
        if value not in (-1, 0, 1):
            raise ApiArgumentError(f"Wrong value {value} for {name}: use -1, 0 or 1")
        if value == 1:
            result |= bit
        elif value == 0:
            result &= ~bit
    return result


def admin_bits_changed(current: int, new: int) -> bool:
    """Whether a chmod touches an ADMIN bit (which needs ADMIN on the object)."""
    return bool((current ^ new) & 0o111)


def grants(perms: int, right: int, *, owner: bool, in_group: bool) -> bool:
    """Whether ``perms`` give ``right`` (1 USE, 2 MANAGE, 4 ADMIN) to this user."""
    bit = DIGIT.get(right, 0)
    return bool((owner and perms & (bit << 6)) or (in_group and perms & (bit << 3))
                or perms & bit)


def xml(perms: int) -> str:
    """The ``<PERMISSIONS>`` element."""
    body = "".join(f"<{name}>{int(bool(perms & bit))}</{name}>" for bit, name in zip(
        _BITS, NAMES, strict=True))
    return f"<PERMISSIONS>{body}</PERMISSIONS>"
