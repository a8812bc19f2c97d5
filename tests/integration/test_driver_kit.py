"""``cloudburst driver test``, run as the real command, on good and broken providers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED_REMOTES = REPO / "src" / "cloudburst" / "share" / "remotes"


def driver_test(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDBURST_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"),
                                                       os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "cloudburst.cli.tool", "driver", "test", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def verdicts(output: str) -> dict[str, tuple[str, str]]:
    """``{point: (status, reason)}`` of the PASS/FAIL/WARN lines."""
    found = {}
    for line in output.splitlines():
        status, _, rest = line.partition("  ")
        if status in ("PASS", "FAIL", "WARN"):
            point, _, reason = rest.strip().partition(" ")
            found[point] = (status, reason.strip())
    return found


def script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(0o755)


def test_shipped_examples_pass(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(SHIPPED_REMOTES, home / "remotes")  # as the daemon seeds it
    for provider, remotes in (("example_sh", ()), ("example_py", ("--remotes",
                                                                   str(SHIPPED_REMOTES)))):
        result = driver_test(home, provider, *remotes)
        assert result.returncode == 0, result.stdout + result.stderr
        found = verdicts(result.stdout)
        assert {status for status, _ in found.values()} == {"PASS"}, result.stdout
        for point in ("probes", "probes.cloud", "probes.hypervisor", "probes.capacity",
                      "deploy", "deploy.idempotent", "poll", "reboot", "reset", "save",
                      "restore", "shutdown", "poll.gone", "cancel.gone", "cancel", "errors"):
            assert point in found, (point, result.stdout)
        assert found["probes.hypervisor"][1].startswith(f"HYPERVISOR={provider}")
        assert found["poll"][1].startswith("STATE=a IP=10.")
        assert "same id" in found["deploy.idempotent"][1]
        assert result.stdout.splitlines()[-1] == (
            f"{provider}: passed: {len(found)} passed, 0 warning(s), 0 failed")
        # Whatever the run created is gone again.
        instances = home / "var" / provider / "instances"
        assert [path.name for path in instances.iterdir()] == []


def test_broken_provider_fails_precisely(tmp_path: Path) -> None:
    home = tmp_path / "home"
    remotes = home / "remotes"
    script(remotes / "im/broken.d/probe", """
        #!/bin/sh
        echo PUBLIC_CLOUD=YES
        echo TOTALCPU=400 TOTALMEMORY=lots
        """)
    script(remotes / "vmm/broken/deploy", "#!/bin/sh\nexit 0\n")
    script(remotes / "vmm/broken/poll", "#!/bin/sh\necho STATE=x\n")
    script(remotes / "vmm/broken/cancel", """
        #!/bin/sh
        echo "ERROR MESSAGE --8<------" >&2
        echo "no such resource $1" >&2
        echo "ERROR MESSAGE ------>8--" >&2
        exit 1
        """)
    result = driver_test(home, "broken")
    assert result.returncode == 1, result.stdout + result.stderr
    found = verdicts(result.stdout)
    assert found["probes.cloud"][0] == "PASS"
    assert found["probes.hypervisor"] == (
        "FAIL", "no HYPERVISOR: print HYPERVISOR=broken, or the host is treated as local and "
                "VMs cannot name it in PUBLIC_CLOUD=[TYPE=...]")
    assert found["probes.capacity"] == ("FAIL", "not numbers: TOTALMEMORY='lots'")
    assert found["deploy"] == ("FAIL", "deploy: the script printed no deploy id")
    assert found["poll"] == ("FAIL", "poll output has an unknown STATE 'x'")
    status, reason = found["cancel.gone"]
    assert status == "FAIL" and reason.startswith("cancel of a resource that does not exist "
                                                  "must succeed")
    assert reason.endswith("cancel: no such resource broken-contract-test-missing")
    assert found["reboot"][0] == "WARN" and "not supported" in found["reboot"][1]
    assert "(no executable vmm/broken/reboot)" in found["reboot"][1]
    assert found["save"][0] == "PASS" and found["save"][1].startswith("not supported")
    assert result.stdout.splitlines()[-1].startswith("broken: FAILED: ")


def test_timeout_and_non_idempotent_deploy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    remotes = home / "remotes"
    script(remotes / "im/forgetful.d/probe", """
        #!/bin/sh
        echo PUBLIC_CLOUD=YES HYPERVISOR=forgetful TOTALCPU=100 TOTALMEMORY=1048576
        """)
    # Ignores the token: every deploy creates another resource.
    script(remotes / "vmm/forgetful/deploy", """
        #!/bin/sh
        [ -r "$1" ] || { echo "no deployment file $1" >&2; exit 1; }
        id="fg-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
        mkdir -p "$CLOUDBURST_HOME/var/fg" && touch "$CLOUDBURST_HOME/var/fg/$id"
        echo "$id"
        """)
    script(remotes / "vmm/forgetful/poll", """
        #!/bin/sh
        if [ -e "$CLOUDBURST_HOME/var/fg/$1" ]; then echo STATE=a; else echo STATE=d; fi
        """)
    script(remotes / "vmm/forgetful/cancel", '#!/bin/sh\nrm -f "$CLOUDBURST_HOME/var/fg/$1"\n')
    script(remotes / "vmm/forgetful/reboot", "#!/bin/sh\nsleep 30\n")
    result = driver_test(home, "forgetful", "--timeout", "1")
    assert result.returncode == 1, result.stdout
    found = verdicts(result.stdout)
    assert found["deploy"][0] == "PASS"
    assert found["deploy.idempotent"][0] == "WARN"
    assert "created a second resource fg-" in found["deploy.idempotent"][1]
    assert found["reboot"] == ("FAIL", "did not finish within 1 s (its process group was "
                                       "killed)")
    assert found["shutdown"][0] == "WARN" and "not supported" in found["shutdown"][1]
    assert found["poll.gone"][0] == "PASS"
    assert found["errors"] == ("PASS", "a failing deploy reports: deploy: no deployment file "
                               f"{found['errors'][1].split()[-1]}")
    assert list((home / "var/fg").iterdir()) == []  # both resources were cancelled
