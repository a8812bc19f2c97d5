"""OpenNebula CONTEXT as guests receive it: context.sh read by a real shell, cloud-init data."""

from __future__ import annotations

import base64
import email
import subprocess
from pathlib import Path

import yaml

from cloudburst.drivers.context import (
    CONTEXT_PATH,
    check_context,
    cloud_init_user_data,
    context_files,
    context_of,
)
from cloudburst.template import Template, parse

TRICKY = "it's $HOME `id` \"quoted\"\nsecond line"
VM = Template([("CPU", "1"), ("MEMORY", "64"), ("CONTEXT", {
    "GREETING": TRICKY, "NETWORK": "YES",
    "SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3Nza one@a\nssh-rsa AAAAB3Nza two@b",
    "SET_HOSTNAME": "web-1", "START_SCRIPT": "#!/bin/sh\necho started > /tmp/started"})])


def test_context_sh_reads_back_in_a_real_shell(tmp_path: Path) -> None:
    context = context_of(VM)
    assert context is not None and context["GREETING"] == TRICKY
    files = context_files(context)
    assert set(files) == {"context.sh", "start_script"}
    (tmp_path / "context.sh").write_bytes(files["context.sh"])
    shown = subprocess.run(
        ["/bin/sh", "-c", '. ./context.sh; printf "%s|%s" "$GREETING" "$NETWORK"'],
        cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert shown == f"{TRICKY}|YES"
    assert files["start_script"].startswith(b"#!/bin/sh\necho started")
    assert context_of(parse("CPU=1")) is None


def test_cloud_init_user_data_is_a_cloud_config() -> None:
    context = context_of(VM)
    assert context is not None
    text = cloud_init_user_data(context)
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    assert config["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3Nza one@a",
                                             "ssh-rsa AAAAB3Nza two@b"]
    assert config["hostname"] == "web-1"
    written = {item["path"]: item for item in config["write_files"]}
    assert "GREETING='it'\\''s $HOME" in written[CONTEXT_PATH]["content"]
    assert written[CONTEXT_PATH]["permissions"] == "0600"
    assert config["runcmd"] == ["cd /etc/one-context.d && /etc/one-context.d/start_script"]

    # with the section's own USERDATA: a MIME multipart, the context first
    both = email.message_from_string(cloud_init_user_data(context, "#!/bin/sh\necho mine\n"))
    parts = [(part.get_content_type(), part.get_payload(decode=True).decode())
             for part in both.walk() if not part.is_multipart()]
    assert [kind for kind, _ in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert yaml.safe_load(parts[0][1])["hostname"] == "web-1"
    assert parts[1][1] == "#!/bin/sh\necho mine\n"


def test_bad_context_is_named() -> None:
    encoded = base64.b64encode(b"echo hi").decode()
    assert check_context(parse(f'CONTEXT = [ START_SCRIPT_BASE64 = "{encoded}" ]')) == []
    context = context_of(parse(f'CONTEXT = [ START_SCRIPT_BASE64 = "{encoded}" ]'))
    assert context is not None and context_files(context)["start_script"] == b"echo hi"
    assert check_context(parse('CONTEXT = [ START_SCRIPT_BASE64 = "%%%" ]')) == [
        "CONTEXT: START_SCRIPT_BASE64 is not base64 of UTF-8 text"]
