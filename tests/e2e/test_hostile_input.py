"""No client input gives ``Internal error`` (issue 15, findings 4, 5 and 7).

Out-of-range numbers, oversized names and values at every entry point, and a
seeded fuzz campaign over the XML-RPC surface (method names, argument types,
template text, XML framing) with a fixed budget. Every reply must be a clean
refusal or a success; the daemon must keep serving and log no traceback.
"""

from __future__ import annotations

import http.client
import os
import random
import xmlrpc.client
from collections.abc import Callable, Iterator

import pyone
import pytest
from daemon_fixture import RunningDaemon, start_daemon

from cloudburst.template.limits import (
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTE_VALUE,
    MAX_NAME,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Requests the fuzz campaign sends; the seed may be changed with CLOUDBURST_FUZZ_SEED.
FUZZ_BUDGET = 600
FUZZ_SEED = int(os.environ.get("CLOUDBURST_FUZZ_SEED", "15"))

VM = "CPU = 0.1\nMEMORY = 16\n"


def _named() -> str:
    """A template NAME line no other template of the test has (names are unique)."""
    return f'NAME = "t-{random.random()}"\n'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    # Refused logins are answered at once: the fuzz sends ~100 wrong passwords, and the
    # delay that slows a guesser (tested in test_password_guessing.py) would cost 1 s each.
    with start_daemon(tmp_path_factory.mktemp("input"),
                      oned_conf_extra="FAILED_LOGIN_DELAY = 0\n") as running:
        yield running


@pytest.fixture(scope="module")
def one(daemon: RunningDaemon) -> pyone.OneServer:
    return pyone.OneServer(daemon.url, session=daemon.session, timeout=30)


def _post(daemon: RunningDaemon, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        connection.request("POST", "/RPC2", body, {"Content-Type": "text/xml"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _call(daemon: RunningDaemon, method: str, *params: object) -> list[object]:
    """oned's reply array for ``method`` called with the session and ``params``."""
    body = xmlrpc.client.dumps((daemon.session, *params), method, allow_none=True)
    status, reply = _post(daemon, body.encode("utf-8"))
    assert status == 200
    return list(xmlrpc.client.loads(reply)[0][0])


def _refused(reply: list[object], *words: str) -> str:
    assert reply[0] is False, reply
    message = str(reply[1])
    assert "Internal error" not in message
    for word in words:
        assert word in message, message
    return message


# -- numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1e30", "1e308", str(2**63), "1e400", "-1", "nan", "inf",
                                   "0x10", "9" * 400])
@pytest.mark.parametrize("attribute", ["CPU", "MEMORY"])
def test_out_of_range_numbers_get_a_validation_message(daemon: RunningDaemon, attribute: str,
                                                       value: str) -> None:
    template = VM.replace(f"{attribute} = ", f"{attribute} = {value} #")
    _refused(_call(daemon, "one.vm.allocate", template, False), attribute)


# -- sizes and names ----------------------------------------------------------------------

def _entry_points(daemon: RunningDaemon) -> dict[str, Callable[[str], list[object]]]:
    """Every call that stores client template text, as a function of that text."""
    vm_id = _call(daemon, "one.vm.allocate", VM, True)[1]
    host_id = _call(daemon, "one.host.allocate", f"limits-{random.random()}", "dummy",
                    "dummy", -1)[1]
    template_id = _call(daemon, "one.template.allocate", _named() + VM)[1]
    return {
        "vm.allocate": lambda text: _call(daemon, "one.vm.allocate", VM + text, True),
        "vm.update": lambda text: _call(daemon, "one.vm.update", vm_id, text, 1),
        "host.update": lambda text: _call(daemon, "one.host.update", host_id, text, 1),
        "template.allocate": lambda text: _call(daemon, "one.template.allocate",
                                                _named() + VM + text),
        "template.update": lambda text: _call(daemon, "one.template.update", template_id,
                                              text, 1),
        "template.instantiate": lambda text: _call(
            daemon, "one.template.instantiate", template_id, "", True, text, False),
    }


def test_oversized_templates_are_refused_at_every_entry_point(daemon: RunningDaemon) -> None:
    long_name = "A" * (MAX_ATTRIBUTE_NAME + 1)
    cases = {
        f"{long_name} = 1\n": "MAX_ATTRIBUTE_NAME",
        f"B = [ {long_name} = 1 ]\n": "MAX_ATTRIBUTE_NAME",
        f"C = \"{'x' * (MAX_ATTRIBUTE_VALUE + 1)}\"\n": "MAX_ATTRIBUTE_VALUE",
        "".join(f'D{n} = "{"y" * 200_000}"\n' for n in range(6)): "MAX_TEMPLATE_BYTES",
        f"{'E' * (1024 * 1024)} = 1\n": "MAX_TEMPLATE_BYTES",
        "".join(f"F{n} = 1\n" for n in range(5000)): "MAX_ATTRIBUTES",
    }
    for entry, call in _entry_points(daemon).items():
        for text, limit in cases.items():
            message = _refused(call(text), limit)
            assert len(message) < 400, (entry, message[:400])


def test_merged_updates_cannot_grow_past_the_limits(daemon: RunningDaemon) -> None:
    vm_id = _call(daemon, "one.vm.allocate", VM, True)[1]
    value = "z" * (MAX_ATTRIBUTE_VALUE - 10)
    for n in range(4):
        assert _call(daemon, "one.vm.update", vm_id, f'G{n} = "{value}"', 1)[0] is True
    _refused(_call(daemon, "one.vm.update", vm_id, f'G9 = "{value}"', 1), "MAX_TEMPLATE_BYTES")


@pytest.mark.parametrize("name", ["a\nb", "web\r\n  1  web RUNNING", "x" * (MAX_NAME + 1),
                                  "tab\there", "line\u2028separator", "   "])
def test_bad_names_are_refused_everywhere(daemon: RunningDaemon, name: str) -> None:
    vm_id = _call(daemon, "one.vm.allocate", VM, True)[1]
    host_id = _call(daemon, "one.host.allocate", f"names-{random.random()}", "dummy",
                    "dummy", -1)[1]
    template_id = _call(daemon, "one.template.allocate", _named() + VM)[1]
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    replies = [
        _call(daemon, "one.vm.rename", vm_id, name),
        _call(daemon, "one.host.allocate", name, "dummy", "dummy", -1),
        _call(daemon, "one.host.rename", host_id, name),
        _call(daemon, "one.template.rename", template_id, name),
    ]
    if name.strip():  # a blank NAME in a template or instantiate means "the default name"
        replies += [
            _call(daemon, "one.vm.allocate", f'{VM}NAME = "{quoted}"\n', True),
            _call(daemon, "one.template.allocate", f'{VM}NAME = "{quoted}"\n'),
            _call(daemon, "one.template.instantiate", template_id, name, True, "", False),
        ]
    for reply in replies:
        _refused(reply, "name")


def test_listings_stay_readable_by_pyone(one: pyone.OneServer) -> None:
    assert one.vmpool.info(-2, -1, -1, -1) is not None
    assert one.hostpool.info() is not None
    assert one.templatepool.info(-2, -1, -1) is not None


# -- fuzz ---------------------------------------------------------------------------------

_METHODS = [
    "one.system.version", "one.system.config", "one.user.info", "one.userpool.info",
    "one.host.allocate", "one.host.info", "one.hostpool.info", "one.host.delete",
    "one.host.status", "one.host.update", "one.host.rename", "one.vm.allocate", "one.vm.info",
    "one.vm.deploy", "one.vm.action", "one.vm.update", "one.vm.rename", "one.vmpool.info",
    "one.vmpool.infoextended", "one.template.allocate", "one.template.info",
    "one.template.instantiate", "one.template.delete", "one.template.update",
    "one.template.rename", "one.templatepool.info",
]
_ACTIONS = ["terminate", "terminate-hard", "hold", "release", "stop", "suspend", "resume",
            "reboot", "poweroff", "undeploy", "resched", "boom", ""]
_FRAGMENTS = [
    "CPU = 1", "MEMORY = 64", "CPU = 1e308", "MEMORY = 1e30", f"MEMORY = {2**63}", "CPU = -0",
    'NAME = "fuzz"', "NAME = \"a\nb\"", "REQUIREMENTS = \"CPU > \"", "RANK = \"FREE_CPU * (\"",
    "REQUIREMENTS = \"HOSTNAME = \\\"h*\\\"\"", "EC2 = [ AMI = ami-1, INSTANCETYPE = m1.small ]",
    "PUBLIC_CLOUD = [ TYPE = ec2 ]", "DISK = [ SIZE = 99999999999999999999 ]", "VCPU = 1e40",
    "CONTEXT = [ NETWORK = YES, SSH_PUBLIC_KEY = \"$USER[SSH_PUBLIC_KEY]\" ]",
    "X = [", "]", "= 1", "\"", "'", "#", "Y = \"\\", "1A = 2", "\u00e9t\u00e9 = 3",
    "Z = \"\U0001F600\"", "\x00", "\x1b[31m", "<TEMPLATE>", "</TEMPLATE>",
    "<TEMPLATE><CPU>1</CPU><MEMORY>1e999</MEMORY></TEMPLATE>", "<![CDATA[", "&amp;", "&bogus;",
    "SCHED_REQUIREMENTS = \"ID = 0\"", "SCHED_RANK = \"-RUNNING_VMS\"", "HOLD = YES",
    "MEMORY = [ A = 1 ]", "CPU = [ ]", "NIC = [ IP = 10.0.0.1 ]", "A" * 300 + " = 1",
]


def _fuzz_value(rng: random.Random) -> object:
    choice = rng.randrange(12)
    if choice == 0:
        return rng.choice([0, -1, 1, 2**31 - 1, -(2**31), rng.randrange(-10**6, 10**6)])
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0.5, -1e308, 1e308, float("inf"), float("nan")])
    if choice == 3:
        return rng.choice(_ACTIONS)
    if choice in (4, 5, 6):
        return "\n".join(rng.choice(_FRAGMENTS) for _ in range(rng.randrange(6)))
    if choice == 7:
        return [rng.randrange(5), "x", [True]]
    if choice == 8:
        return {"a": 1, "b": [1, 2]}
    if choice == 9:
        return xmlrpc.client.Binary(bytes(rng.randrange(256) for _ in range(rng.randrange(20))))
    if choice == 10:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(40)))
    return rng.randrange(-3, 30)


