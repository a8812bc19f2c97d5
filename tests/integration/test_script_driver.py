"""Script drivers against real bash and Python scripts in a temporary remotes tree."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cloudburst.drivers.base import (
    DeploySpec,
    DeviceSpec,
    DriverContext,
    DriverOptions,
    HostRef,
    PollResult,
    PollState,
    ReportedVm,
    ResizeSpec,
    VmRef,
)
from cloudburst.drivers.process import MAX_OUTPUT, run_script
from cloudburst.drivers.script import ScriptInformationDriver, ScriptVmDriver
from cloudburst.drivers.script_output import parse_poll
from cloudburst.errors import DriverError, UnsupportedActionError
from cloudburst.template import parse_xml

PYTHON = f"#!{sys.executable}"
HOST = HostRef(id=4, name="remote_provider")

#: A Python script body that records its argv and part of its environment as JSON.
RECORD = PYTHON + textwrap.dedent(
    """
    import json, os, sys
    with open(os.environ["RECORD_TO"], "a") as out:
        out.write(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ)}) + "\\n")
    """
)


def make_context(
    tmp_path: Path, arguments: str = "provider_name", threads: int = 15
) -> DriverContext:
    home = tmp_path / "home"
    return DriverContext(
        name="vmm_provider",
        executable="one_vmm_sh",
        arguments=tuple(arguments.split()),
        options=DriverOptions(threads=threads),
        etc_dir=home / "etc",
        remotes_dir=home / "remotes",
        var_dir=home / "var",
    )


def write_script(path: Path, text: str, mode: int = 0o755) -> Path:
    """Write an executable; the body may be indented apart from the ``#!`` line."""
    shebang, _, body = textwrap.dedent(text).lstrip().partition("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(shebang + "\n" + textwrap.dedent(body))
    path.chmod(mode)
    return path


def vmm_script(tmp_path: Path, action: str, text: str, mode: int = 0o755) -> Path:
    return write_script(tmp_path / "home/remotes/vmm/provider_name" / action, text, mode)


def probe(tmp_path: Path, name: str, text: str, mode: int = 0o755) -> Path:
    return write_script(tmp_path / "home/remotes/im/provider_name.d" / name, text, mode)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def running(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie counts as gone (some container inits never reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} was not written")


def deploy_spec(tmp_path: Path, vm_id: int = 23, token: str = "token-23") -> DeploySpec:
    deployment_file = tmp_path / "home/var/vms" / str(vm_id) / "deployment.0"
    deployment_file.parent.mkdir(parents=True, exist_ok=True)
    deployment = textwrap.dedent(
        """
        <TEMPLATE>
          <CPU>1</CPU>
          <MEMORY>256</MEMORY>
          <PUBLIC_CLOUD>
            <TYPE>provider_name</TYPE>
            <PROVIDER_IMAGE_ID>id-141234</PROVIDER_IMAGE_ID>
            <PROVIDER_INSTANCE_TYPE>small_256mb</PROVIDER_INSTANCE_TYPE>
          </PUBLIC_CLOUD>
        </TEMPLATE>
        """
    )
    deployment_file.write_text(deployment)
    return DeploySpec(
        vm_id=vm_id,
        host=HOST,
        deployment_file=deployment_file,
        template=parse_xml(deployment),
        token=token,
        memory_mb=256,
        cpu=1.0,
    )


# --- the seed's provider example -----------------------------------------------------------


def test_seed_provider_probes(tmp_path: Path) -> None:
    log = tmp_path / "probe-args"
    probe(
        tmp_path,
        "cloud.sh",
        f"""
        #!/bin/bash
        echo 'PUBLIC_CLOUD="YES"'
        echo 'HYPERVISOR="provider_name"'
        printf '%s\\n' "$@" > {shlex.quote(str(log))}
        """,
    )
    probe(
        tmp_path,
        "capacity.py",
        PYTHON
        + """
        print("TOTALCPU=500 TOTALMEMORY=8912896")
        print("USEDCPU=0 USEDMEMORY=0 FREECPU=500 FREEMEMORY=8912896")
        """,
    )
    driver = ScriptInformationDriver(make_context(tmp_path))
    info = asyncio.run(driver.monitor(HOST))
    assert dict(info.attributes) == {
        "TOTALCPU": "500",
        "TOTALMEMORY": "8912896",
        "USEDCPU": "0",
        "USEDMEMORY": "0",
        "FREECPU": "500",
        "FREEMEMORY": "8912896",
        "PUBLIC_CLOUD": "YES",
        "HYPERVISOR": "provider_name",
    }
    datastores = str(tmp_path / "home/var/datastores")
    assert log.read_text().splitlines() == [
        "provider_name",
        datastores,
        "4124",
        "20",
        "4",
        "remote_provider",
    ]


def test_seed_provider_deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "deploy-log"
    monkeypatch.setenv("RECORD_TO", str(log))
    vmm_script(
        tmp_path,
        "deploy",
        """
        #!/bin/bash
        deployment_file=$1
        pattern='s:.*<PROVIDER_IMAGE_ID>\\(.*\\)</PROVIDER_IMAGE_ID>.*:\\1:p'
        image=$(sed -n "$pattern" "$deployment_file")
        {
          printf '%s\\n' "$@"
          echo "token=$CLOUDBURST_ACTION_TOKEN vm=$CLOUDBURST_VM_ID action=$CLOUDBURST_ACTION"
          echo "driver=$CLOUDBURST_DRIVER home=$CLOUDBURST_HOME cwd=$PWD"
        } > "$RECORD_TO"
        echo
        echo "prov-$image-$3 created"
        """,
    )
    spec = deploy_spec(tmp_path)
    driver = ScriptVmDriver(make_context(tmp_path))
    assert asyncio.run(driver.deploy(spec)) == "prov-id-141234-23"
    home = tmp_path / "home"
    assert log.read_text().splitlines() == [
        str(spec.deployment_file),
        "remote_provider",
        "23",
        "remote_provider",
        "token=token-23 vm=23 action=deploy",
        f"driver=vmm_provider home={home} cwd={home / 'remotes/vmm/provider_name'}",
    ]


def test_vm_actions_get_opennebula_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls"
    monkeypatch.setenv("RECORD_TO", str(log))
    actions = [
        "shutdown",
        "cancel",
        "reboot",
        "reset",
        "save",
        "restore",
        "migrate",
        "snapshot_create",
        "attach_disk",
        "resize",
        "detach_nic",
    ]
    for action in actions:
        vmm_script(tmp_path, action, RECORD)
    driver = ScriptVmDriver(make_context(tmp_path))
    vm = VmRef(vm_id=23, deploy_id="i-0abc", host=HOST)

    async def scenario() -> list[str]:
        await driver.shutdown(vm)
        await driver.cancel(vm)
        await driver.reboot(vm)
        await driver.reset(vm)
        await driver.save(vm, Path("/var/ckpt.23"), leaving=False)
        return [
            await driver.restore(vm, Path("/var/ckpt.23")),
            await driver.migrate(vm, HostRef(4, "other_provider"), live=True),
            await driver.snapshot_create(vm, 1, "before upgrade"),
            await driver.attach_disk(vm, DeviceSpec(2, "sdb", {"SOURCE": "/img"})),
            await driver.resize(vm, ResizeSpec(cpu=0.5, vcpu=2, memory_mb=2048)),
            await driver.detach_nic(vm, DeviceSpec(1, "", {"MAC": "02:00:0a", "BRIDGE": "br0"})),
        ]

    # restore and migrate keep the deploy id; a silent snapshot_create is named by its id
    assert asyncio.run(scenario()) == ["i-0abc", "i-0abc", "snap-1", None, None, None]
    standard = ["i-0abc", "remote_provider", "23", "remote_provider"]
    calls = records(log)
    assert [call["argv"] for call in calls] == [
        standard,
        standard,
        standard,
        standard,
        ["i-0abc", "/var/ckpt.23", "remote_provider", "23", "remote_provider"],
        ["/var/ckpt.23", "remote_provider", "i-0abc", "23", "remote_provider"],
        ["i-0abc", "other_provider", "remote_provider", "23", "remote_provider"],
        ["i-0abc", "1", "remote_provider", "23", "remote_provider"],
        ["i-0abc", "/img", "sdb", "2", "remote_provider", "23", "remote_provider"],
        ["i-0abc", "0.5", "2", "2048", "remote_provider", "23", "remote_provider"],
        ["i-0abc", "02:00:0a", "br0", "1", "remote_provider", "23", "remote_provider"],
    ]
    envs = [call["env"] for call in calls]
    assert [env["CLOUDBURST_ACTION"] for env in envs] == actions  # type: ignore[index]
    assert all("CLOUDBURST_ACTION_TOKEN" not in env for env in envs)  # type: ignore[operator]


def test_optional_action_output(tmp_path: Path) -> None:
    vmm_script(tmp_path, "snapshot_create", "#!/bin/sh\necho '  snap-77  '\n")
    driver = ScriptVmDriver(make_context(tmp_path))
    vm = VmRef(vm_id=23, deploy_id="i-0abc", host=HOST)
    assert asyncio.run(driver.snapshot_create(vm, 0, "s")) == "snap-77"


def test_cold_migration_is_save_here_and_restore_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("RECORD_TO", str(log))
    for action in ("save", "restore"):
        vmm_script(tmp_path, action, RECORD)
    driver = ScriptVmDriver(make_context(tmp_path))
    assert driver.capabilities == frozenset({"save", "restore", "migrate"})
    vm = VmRef(vm_id=23, deploy_id="i-0abc", host=HOST)
    assert asyncio.run(driver.migrate(vm, HostRef(4, "target"), live=False)) == "i-0abc"
    checkpoint = str(tmp_path / "home/var/checkpoints/23.migrate")
    assert [call["argv"] for call in records(log)] == [
        ["i-0abc", checkpoint, "remote_provider", "23", "remote_provider"],
        [checkpoint, "target", "i-0abc", "23", "target"],
    ]


def test_poll_state_and_info(tmp_path: Path) -> None:
    vmm_script(
        tmp_path,
        "poll",
        PYTHON
        + """
        import sys
        assert sys.argv[1:] == ["i-9", "remote_provider", "9", "remote_provider"], sys.argv
        print("STATE=a IP=10.0.0.5")
        print('NAME="my vm" NETTX=10')
        """,
    )
    driver = ScriptVmDriver(make_context(tmp_path))
    results = asyncio.run(driver.poll([VmRef(9, "i-9", HOST)]))
    assert results == {
        9: PollResult(PollState.ACTIVE, {"IP": "10.0.0.5", "NAME": "my vm", "NETTX": "10"})
    }


def test_poll_failures_stay_with_their_vm(tmp_path: Path) -> None:
    vmm_script(
        tmp_path,
        "poll",
        """
        #!/bin/bash
        case "$3" in
          1) echo "STATE=d" ;;
          2) echo "this is not a poll string" ;;
          3) echo "instance vanished" >&2; exit 1 ;;
          4) echo "STATE=zz" ;;
          5) echo "IP=1.2.3.4" ;;
        esac
        """,
    )
    driver = ScriptVmDriver(make_context(tmp_path))
    results = asyncio.run(driver.poll([VmRef(vm_id, f"i-{vm_id}", HOST) for vm_id in range(1, 6)]))
    assert results[1] == PollResult(PollState.GONE, {})
    assert results[2].state is PollState.UNKNOWN
    assert results[2].info["ERROR"].startswith("poll output is not KEY=VALUE: ")
    assert results[3] == PollResult(PollState.UNKNOWN, {"ERROR": "poll: instance vanished"})
    assert results[4] == PollResult(
        PollState.UNKNOWN, {"ERROR": "poll output has an unknown STATE 'zz'"}
    )
    assert results[5] == PollResult(PollState.UNKNOWN, {"IP": "1.2.3.4"})
    assert all("\n" not in result.info.get("ERROR", "") for result in results.values())


def test_poll_runs_at_most_threads_at_once(tmp_path: Path) -> None:
    vmm_script(tmp_path, "poll", "#!/bin/sh\nsleep 0.2\necho STATE=a\n")
    driver = ScriptVmDriver(make_context(tmp_path, threads=2))
    started = time.monotonic()
    results = asyncio.run(driver.poll([VmRef(vm_id, "i", HOST) for vm_id in range(4)]))
    assert time.monotonic() - started >= 0.4
    assert {result.state for result in results.values()} == {PollState.ACTIVE}


def test_poll_without_a_script(tmp_path: Path) -> None:
    driver = ScriptVmDriver(make_context(tmp_path))
    with pytest.raises(UnsupportedActionError, match="no executable vmm/provider_name/poll"):
        asyncio.run(driver.poll([VmRef(1, "i-1", HOST)]))


def test_parse_poll_ignores_vectors() -> None:
    result = parse_poll('STATE=p DISK_SIZE=[ID=0, SIZE=10] CPU="1.5"')
    assert result == PollResult(PollState.PAUSED, {"CPU": "1.5"})


# --- failures -------------------------------------------------------------------------------


def test_failure_with_an_error_message_block(tmp_path: Path) -> None:
    vmm_script(
        tmp_path,
        "deploy",
        """
        #!/bin/bash
        echo "some progress" >&2
        echo "ERROR MESSAGE --8<------" >&2
        echo "Cannot create instance:" >&2
        echo "  quota exceeded" >&2
        echo "ERROR MESSAGE ------>8--" >&2
        echo "trailing noise" >&2
        exit 1
        """,
    )
    driver = ScriptVmDriver(make_context(tmp_path))
    with pytest.raises(DriverError) as caught:
        asyncio.run(driver.deploy(deploy_spec(tmp_path)))
    assert type(caught.value) is DriverError
    assert str(caught.value) == "deploy: Cannot create instance: quota exceeded"


def test_failure_with_plain_stderr(tmp_path: Path) -> None:
    vmm_script(
        tmp_path,
        "shutdown",
        PYTHON
        + """
        import sys
        for n in range(10):
            print(f"line {n}", file=sys.stderr)
        print("", file=sys.stderr)
        sys.exit(2)
        """,
    )
    driver = ScriptVmDriver(make_context(tmp_path))
    with pytest.raises(DriverError, match=r"^shutdown: line 7 line 8 line 9$"):
        asyncio.run(driver.shutdown(VmRef(1, "i-1", HOST)))


def test_failure_falls_back_to_stdout_then_the_exit_code(tmp_path: Path) -> None:
    vmm_script(tmp_path, "reboot", "#!/bin/sh\necho 'only on stdout'\nexit 4\n")
    vmm_script(tmp_path, "reset", "#!/bin/sh\nexit 3\n")
    vmm_script(tmp_path, "cancel", "#!/bin/sh\nkill -9 $$\n")
    driver = ScriptVmDriver(make_context(tmp_path))
    vm = VmRef(1, "i-1", HOST)
    with pytest.raises(DriverError, match=r"^reboot: only on stdout$"):
        asyncio.run(driver.reboot(vm))
    with pytest.raises(DriverError, match=r"^reset: exit code 3$"):
        asyncio.run(driver.reset(vm))
    with pytest.raises(DriverError, match=r"^cancel: killed by signal 9$"):
        asyncio.run(driver.cancel(vm))


def test_deploy_that_prints_no_id(tmp_path: Path) -> None:
    vmm_script(tmp_path, "deploy", "#!/bin/sh\necho '   '\necho 'all good' >&2\n")
    driver = ScriptVmDriver(make_context(tmp_path))
    with pytest.raises(DriverError, match=r"^deploy: the script printed no deploy id$"):
        asyncio.run(driver.deploy(deploy_spec(tmp_path)))


def test_missing_action_is_unsupported(tmp_path: Path) -> None:
    driver = ScriptVmDriver(make_context(tmp_path))
    vm = VmRef(1, "i-1", HOST)
    with pytest.raises(UnsupportedActionError) as caught:
        asyncio.run(driver.shutdown(vm))
    assert str(caught.value) == (
        'Action "shutdown" is not supported by provider provider_name '
        "(no executable vmm/provider_name/shutdown)"
    )
    with pytest.raises(UnsupportedActionError, match='Action "save" is not supported'):
        asyncio.run(driver.save(vm, Path("/ckpt"), leaving=False))
    with pytest.raises(UnsupportedActionError, match='Action "migrate" is not supported'):
        asyncio.run(driver.migrate(vm, HOST, live=True))
    # A directory named like the action is not a script either.
    (tmp_path / "home/remotes/vmm/provider_name/reboot").mkdir(parents=True)
    with pytest.raises(UnsupportedActionError, match="no executable vmm/provider_name/reboot"):
        asyncio.run(driver.reboot(vm))


def test_capabilities_follow_the_scripts_on_disk(tmp_path: Path) -> None:
    driver = ScriptVmDriver(make_context(tmp_path))
    assert driver.capabilities == frozenset()
    assert not driver.supports("save")
    vmm_script(tmp_path, "save", "#!/bin/sh\n")
    vmm_script(tmp_path, "snapshot_create", "#!/bin/sh\n")
    vmm_script(tmp_path, "not_an_action", "#!/bin/sh\n")
    assert driver.capabilities == frozenset({"save", "snapshot_create"})
    for script in ("deploy", "shutdown", "cancel"):
        vmm_script(tmp_path, script, "#!/bin/sh\n")
    assert driver.capabilities == frozenset({"save", "snapshot_create", "poweroff"})
    assert driver.supports("save")
    assert driver.supports("deploy")
    assert ScriptVmDriver.capabilities == frozenset()


def test_script_that_is_not_executable(tmp_path: Path) -> None:
    vmm_script(tmp_path, "reboot", "#!/bin/sh\n", mode=0o644)
    driver = ScriptVmDriver(make_context(tmp_path))
    with pytest.raises(DriverError) as caught:
        asyncio.run(driver.reboot(VmRef(1, "i-1", HOST)))
    assert not isinstance(caught.value, UnsupportedActionError)
    assert str(caught.value) == "reboot: vmm/provider_name/reboot is not executable"


def test_script_that_cannot_start(tmp_path: Path) -> None:
    vmm_script(tmp_path, "reboot", "#!/nonexistent/interpreter\n")
    driver = ScriptVmDriver(make_context(tmp_path))
    with pytest.raises(DriverError, match=r"^cannot run vmm/provider_name/reboot: "):
        asyncio.run(driver.reboot(VmRef(1, "i-1", HOST)))


def test_retry_policy() -> None:
    assert ScriptVmDriver.retryable == (DriverError,)
    assert issubclass(UnsupportedActionError, DriverError)  # hence the dispatcher's special case


# --- process handling ------------------------------------------------------------------------


def test_hanging_script_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    vmm_script(
        tmp_path,
        "deploy",
        f"""
        #!/bin/bash
        sleep 1000 &
        echo "$$ $!" > {shlex.quote(str(pids))}
        sleep 1000
        """,
    )
    driver = ScriptVmDriver(make_context(tmp_path))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(driver.deploy(deploy_spec(tmp_path)), 1.0))
    assert time.monotonic() - started < 3.0
    script_pid, background_pid = map(int, wait_for_file(pids).split())
    assert not running(script_pid)
    assert not running(background_pid)


def test_script_ignoring_sigterm_gets_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = write_script(
        tmp_path / "stubborn",
        PYTHON
        + f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open({str(pid_file)!r}, "w") as out:
            out.write(str(os.getpid()))
        time.sleep(1000)
        """,
    )

    async def scenario() -> float:
        task = asyncio.ensure_future(run_script([str(script)], env=os.environ, cwd=tmp_path))
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.01)
        cancelled = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - cancelled

    # The 2 s SIGTERM grace is waited out, then SIGKILL ends it (the script would
    # sleep 1,000 s): the upper bound is only there to fail rather than hang.
    waited = asyncio.run(scenario())
    assert 2.0 <= waited < 60.0
    assert not running(int(pid_file.read_text()))


def test_background_process_holding_output_does_not_block(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    vmm_script(
        tmp_path,
        "deploy",
        f"""
        #!/bin/bash
        sleep 30 &
        echo $! > {shlex.quote(str(pid_file))}
        echo i-left-something-running
        """,
    )
    driver = ScriptVmDriver(make_context(tmp_path))
    started = time.monotonic()
    try:
        assert asyncio.run(driver.deploy(deploy_spec(tmp_path))) == "i-left-something-running"
        assert time.monotonic() - started < 5.0
    finally:
        os.kill(int(wait_for_file(pid_file)), signal.SIGKILL)


def test_huge_output_is_bounded(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "chatty",
        PYTHON
        + """
        import sys
        chunk = "x" * 65536
        for _ in range(80):
            sys.stdout.write(chunk)
            sys.stderr.write(chunk)
        sys.stdout.flush()
        sys.exit(7)
        """,
    )
    result = asyncio.run(run_script([str(script)], env=os.environ, cwd=tmp_path))
    assert result.exit_code == 7
    assert len(result.stdout) == len(result.stderr) == MAX_OUTPUT
    small = asyncio.run(run_script([str(script)], env=os.environ, cwd=tmp_path, max_output=10))
    assert (small.stdout, small.stderr) == ("x" * 10, "x" * 10)


def test_stdin(tmp_path: Path) -> None:
    given = asyncio.run(run_script(["cat"], env=os.environ, cwd=tmp_path, stdin_data=b"abc\n"))
    assert given.stdout == "abc\n"
    none = asyncio.run(run_script(["cat"], env=os.environ, cwd=tmp_path))
    assert (none.exit_code, none.stdout) == (0, "")


def test_secrets_are_not_passed_to_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "env"
    monkeypatch.setenv("RECORD_TO", str(log))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake-id")
    monkeypatch.setenv("ONE_AUTH", "/root/.one/one_auth")
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    monkeypatch.setenv("github_token", "ghp_fake")
    monkeypatch.setenv("CLOUDBURST_ACTION_TOKEN", "stale-from-the-daemon")
    monkeypatch.setenv("HARMLESS_SETTING", "kept")
    vmm_script(tmp_path, "deploy", RECORD + "print('i-1')\n")
    driver = ScriptVmDriver(make_context(tmp_path))
    assert asyncio.run(driver.deploy(deploy_spec(tmp_path, token="fresh"))) == "i-1"
    (call,) = records(log)
    env = call["env"]
    assert isinstance(env, dict)
    for secret in (
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "ONE_AUTH",
        "DB_PASSWORD",
        "github_token",
    ):
        assert secret not in env
    assert "fake-secret" not in json.dumps(env)
    assert env["HARMLESS_SETTING"] == "kept"
    assert env["CLOUDBURST_ACTION_TOKEN"] == "fresh"


# --- probes ----------------------------------------------------------------------------------


def test_probes_run_in_ls_order_and_outputs_are_joined(tmp_path: Path) -> None:
    order = tmp_path / "order"
    for name in ("b.sh", "10-first.sh", "a.sh"):
        probe(
            tmp_path,
            name,
            f"""
            #!/bin/bash
            echo {name} >> {shlex.quote(str(order))}
            echo "PROBE=\\"{name}\\""
            echo "FROM_{name.split(".")[0].replace("-", "_").upper()}=yes"
            """,
        )
    probe(tmp_path, ".hidden", f"#!/bin/sh\necho hidden >> {shlex.quote(str(order))}\n")
    probe(tmp_path, "c.sh", "#!/bin/sh\necho NOT_RUN=1\n", mode=0o644)
    (tmp_path / "home/remotes/im/provider_name.d/subdir").mkdir()
    info = asyncio.run(ScriptInformationDriver(make_context(tmp_path)).monitor(HOST))
    assert order.read_text().split() == ["10-first.sh", "a.sh", "b.sh"]
    assert info.attributes == {
        "PROBE": "b.sh",
        "FROM_10_FIRST": "yes",
        "FROM_A": "yes",
        "FROM_B": "yes",
    }


def test_failing_probe_aborts_monitoring(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    probe(tmp_path, "10-ok.sh", "#!/bin/sh\necho HYPERVISOR=provider_name\n")
    probe(
        tmp_path,
        "20-bad.py",
        PYTHON
        + """
        import sys
        print("ERROR MESSAGE --8<------", file=sys.stderr)
        print("cannot reach the provider API", file=sys.stderr)
        print("ERROR MESSAGE ------>8--", file=sys.stderr)
        sys.exit(1)
        """,
    )
    probe(tmp_path, "30-after.sh", f"#!/bin/sh\ntouch {shlex.quote(str(ran))}\n")
    driver = ScriptInformationDriver(make_context(tmp_path))
    with pytest.raises(DriverError) as caught:
        asyncio.run(driver.monitor(HOST))
    assert str(caught.value) == "probe 20-bad.py failed: cannot reach the provider API"
    assert not ran.exists()


def test_probe_directory_missing(tmp_path: Path) -> None:
    driver = ScriptInformationDriver(make_context(tmp_path, "-t 1 -r 0 nowhere"))
    with pytest.raises(DriverError) as caught:
        asyncio.run(driver.monitor(HOST))
    expected = tmp_path / "home/remotes/im/nowhere.d"
    assert str(caught.value) == f"probe directory {expected} does not exist"


def test_unparseable_probe_output(tmp_path: Path) -> None:
    probe(tmp_path, "broken.sh", "#!/bin/sh\necho 'TOTALCPU=100 and then some words'\n")
    driver = ScriptInformationDriver(make_context(tmp_path))
    with pytest.raises(DriverError, match=r"^probe output is not KEY=VALUE: "):
        asyncio.run(driver.monitor(HOST))


def test_probe_reports_vms(tmp_path: Path) -> None:
    probe(
        tmp_path,
        "vms.sh",
        """
        #!/bin/sh
        echo 'VM_POLL=YES'
        echo 'VM=[ID=5, DEPLOY_ID=i-5, POLL="STATE=a IP=1.2.3.4"]'
        echo 'VM=[ID=-1, DEPLOY_ID=i-wild, VM_NAME=stray]'
        echo 'VM=[ID=6, DEPLOY_ID=i-6, POLL="garbage here"]'
        echo 'VM=[ID=seven, DEPLOY_ID=i-7]'
        echo 'VM=[ID=8]'
        echo 'DS=[ID=0, TOTAL_MB=100, FREE_MB=50, USED_MB=50]'
        """,
    )
    info = asyncio.run(ScriptInformationDriver(make_context(tmp_path)).monitor(HOST))
    assert info.attributes == {"VM_POLL": "YES"}
    assert info.vms[0] == ReportedVm(5, "i-5", PollResult(PollState.ACTIVE, {"IP": "1.2.3.4"}))
    assert info.vms[1] == ReportedVm(-1, "i-wild")
    assert info.vms[2].vm_id == 6
    assert info.vms[2].poll is not None and info.vms[2].poll.state is PollState.UNKNOWN
    assert "ERROR" in info.vms[2].poll.info
    assert len(info.vms) == 3
