"""Script drivers (``one_vmm_sh``, ``one_im_sh``): one executable per action, any language.

This is the cloud-bursting guide's contract. A VM driver whose ``ARGUMENTS``
end in ``provider`` runs ``remotes/vmm/provider/<action>``; an information
driver whose ``ARGUMENTS`` end in ``provider`` runs every executable probe in
``remotes/im/provider.d/``. Scripts get OpenNebula's arguments, so scripts
written for OpenNebula work unchanged; they always run on this machine, as
under ``one_vmm_sh``.

Scripts run from an argv list, never through a shell, each in its own process
group (session). Cancelling the coroutine that runs one, which is how the
dispatcher enforces ``-w``, kills the whole group: the script and anything it
started (see :mod:`cloudburst.drivers.process`).

Environment of a script: the daemon's environment without the variables whose
name (upper-cased) contains ``SECRET``, ``PASSWORD``, ``TOKEN``, ``AWS_``,
``ONE_AUTH`` or ``KEY`` (credentials belong in the driver's own rc files), plus
``CLOUDBURST_HOME``, ``CLOUDBURST_DRIVER`` (the driver's ``NAME``),
``CLOUDBURST_ACTION``, and for VM actions ``CLOUDBURST_VM_ID``; ``deploy`` also
gets ``CLOUDBURST_ACTION_TOKEN``, the idempotency token, so a script can tell a
retry from a new deploy, and the ``shutdown``/``cancel`` of a power-off or
undeploy get ``CLOUDBURST_LEAVING`` (``yes``: undeploy, the VM leaves its host).

A script fails when it exits non-zero. The error text is what it wrote between
``ERROR MESSAGE --8<------`` and ``ERROR MESSAGE ------>8--`` lines on stderr
(OpenNebula's ``error_message`` helpers), else the last lines of stderr, else
of stdout, else the exit code (see :mod:`cloudburst.drivers.script_output`,
which also parses poll strings and probe output).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cloudburst.drivers.base import (
    OPTIONAL_ACTIONS,
    DeploySpec,
    DeviceSpec,
    DriverContext,
    HostInfo,
    HostRef,
    InformationDriver,
    PollResult,
    PollState,
    ResizeSpec,
    VmDriver,
    VmRef,
)
from cloudburst.drivers.process import ScriptResult, run_script, script_environment
from cloudburst.drivers.script_output import failure_text, parse_host_info, parse_poll
from cloudburst.errors import DriverError, UnsupportedActionError

#: OpenNebula 4.4+ ``run_probes`` arguments: collectd port and push interval.
_COLLECTD_PORT: Final = "4124"
_PUSH_INTERVAL: Final = "20"

#: The scripts each optional action needs (a missing one: the capability is absent).
#: Power-off is OpenNebula's: ``shutdown``/``cancel`` to stop, ``deploy`` to start
#: again; a cold migration is ``save`` on the source and ``restore`` on the target.
_SCRIPTS_OF: Final[dict[str, tuple[str, ...]]] = {
    "poweroff": ("shutdown", "cancel", "deploy"),
    "migrate": ("save", "restore"),
    "migrate_live": ("migrate",),
    **{action: (action,) for action in OPTIONAL_ACTIONS
       if action not in ("poweroff", "migrate", "migrate_live")},
}


def _last_argument(context: DriverContext, what: str) -> str:
    """The last word of the driver's ``ARGUMENTS``, which names its ``what``.

    Raises:
        ValueError: ``ARGUMENTS`` is empty.
    """
    if not context.arguments:
        raise ValueError(
            f'driver {context.name}: ARGUMENTS of "{context.executable}" must end with the {what}'
        )
    return context.arguments[-1]


async def _run(
    context: DriverContext,
    script: Path,
    arguments: Sequence[str],
    environment: Mapping[str, str],
) -> ScriptResult:
    """Run a driver script from its own directory; ``OSError`` becomes ``DriverError``."""
    shown = _relative(context, script)
    extra = {
        "CLOUDBURST_HOME": str(context.etc_dir.parent),
        "CLOUDBURST_DRIVER": context.name,
        **environment,
    }
    try:
        result = await run_script(
            [str(script), *arguments], env=script_environment(extra), cwd=script.parent
        )
    except OSError as exc:
        raise DriverError(f"cannot run {shown}: {exc.strerror or exc}") from exc
    context.logger.debug("%s %s: exit code %d", shown, " ".join(arguments), result.exit_code)
    return result


def _relative(context: DriverContext, path: Path) -> str:
    """``path`` as shown in messages: relative to ``remotes`` when it is below it."""
    try:
        return str(path.relative_to(context.remotes_dir))
    except ValueError:
        return str(path)


class _ScriptCapabilities:
    """``ScriptVmDriver.capabilities``: the optional actions whose scripts exist now.

    Looked up on every read, since operators add scripts while the daemon runs.
    """

    def __get__(self, driver: ScriptVmDriver | None, owner: type[ScriptVmDriver]) -> frozenset[str]:
        if driver is None:
            return frozenset()
        return frozenset(
            action for action, scripts in _SCRIPTS_OF.items()
            if all((driver.directory / script).is_file() for script in scripts)
        )


class ScriptVmDriver(VmDriver):
    """``one_vmm_sh``: runs ``remotes/vmm/<provider>/<action>`` scripts.

    ``<provider>`` is the last word of ``ARGUMENTS``. Argument lists are
    OpenNebula's (3.2+): ``deploy <deployment file> <host> <vmid> <host>``,
    ``shutdown|cancel|reboot|reset|poll <deploy id> <host> <vmid> <host>``,
    ``save <deploy id> <checkpoint> <host> <vmid> <host>``,
    ``restore <checkpoint> <host> <deploy id> <vmid> <host>``,
    ``migrate <deploy id> <dst host> <src host> <vmid> <src host>``; the
    others ``<deploy id> <args...> <host> <vmid> <host>`` with, as args,
    ``attach_disk|detach_disk <source> <target> <disk id>``,
    ``attach_nic|detach_nic <mac> <bridge> <nic id>``,
    ``snapshot_create <snapshot id>`` (prints the snapshot's name),
    ``snapshot_revert|snapshot_delete <name>``,
    ``resize <cpu> <vcpu> <memory MB>``. Power-off runs ``shutdown`` (``cancel``
    when hard) and power-on runs ``deploy`` again, as OpenNebula does.

    Retries: any :class:`DriverError` is retryable (like OpenNebula's ``-r``;
    the token makes ``deploy`` safe to repeat) **except**
    :class:`UnsupportedActionError`, a subclass raised when the action's script
    is missing: the dispatcher must test for it before consulting
    :attr:`retryable` and never retry it.

    ``find`` always returns ``None``: a script cannot be asked, it gets the
    token instead (``CLOUDBURST_ACTION_TOKEN``) when ``deploy`` is replayed.
    """

    capabilities = _ScriptCapabilities()
    retryable: tuple[type[Exception], ...] = (DriverError,)

    def __init__(self, context: DriverContext) -> None:
        """Bind the driver to ``remotes/vmm/<last word of ARGUMENTS>``.

        Raises:
            ValueError: ``ARGUMENTS`` is empty.
        """
        super().__init__(context)
        self.provider = _last_argument(context, "provider directory name")
        self.directory = context.remotes_dir / "vmm" / self.provider

    def script(self, action: str) -> Path:
        """The executable for ``action``.

        Raises:
            UnsupportedActionError: no such file.
            DriverError: the file is not executable.
        """
        path = self.directory / action
        if not path.is_file():
            raise UnsupportedActionError(
                f'Action "{action}" is not supported by provider {self.provider} '
                f"(no executable {_relative(self.context, path)})"
            )
        if not os.access(path, os.X_OK):
            raise DriverError(f"{action}: {_relative(self.context, path)} is not executable")
        return path

    async def deploy(self, spec: DeploySpec) -> str:
        """Run ``deploy``; the first word it prints is the deploy id."""
        host = spec.host.name
        output = await self._call(
            "deploy",
            spec.vm_id,
            [str(spec.deployment_file), host, str(spec.vm_id), host],
            token=spec.token,
        )
        for line in output.splitlines():
            words = line.split()
            if words:
                return words[0]
        raise DriverError("deploy: the script printed no deploy id")

    async def shutdown(self, vm: VmRef) -> None:
        await self._call("shutdown", vm.vm_id, _vm_arguments(vm))

    async def cancel(self, vm: VmRef) -> None:
        await self._call("cancel", vm.vm_id, _vm_arguments(vm))

    async def reboot(self, vm: VmRef) -> None:
        await self._call("reboot", vm.vm_id, _vm_arguments(vm))

    async def reset(self, vm: VmRef) -> None:
        await self._call("reset", vm.vm_id, _vm_arguments(vm))

    async def poll(self, vms: Sequence[VmRef]) -> dict[int, PollResult]:
        """Run one ``poll`` per VM, at most ``-t`` at once.

        A VM whose poll fails or prints garbage is reported ``UNKNOWN`` with
        ``info["ERROR"]`` set; the other VMs are unaffected.

        Raises:
            UnsupportedActionError: there is no ``poll`` script at all.
        """
        self.script("poll")
        limit = asyncio.Semaphore(self.context.options.threads)

        async def poll_one(vm: VmRef) -> tuple[int, PollResult]:
            async with limit:
                try:
                    output = await self._call("poll", vm.vm_id, _vm_arguments(vm))
                    return vm.vm_id, parse_poll(output)
                except DriverError as exc:
                    return vm.vm_id, PollResult(PollState.UNKNOWN, {"ERROR": str(exc)})

        return dict(await asyncio.gather(*(poll_one(vm) for vm in vms)))

    async def poweroff(self, vm: VmRef, *, hard: bool, leaving: bool) -> None:
        """``cancel`` (hard) or ``shutdown`` with OpenNebula's argv, whether powering off
        or undeploying (OpenNebula's scripts get the same arguments for both and
        tell them apart by the VM's LCM state in their action data); here
        ``CLOUDBURST_LEAVING`` is ``yes`` when the VM leaves its host, else ``no``."""
        environment = {"CLOUDBURST_LEAVING": "yes" if leaving else "no"}
        await self._call("cancel" if hard else "shutdown", vm.vm_id, _vm_arguments(vm),
                         environment=environment)

    async def poweron(self, vm: VmRef, spec: DeploySpec) -> str:
        return await self.deploy(spec)

    async def save(self, vm: VmRef, checkpoint: Path, *, leaving: bool) -> None:
        host = vm.host.name
        await self._call("save", vm.vm_id, [vm.deploy_id, str(checkpoint), host,
                                             str(vm.vm_id), host])

    async def restore(self, vm: VmRef, checkpoint: Path) -> str:
        host = vm.host.name
        await self._call("restore", vm.vm_id, [str(checkpoint), host, vm.deploy_id,
                                                str(vm.vm_id), host])
        return vm.deploy_id

    async def migrate(self, vm: VmRef, destination: HostRef, *, live: bool) -> str:
        """Live: the ``migrate`` script. Cold: ``save`` here, ``restore`` on ``destination``."""
        source = vm.host.name
        if live:
            await self._call("migrate", vm.vm_id, [vm.deploy_id, destination.name, source,
                                                   str(vm.vm_id), source])
            return vm.deploy_id
        checkpoint = self.context.var_dir / "checkpoints" / f"{vm.vm_id}.migrate"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        await self.save(vm, checkpoint, leaving=True)
        moved = VmRef(vm_id=vm.vm_id, deploy_id=vm.deploy_id, host=destination)
        return await self.restore(moved, checkpoint)

    async def resize(self, vm: VmRef, spec: ResizeSpec) -> None:
        await self._optional("resize", vm, f"{spec.cpu:g}", str(spec.vcpu), str(spec.memory_mb))

    async def reconfigure(self, vm: VmRef, spec: DeploySpec) -> bool:
        """Run ``reconfigure <deploy id> <deployment file> <host> <vmid> <host>`` (the
        deployment as the VM stands now, new CONTEXT included) when the provider has
        that script; without one the change waits for the next deploy (``False``)."""
        if not (self.directory / "reconfigure").is_file():
            return False
        await self._optional("reconfigure", vm, str(spec.deployment_file))
        return True

    async def snapshot_create(self, vm: VmRef, snapshot_id: int, name: str) -> str:
        output = await self._optional("snapshot_create", vm, str(snapshot_id))
        words = output.split()
        return words[0] if words else f"snap-{snapshot_id}"

    async def snapshot_revert(self, vm: VmRef, provider_name: str) -> None:
        await self._optional("snapshot_revert", vm, provider_name)

    async def snapshot_delete(self, vm: VmRef, provider_name: str) -> None:
        await self._optional("snapshot_delete", vm, provider_name)

    async def attach_disk(self, vm: VmRef, disk: DeviceSpec) -> None:
        await self._optional("attach_disk", vm, *_disk_arguments(disk))

    async def detach_disk(self, vm: VmRef, disk: DeviceSpec) -> None:
        await self._optional("detach_disk", vm, *_disk_arguments(disk))

    async def attach_nic(self, vm: VmRef, nic: DeviceSpec) -> None:
        await self._optional("attach_nic", vm, *_nic_arguments(nic))

    async def detach_nic(self, vm: VmRef, nic: DeviceSpec) -> None:
        await self._optional("detach_nic", vm, *_nic_arguments(nic))

    async def _optional(self, action: str, vm: VmRef, *args: str) -> str:
        """Run ``<action> <deploy id> <args...> <host> <vmid> <host>``; its stdout, stripped."""
        host = vm.host.name
        output = await self._call(action, vm.vm_id,
                                  [vm.deploy_id, *args, host, str(vm.vm_id), host])
        return output.strip()

    async def _call(
        self, action: str, vm_id: int, arguments: Sequence[str], token: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> str:
        """Run ``action``'s script (``environment``: more variables for it); return its
        stdout or raise ``DriverError``."""
        environment = {**(environment or {}), "CLOUDBURST_ACTION": action,
                       "CLOUDBURST_VM_ID": str(vm_id)}
        if token is not None:
            environment["CLOUDBURST_ACTION_TOKEN"] = token
        result = await _run(self.context, self.script(action), arguments, environment)
        if result.exit_code != 0:
            raise DriverError(f"{action}: {failure_text(result)}")
        return result.stdout


def _vm_arguments(vm: VmRef) -> list[str]:
    return [vm.deploy_id, vm.host.name, str(vm.vm_id), vm.host.name]


def _disk_arguments(disk: DeviceSpec) -> list[str]:
    return [disk.attributes.get("SOURCE", "-") or "-", disk.target or "-", str(disk.id)]


def _nic_arguments(nic: DeviceSpec) -> list[str]:
    return [nic.attributes.get("MAC", "-") or "-", nic.attributes.get("BRIDGE", "-") or "-",
            str(nic.id)]


class ScriptInformationDriver(InformationDriver):
    """``one_im_sh``: runs the probes in ``remotes/im/<name>.d/`` and merges their output.

    ``<name>`` is the last word of ``ARGUMENTS``. Probes are the executable
    files of that directory (dot files and non-executables skipped), run one
    after another in byte order of their names (``LC_ALL=C ls``), each as
    ``<probe> <name> <var_dir>/datastores 4124 20 <host id> <host name>``
    (OpenNebula 4.4's ``run_probes`` arguments). Their outputs, joined with
    newlines, are parsed as by :func:`parse_host_info`.
    """

    def __init__(self, context: DriverContext) -> None:
        """Bind the driver to ``remotes/im/<last word of ARGUMENTS>.d``.

        Raises:
            ValueError: ``ARGUMENTS`` is empty.
        """
        super().__init__(context)
        self.probe_set = _last_argument(context, "probe set name")
        self.directory = context.remotes_dir / "im" / f"{self.probe_set}.d"

    def probes(self) -> list[Path]:
        """The probes to run, in order.

        Raises:
            DriverError: the probe directory is missing or unreadable.
        """
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            raise DriverError(f"probe directory {self.directory} does not exist") from None
        except OSError as exc:
            raise DriverError(f"probe directory {self.directory}: {exc.strerror}") from None
        paths = [self.directory / name for name in names if not name.startswith(".")]
        return [path for path in paths if path.is_file() and os.access(path, os.X_OK)]

    async def monitor(self, host: HostRef) -> HostInfo:
        """Run every probe; the first that fails aborts with its error."""
        arguments = [
            self.probe_set,
            str(self.context.var_dir / "datastores"),
            _COLLECTD_PORT,
            _PUSH_INTERVAL,
            str(host.id),
            host.name,
        ]
        outputs: list[str] = []
        for probe in self.probes():
            result = await _run(self.context, probe, arguments, {"CLOUDBURST_ACTION": "monitor"})
            if result.exit_code != 0:
                raise DriverError(f"probe {probe.name} failed: {failure_text(result)}")
            outputs.append(result.stdout)
        return parse_host_info("\n".join(outputs), self.context.logger)