def _fuzz_call(rng: random.Random, session: str) -> bytes:
    method = rng.choice(_METHODS)
    if rng.random() < 0.05:
        method = rng.choice(["one.vm", "", "system.listMethods", "one.vm.info\x00",
                             "one." + "x" * 3000, "ONE.VM.INFO", "one.vm.info.x"])
    params: list[object] = [rng.choice([session, session, session, "", "oneadmin:wrong", 7])]
    params += [_fuzz_value(rng) for _ in range(rng.randrange(7))]
    body = xmlrpc.client.dumps(tuple(params), method, allow_none=True).encode("utf-8")
    return _mangle(rng, body) if rng.random() < 0.25 else body


def _mangle(rng: random.Random, body: bytes) -> bytes:
    """Break the XML framing of ``body`` one of several ways."""
    choice = rng.randrange(10)
    if choice == 0:
        return body[:rng.randrange(len(body))]
    if choice == 1:
        return body.replace(b"<int>", b"<i8>", 1).replace(b"</int>", b"</i8>", 1) \
            .replace(b"<i8>", b"<i8>9999999999999999999999", 1)
    if choice == 2:
        return body.replace(b"<string>", b"<double>", 1).replace(b"</string>", b"</double>", 1)
    if choice == 3:
        return body.replace(b"<params>", b"<params><param><value><dateTime.iso8601>never"
                                         b"</dateTime.iso8601></value></param>", 1)
    if choice == 4:
        nested = b"<value><array><data>" * 500 + b"</data></array></value>" * 500
        return body.replace(b"</params>", b"<param>" + nested + b"</param></params>", 1)
    if choice == 5:
        return body.replace(b"methodCall", b"methodResponse")
    if choice == 6:
        return b"\xff\xfe" + body
    if choice == 7:
        return body.replace(b"<value>", b"<value><nil/><struct><member><name>", 1)
    if choice == 8:
        return body.replace(b"<?xml version='1.0'?>",
                            b"<?xml version='1.0' encoding='latin-1'?>", 1)
    return body.replace(b"<base64>", b"<base64>!!!", 1) + b"<trailing/>"


def test_seeded_fuzz_of_the_xmlrpc_surface(daemon: RunningDaemon) -> None:
    rng = random.Random(FUZZ_SEED)
    _call(daemon, "one.host.allocate", "fuzz-host", "dummy", "dummy", -1)
    failures: list[str] = []
    for number in range(FUZZ_BUDGET):
        body = _fuzz_call(rng, daemon.session)
        status, reply = _post(daemon, body)
        assert daemon.process.poll() is None, f"the daemon died on request {number}"
        if status != 200:
            failures.append(f"#{number}: HTTP {status}: {body[:300]!r}")
            continue
        try:
            value = xmlrpc.client.loads(reply)[0][0]
            text = str(value[1]) if isinstance(value, list) and len(value) > 1 else ""
        except xmlrpc.client.Fault as fault:
            text = fault.faultString
        if "Internal error" in text:
            failures.append(f"#{number}: {text[:200]}: {body[:300]!r}")
    assert not failures, "\n".join(failures[:10])
    assert _call(daemon, "one.system.version")[0] is True
    output = daemon.output()
    assert "Traceback" not in output, output[output.index("Traceback") - 500:][:3000]
