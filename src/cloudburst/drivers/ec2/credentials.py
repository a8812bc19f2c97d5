"""A site's AWS credentials, held so that they never print.

They come from the site's rc file (``vmm_ec2rc``, see :mod:`.config`):
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (both or neither), an
optional ``AWS_SESSION_TOKEN``, or ``AWS_PROFILE`` (a profile of the shared
AWS files). Without keys the standard AWS credential chain is used
(environment, shared files, instance role, ...).

Credentials never leave this module as text: they are held in :class:`Secret`,
whose ``repr`` and ``str`` are masked, and only :mod:`.client` reveals them,
to boto3.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

from cloudburst.drivers.ec2.env_file import EnvFile
from cloudburst.errors import ConfigError


class Secret:
    """A credential: compares and hashes like its value, never prints it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value, for the SDK call that needs it (never for messages)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("credentials cannot be pickled")


@dataclass(frozen=True, slots=True)
class Credentials:
    """Explicit credentials from an rc file (``None`` fields: use the AWS chain)."""

    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None

    @property
    def explicit(self) -> bool:
        """Whether the rc file gives keys (rather than leaving it to the AWS chain)."""
        return self.access_key_id is not None

    def secrets(self) -> list[str]:
        """The secret values, for scrubbing messages (never for display)."""
        return [item.reveal() for item in (self.access_key_id, self.secret_access_key,
                                           self.session_token) if item is not None]

    def fingerprint(self) -> str:
        """A short one-way id of the account's key (for sharing rate limits)."""
        if self.access_key_id is None:
            return f"chain:{self.profile or ''}"
        return hashlib.sha256(self.access_key_id.reveal().encode()).hexdigest()[:16]


def credentials_from(env: EnvFile) -> Credentials:
    """The credentials an rc file gives (empty ones when it gives none).

    A session token counts only together with keys.

    Raises:
        ConfigError: one of the two keys is given without the other.
    """
    values = env.values
    access = values.get("AWS_ACCESS_KEY_ID", "").strip()
    secret = values.get("AWS_SECRET_ACCESS_KEY", "").strip()
    if bool(access) != bool(secret):
        missing = "AWS_SECRET_ACCESS_KEY" if access else "AWS_ACCESS_KEY_ID"
        raise ConfigError(str(env.path), f"{missing} is missing (both keys are needed)")
    token = values.get("AWS_SESSION_TOKEN", "").strip()
    return Credentials(
        access_key_id=Secret(access) if access else None,
        secret_access_key=Secret(secret) if secret else None,
        session_token=Secret(token) if token and access else None,
        profile=values.get("AWS_PROFILE", "").strip() or None,
    )


def exposure_note(path: Path) -> str | None:
    """A warning when the file holding credentials is readable by other users."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} holds credentials but other users may read it; run: chmod 600 {path}"
    return None
