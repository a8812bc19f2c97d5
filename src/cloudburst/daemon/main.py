"""``oned``: start the cloudburst daemon.

Everything lives under ``CLOUDBURST_HOME`` (default ``~/.cloudburst``), as
OpenNebula's self-contained ``ONE_LOCATION`` mode: ``etc/oned.conf`` is written
from the commented default at first start and read on every start; ``remotes/``
is seeded from the shipped driver scripts; the database, logs and per-VM files
sit beside them.

``oned -f`` runs in the foreground and logs to stderr; plain ``oned`` starts
the same in the background, logging to ``log/oned.log``, and returns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import gc
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cloudburst.config import oned
from cloudburst.config.settings import Settings, home_from_environment
from cloudburst.daemon.log_limits import RepeatFilter
from cloudburst.errors import CloudburstError

log = logging.getLogger("cloudburst")

SHARE_DIR = Path(__file__).resolve().parent.parent / "share"
#: The home's mode: nobody else lists it or opens what the daemon writes in it (0600
#: files, 0700 directories), but others may traverse it, so a hypervisor running as
#: another user (libvirt's ``libvirt-qemu``) can boot the guest ``cloudburst guest build``
#: leaves readable in ``guest/``.
HOME_MODE = 0o711


def bootstrap_layout(home: Path) -> list[str]:
    """Create ``home``'s layout on first start; returns what was created."""
    created: list[str] = []
    if not home.exists():
        # The home holds credentials files and the store: only its owner lists or reads
        # it; others may pass through (HOME_MODE) to a guest built in it for the hypervisor.
        home.mkdir(mode=HOME_MODE, parents=True)
        home.chmod(HOME_MODE)
        created.append(str(home))
    etc = home / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for source in sorted((SHARE_DIR / "etc").rglob("*")):
        target = etc / source.relative_to(SHARE_DIR / "etc")
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            shutil.copy2(source, target)
            if target.name.endswith("rc"):
                target.chmod(0o600)
            created.append(str(target))
    remotes = home / "remotes"
    if not remotes.exists():
        shutil.copytree(SHARE_DIR / "remotes", remotes)
        created.append(str(remotes))
    return created


