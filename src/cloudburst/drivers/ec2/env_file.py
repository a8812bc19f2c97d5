"""``KEY=VALUE`` files of the EC2 driver (``vmm_ec2rc``, ``im_ec2.conf``).

Lines are shell-style: ``export`` and ``#`` comment lines are allowed, a
value may be quoted with ``"`` or ``'``, and an unquoted value ends where a
``#`` follows a blank (a comment). Keys are upper-cased. Values are never echoed in errors: an
rc file holds secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloudburst.drivers.config_files import rc_lines
from cloudburst.errors import ConfigError

_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class EnvFile:
    """A parsed ``KEY=VALUE`` file: values and the line each came from."""

    path: Path
    values: Mapping[str, str]
    lines: Mapping[str, int]

    def error(self, key: str, problem: str) -> ConfigError:
        """A :class:`ConfigError` about ``key``, naming the file and the key's line."""
        return ConfigError(str(self.path), f"{key}: {problem}", self.lines.get(key))


def empty_env_file() -> EnvFile:
    """An :class:`EnvFile` without values, standing for a file that does not exist."""
    return EnvFile(Path("-"), {}, {})


def parse_env_text(text: str, path: Path) -> EnvFile:
    """Parse shell-style ``KEY=VALUE`` lines (``export``, quotes, comments).

    Raises:
        ConfigError: a line is not ``KEY=VALUE`` (file and line named; the value
            is never echoed, it may be a secret).
    """
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line in rc_lines(text):
        if not line.assignment or _KEY_RE.fullmatch(line.key) is None:
            raise ConfigError(str(path), "expected KEY=VALUE", line.number)
        key = line.key.upper()
        values[key] = _unquote(line.value.strip())
        lines[key] = line.number
    return EnvFile(path, values, lines)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if value.startswith(("'", '"')):
        return value[1:]
    # An unquoted value ends at a comment, as in the shell.
    comment = re.search(r"\s#", value)
    return value[: comment.start()].rstrip() if comment else value


def read_env_file(path: Path) -> EnvFile:
    """Read and parse a ``KEY=VALUE`` file.

    Raises:
        ConfigError: unreadable or malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "the file is not UTF-8 text") from None
    return parse_env_text(text, path)
