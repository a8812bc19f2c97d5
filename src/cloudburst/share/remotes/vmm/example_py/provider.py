"""The example_py provider: every action of a VM driver, in plain Python.

Each action script in this directory (deploy, poll, ...) is three lines that
call :func:`main` with its name; the daemon runs it with OpenNebula's
arguments (see the docstring of each function). The "cloud" is simulated with
one JSON file per resource under ``$CLOUDBURST_HOME/var/example_py/``; a real
driver would call its provider's API where these functions touch files.

Contract: print results on stdout, exit 0 on success; on failure write the
reason between the ERROR MESSAGE markers on stderr and exit non-zero.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path

STATE_DIR = Path(os.environ["CLOUDBURST_HOME"]) / "var" / "example_py"
INSTANCES = STATE_DIR / "instances"
TOKENS = STATE_DIR / "tokens"


class Failure(Exception):
    """An error to report to the daemon."""


def instance(deploy_id: str) -> Path:
    if not re.fullmatch(r"py-[0-9a-f]{12}", deploy_id):
        raise Failure(f"invalid deploy id {deploy_id!r} (example_py ids look like py-0123abcd4567)")
    return INSTANCES / f"{deploy_id}.json"


def load(deploy_id: str) -> dict[str, str]:
    try:
        resource: dict[str, str] = json.loads(instance(deploy_id).read_text())
    except FileNotFoundError:
        raise Failure(f"resource {deploy_id} does not exist") from None
    return resource


def store(deploy_id: str, resource: dict[str, str]) -> None:
    path = instance(deploy_id)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(resource))
    temporary.replace(path)  # readers never see half a file


def deploy(deployment_file: str, host: str, vm_id: str, _host: str) -> None:
    """Create the resource; print its id. The same token never creates twice."""
    token = os.environ.get("CLOUDBURST_ACTION_TOKEN", "")
    token_file = TOKENS / re.sub(r"[^A-Za-z0-9_.-]", "_", token) if token else None
    if token_file is not None and token_file.exists():
        earlier = token_file.read_text().strip()
        if instance(earlier).exists():
            print(earlier)  # an earlier attempt created it: same answer
            return
    try:
        template = ElementTree.parse(deployment_file).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise Failure(f"cannot read the deployment file {deployment_file}: {exc}") from None
    memory = template.findtext("MEMORY")
    if not memory:
        raise Failure(f"the deployment file of VM {vm_id} has no MEMORY")
    section = template.find("PUBLIC_CLOUD")
    deploy_id = f"py-{uuid.uuid4().hex[:12]}"
    store(deploy_id, {
        "VM_ID": vm_id, "HOST": host, "STATE": "a",
        "CPU": template.findtext("CPU") or "1", "MEMORY": memory,
        "IMAGE": section.findtext("IMAGE", "") if section is not None else "",
        "IP": f"10.30.{random.randint(1, 250)}.{random.randint(1, 250)}",
    })
    if token_file is not None:
        token_file.write_text(deploy_id)
    print(deploy_id)


def poll(deploy_id: str, host: str, vm_id: str, _host: str) -> None:
    """Print STATE=a|p|d|e and extra KEY=VALUE words (IP, CPU %, MEMORY KB)."""
    try:
        resource = load(deploy_id)
    except Failure:
        print("STATE=d")  # gone
        return
    memory_kb = int(resource["MEMORY"]) * 1024
    print(f"STATE={resource['STATE']} IP={resource['IP']} CPU={random.randint(0, 20)} "
          f"MEMORY={memory_kb}")


def shutdown(deploy_id: str, host: str, vm_id: str, _host: str) -> None:
    """Stop the resource gracefully and remove it; already gone counts as done."""
    instance(deploy_id).unlink(missing_ok=True)


def cancel(deploy_id: str, host: str, vm_id: str, _host: str) -> None:
    """Destroy the resource at once; must succeed when it is already gone."""
    instance(deploy_id).unlink(missing_ok=True)


def reboot(deploy_id: str, host: str, vm_id: str, _host: str) -> None:
    """Reboot the guest gracefully (here: count it)."""
    resource = load(deploy_id)
    resource["REBOOTS"] = str(int(resource.get("REBOOTS", "0")) + 1)
    store(deploy_id, resource)


def reset(deploy_id: str, host: str, vm_id: str, _host: str) -> None:
    """Power-cycle the guest (here: count it)."""
    resource = load(deploy_id)
    resource["RESETS"] = str(int(resource.get("RESETS", "0")) + 1)
    store(deploy_id, resource)


def save(deploy_id: str, checkpoint: str, host: str, vm_id: str, _host: str) -> None:
    """Suspend the resource, writing its state to the checkpoint file."""
    resource = load(deploy_id)
    Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    Path(checkpoint).write_text(json.dumps(resource))
    store(deploy_id, {**resource, "STATE": "p"})


def restore(checkpoint: str, host: str, deploy_id: str, vm_id: str, _host: str) -> None:
    """Resume the resource from the checkpoint that save wrote."""
    try:
        resource: dict[str, str] = json.loads(Path(checkpoint).read_text())
    except (OSError, ValueError) as exc:
        raise Failure(f"cannot read the checkpoint {checkpoint}: {exc}") from None
    store(deploy_id, {**resource, "STATE": "a"})


ACTIONS = {action.__name__: action for action in
           (deploy, poll, shutdown, cancel, reboot, reset, save, restore)}


def main(action: str) -> None:
    """Run ``action`` with the command line's arguments; report failures the daemon's way."""
    INSTANCES.mkdir(parents=True, exist_ok=True)
    TOKENS.mkdir(parents=True, exist_ok=True)
    try:
        ACTIONS[action](*sys.argv[1:])
    except (Failure, TypeError) as exc:
        print("ERROR MESSAGE --8<------", file=sys.stderr)
        print(exc, file=sys.stderr)
        print("ERROR MESSAGE ------>8--", file=sys.stderr)
        sys.exit(1)
