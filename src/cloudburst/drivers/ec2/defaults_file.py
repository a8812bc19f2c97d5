"""The defaults file ``vmm_ec2.conf``: keys merged under every VM's EC2 section.

The seed's XML, ``<TEMPLATE><EC2><KEYPAIR>...</KEYPAIR>...</EC2></TEMPLATE>``
(a ``PUBLIC_CLOUD`` element of ``TYPE`` ec2 is read the same way). Every key
of an EC2 section may be defaulted (:mod:`.launch` does the merging). The
file is parsed again only when it changes.
"""

from __future__ import annotations

from pathlib import Path

from cloudburst.drivers.config_files import ParsedFiles
from cloudburst.errors import ConfigError, TemplateError
from cloudburst.template import parse_xml


def _parse_defaults(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
        template = parse_xml(text)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc.strerror}") from None
    except TemplateError as exc:
        raise ConfigError(str(path), exc.message) from None
    section: dict[str, str] = {}
    for name in ("EC2", "PUBLIC_CLOUD"):
        for vector in template.vectors(name):
            if name == "PUBLIC_CLOUD" and vector.get("TYPE", "ec2").strip().lower() != "ec2":
                continue
            for key, value in vector.items():
                section.setdefault(key, value)
    return section


_defaults_files = ParsedFiles(_parse_defaults)


def load_defaults(path: Path | None) -> dict[str, str]:
    """The default section of ``vmm_ec2.conf`` (empty when there is no file).

    Keys are upper case, as written (aliases are resolved by :mod:`.launch`).
    The result is the caller's to change.

    Raises:
        ConfigError: the file is not the expected XML.
    """
    if path is None:
        return {}
    try:
        return dict(_defaults_files.get(path))
    except OSError:
        return {}