def configure_logging(settings: Settings, foreground: bool) -> None:
    handler: logging.Handler
    if foreground:
        handler = logging.StreamHandler(sys.stderr)
    else:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(settings.log_dir / "oned.log")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [%(levelname)s] %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def serve(settings: Settings) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    from cloudburst.daemon.app import Daemon

    daemon = Daemon(settings)
    if daemon.admin_created:
        log.info("created user oneadmin; its session is in %s", settings.auth_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await daemon.start()
    log.info("cloudburst oned listening on http://%s:%d/RPC2 (home %s)",
             settings.listen_address, settings.port, settings.home)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await daemon.stop()


def make_private(home: Path) -> None:
    """Keep what the daemon writes private to its user, whatever the umask it was given.

    New files get at most 0600 and directories 0700; the home (HOME_MODE), the store and
    the logs an older version left more open are tightened too.
    """
    os.umask(0o077)
    with contextlib.suppress(OSError):
        home.chmod(HOME_MODE)
    for path in [*home.glob("one.db*"), *home.glob("log/*"), home / "one_auth"]:
        with contextlib.suppress(OSError):
            path.chmod(0o700 if path.is_dir() else 0o600)


#: The collector's generation thresholds for a daemon process (Python's are 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)
#: Seconds a thread may hold the interpreter while another waits for it (Python's: 0.005).
SWITCH_INTERVAL = 0.001


def tune_interpreter() -> None:
    """Set the collector's thresholds and the threads' switch interval for a daemon.

    **Collector:** young objects are collected every 50,000 allocations rather than
    every 700. The daemon keeps every VM's rows, records and rendered documents
    alive, and a burst allocates millions of short-lived objects: with Python's
    thresholds the collector ran tens of thousands of times in a 100,000-VM burst,
    each older generation's pass walking the large live heap (a third of the burst's
    CPU, full passes of over a second that held the loop). Measured with bench_core
    (5,000 hosts, 20,000 VMs): 15.7-16.2 CPU s with the defaults, 9.3-10.2 with these.
    Cycles still get collected; they just wait a little longer.

    **Switch interval:** the store's threads and the VM file threads make a system
    call per row or per file, giving up the interpreter at each, and get it back
    only when the event loop's thread is made to let go: with Python's 5 ms, a
    thread making a dozen calls per VM behind a busy thread wrote 21 VMs' files a
    second, 111 at 1 ms (a micro-benchmark on a slow disk). The loop pays a little
    more switching. bench_scale, 100,000 VMs on SQLite with the home on tmpfs (load
    1.5-2): all RUNNING after 57.3 s at 1 ms, 60.5 s at 5 ms. With the home on an ext4
    whose file creation cost swung tenfold between runs, three runs (80.5 and 130.6 s
    at 1 ms, 126.3 s at 5 ms) could not tell the two apart.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)


def raise_file_limit() -> None:
    """Lift the soft open-file limit to the hard one (connections and the store share it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)


def _check_port_free(settings: Settings) -> None:
    """Fail before touching the store when another process has the API port.

    A second ``oned -f`` beside a running daemon must not recover, schedule
    or monitor anything: it stops here.

    Raises:
        OSError: the port cannot be bound (``EADDRINUSE`` when taken).
    """
    if settings.port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in settings.listen_address
                       else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((settings.listen_address, settings.port))


def load_settings(home: Path) -> tuple[Settings, list[str]]:
    """Bootstrap ``home`` and read its ``etc/oned.conf``."""
    bootstrap_layout(home)
    return oned.load(home / "etc" / "oned.conf", home)


def _start_background(home: Path, settings: Settings) -> int:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    pid_file = settings.var_dir / "oned.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pid_file.read_text().strip()), 0)
            print(f"oned is already running (pid {pid_file.read_text().strip()})")
            return 0
    log_path = settings.log_dir / "oned.log"
    with open(log_path, "a") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudburst.daemon.main", "-f", "--log-file",
             *(["--new-store"] if settings.new_store else [])],
            stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True,
            env={**os.environ, "CLOUDBURST_HOME": str(home)},
        )
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{process.pid}\n")
    time.sleep(1.0)
    if process.poll() is not None:
        print(f"oned failed to start; see {log_path}", file=sys.stderr)
        return 1
    print(f"oned started (pid {process.pid}); API http://{settings.listen_address}:"
          f"{settings.port}/RPC2; log {log_path}; session in {settings.auth_file}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="oned", description="Start the cloudburst daemon (OpenNebula-compatible oned).")
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="run in the foreground, logging to stderr")
    parser.add_argument("--new-store", action="store_true",
                        help="start a new, empty store although this home used another one "
                             "(keeps the installation id; see docs/recovery.md)")
    parser.add_argument("--log-file", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    home = home_from_environment()
    make_private(home)
    try:
        settings, warnings = load_settings(home)
    except CloudburstError as exc:
        print(f"oned: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"oned: {_start_failure(exc, Settings(home=home))}", file=sys.stderr)
        return 1
    if args.new_store:
        settings = dataclasses.replace(settings, new_store=True)
    if not args.foreground:
        return _start_background(home, settings)
    try:
        _check_port_free(settings)
    except OSError as exc:
        print(f"oned: {_start_failure(exc, settings)}", file=sys.stderr)
        return 1
    configure_logging(settings, foreground=not args.log_file)
    for warning in warnings:
        log.warning("%s", warning)
    raise_file_limit()
    tune_interpreter()
    try:
        asyncio.run(serve(settings))
    except CloudburstError as exc:
        log.error("%s", exc)
        print(f"oned: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # One line on stderr (in the background, stderr is the log file).
        print(f"oned: {_start_failure(exc, settings)}", file=sys.stderr)
        return 1
    return 0


def _start_failure(exc: OSError, settings: Settings) -> str:
    """The one line saying why the daemon could not start."""
    if exc.filename is not None:
        return (f"cannot write {exc.filename}: {exc.strerror} (CLOUDBURST_HOME must be "
                "writable by the daemon's user)")
    if exc.errno == errno.EADDRINUSE:
        return (f"already running on {settings.listen_address}:{settings.port} (that port is "
                "taken; stop the other daemon, or set CLOUDBURST_PORT to use another port)")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {settings.listen_address}:{settings.port}: permission "
                "denied (use a port above 1023)")
    return f"cannot start: {exc.strerror or exc}"


if __name__ == "__main__":
    sys.exit(main())
