"""``cloudburst``: tools for operators and driver authors.

``cloudburst driver test PROVIDER`` checks a script provider against the
driver contract without a daemon: it runs the probes in
``remotes/im/PROVIDER.d/`` and the action scripts in ``remotes/vmm/PROVIDER/``
(under ``$CLOUDBURST_HOME``, or ``--remotes DIR``) exactly as the daemon
would, prints one ``PASS``/``FAIL``/``WARN`` line per contract point with the
reason, and exits 0 only when nothing failed (see
:mod:`cloudburst.drivers.contract`). It deploys real resources at the
provider and cancels them at the end.

``cloudburst backup FILE`` writes a consistent copy of the store while the
daemon runs; ``cloudburst restore FILE`` puts one back (daemon stopped). See
:mod:`cloudburst.store.backup` and docs/recovery.md.

``cloudburst purge-done`` deletes VMs terminated long ago from the store, as
``onedb purge-done`` does (:mod:`cloudburst.cli.purge_done`).

``cloudburst ec2-prices`` rewrites the EC2 information driver's price table
from the AWS Price List API (:mod:`cloudburst.drivers.ec2.price_list`); when
the API cannot be asked the table in place stays, and one line says why.

``cloudburst guest build [DIR]`` builds the tiny kernel + busybox guest a
local kvm host can boot (:mod:`cloudburst.guest`) in ``DIR`` (default
``$CLOUDBURST_HOME/guest``) and prints the two paths.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from cloudburst.cli import purge_done
from cloudburst.config import oned
from cloudburst.config.settings import Settings, home_from_environment
from cloudburst.drivers.contract import Check, ContractSettings, ContractTest, summary
from cloudburst.errors import CloudburstError, TemplateError
from cloudburst.guest import GuestBuildError, build_guest
from cloudburst.store import backup as store_backup
from cloudburst.template import Template, parse_any


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudburst",
                                     description="cloudburst tools for operators and driver "
                                                 "authors.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    driver = commands.add_parser("driver", help="work with drivers",
                                 description="Work with drivers.")
    driver_commands = driver.add_subparsers(title="commands", metavar="COMMAND")
    test = driver_commands.add_parser(
        "test", help="check a script provider against the driver contract",
        description="Run a script provider's probes and action scripts as the daemon would "
                    "(no daemon needed) and report, one line per contract point, PASS, FAIL "
                    "or WARN with the reason. Resources it deploys are cancelled at the end. "
                    "Exit status 0 when nothing FAILed, 1 otherwise.")
    test.set_defaults(handler=_test)
    test.add_argument("provider", metavar="PROVIDER",
                      help="the provider: remotes/vmm/PROVIDER/ and remotes/im/PROVIDER.d/")
    test.add_argument("--remotes", type=Path, metavar="DIR",
                      help="the remotes tree (default: $CLOUDBURST_HOME/remotes)")
    test.add_argument("--probes", metavar="NAME", default="",
                      help="the probe set, if not named like the provider (remotes/im/NAME.d)")
    test.add_argument("--timeout", type=_positive, default=30.0, metavar="SECONDS",
                      help="time limit of each action, like the -w of a driver (default 30)")
    test.add_argument("--template", type=Path, metavar="FILE",
                      help="VM template to deploy (default: CPU=1, MEMORY=128, "
                           "PUBLIC_CLOUD=[TYPE=PROVIDER])")
    test.add_argument("--host", default="driver-test", help="host name given to the scripts")
    test.add_argument("--host-id", type=int, default=0, help="host id given to the probes")
    test.add_argument("--vm-id", type=int, default=99999, help="VM id given to the scripts")
    backup = commands.add_parser(
        "backup", help="write a consistent copy of the store (the daemon may run)",
        description="Write a consistent copy of the store of $CLOUDBURST_HOME to FILE (mode "
                    "0600), while the daemon keeps running: SQLite's online backup, or pg_dump "
                    "for PostgreSQL.")
    backup.add_argument("file", type=Path, metavar="FILE")
    backup.set_defaults(handler=_backup)
    restore = commands.add_parser(
        "restore", help="replace the store by a backup (stop the daemon first)",
        description="Replace the store of $CLOUDBURST_HOME by the backup FILE and record it as "
                    "this home's store. Stop oned first. See docs/recovery.md.")
    restore.add_argument("file", type=Path, metavar="FILE")
    restore.set_defaults(handler=_restore)
    purge_done.add_parser(commands, _settings)

    prices = commands.add_parser(
        "ec2-prices", help="refresh the EC2 price table from the AWS Price List API",
        description="Fetch the on-demand Linux prices of the site's region from the AWS Price "
                    "List API (pricing GetProducts; IAM permission pricing:GetProducts) and "
                    "write them, dated and sourced, to the price table the EC2 information "
                    "driver reads (PRICES_FILE of im_ec2.conf, default im_ec2/ec2_prices.conf; "
                    "mode 0600). When the API cannot be asked nothing is written: the table in "
                    "place (or the shipped one) stays. Exit status 0 when written, 1 if not.")
    prices.set_defaults(handler=_ec2_prices)
    prices.add_argument("--rc", default="vmm_ec2/vmm_ec2rc", metavar="FILE",
                        help="the rc file with the site's credentials and region, relative to "
                             "$CLOUDBURST_HOME/etc (default vmm_ec2/vmm_ec2rc; without it the "
                             "AWS credential chain)")
    prices.add_argument("--region", help="the region to price (default: the rc file's "
                                         "AWS_DEFAULT_REGION, else us-east-1)")
    prices.add_argument("--im-conf", default="im_ec2/im_ec2.conf", metavar="FILE",
                        help="the information driver's file naming PRICES_FILE "
                             "(default im_ec2/im_ec2.conf)")
    prices.add_argument("--output", type=Path, metavar="FILE",
                        help="write here instead of the file PRICES_FILE names")
    prices.add_argument("--endpoint-url", metavar="URL",
                        help="the Price List API endpoint (default "
                             "https://api.pricing.us-east-1.amazonaws.com)")

    guest = commands.add_parser("guest", help="the tiny guest a local kvm host can boot",
                                description="The tiny guest a local kvm host can boot.")
    guest_commands = guest.add_subparsers(title="commands", metavar="COMMAND")
    build = guest_commands.add_parser(
        "build", help="build it from Debian packages",
        description="Build a Debian kernel and a busybox initramfs (vmlinuz, initrd.gz) that "
                    "boot under QEMU with KERNEL_CMD=\"console=ttyS0\" and power off on ACPI. "
                    "Needs busybox-static and cpio (./scripts/run installs them).")
    build.set_defaults(handler=_guest_build)
    build.add_argument("directory", nargs="?", type=Path, metavar="DIR",
                       help="where to build it (default: $CLOUDBURST_HOME/guest)")

    return parser


def _settings() -> Settings:
    """The settings of ``$CLOUDBURST_HOME`` (its ``etc/oned.conf``, else the defaults)."""
    home = home_from_environment()
    conf = home / "etc" / "oned.conf"
    return oned.load(conf, home)[0] if conf.exists() else Settings(home=home)


def _store_url() -> tuple[Path, str]:
    settings = _settings()
    return settings.home, settings.database_url


def _backup(args: argparse.Namespace) -> int:
    try:
        _, url = _store_url()
        ids = store_backup.backup(url, args.file.expanduser().resolve())
    except CloudburstError as exc:
        print(f"cloudburst backup: {exc}", file=sys.stderr)
        return 1
    print(f"Backed up store {ids.store_id} (installation {ids.installation_id}) to {args.file}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    try:
        home, url = _store_url()
        ids = store_backup.restore(url, args.file.expanduser().resolve(), home)
    except CloudburstError as exc:
        print(f"cloudburst restore: {exc}", file=sys.stderr)
        return 1
    print(f"Restored store {ids.store_id} (installation {ids.installation_id}) from "
          f"{args.file}; start oned again")
    return 0


def _ec2_prices(args: argparse.Namespace) -> int:
    from cloudburst.drivers.ec2 import price_list  # boto3 only for this command

    etc = home_from_environment() / "etc"
    output = args.output.expanduser().resolve() if args.output else None
    try:
        fetched, target = price_list.refresh_site(
            etc, rc=args.rc, im_conf=args.im_conf, region=args.region,
            endpoint_url=args.endpoint_url, output=output)
    except (CloudburstError, OSError) as exc:
        print(f"cloudburst ec2-prices: {exc}; the price table in place is unchanged (the "
              "shipped one when there is none)", file=sys.stderr)
        return 1
    print(f"Wrote {len(fetched.prices)} on-demand prices of {fetched.region} to {target} "
          f"(AWS Price List API at {fetched.endpoint})")
    return 0


def _guest_build(args: argparse.Namespace) -> int:
    directory = (args.directory or home_from_environment() / "guest").expanduser().resolve()
    try:
        guest = build_guest(directory)
    except (GuestBuildError, OSError) as exc:
        print(f"cloudburst: cannot build the guest: {exc}", file=sys.stderr)
        return 1
    print(f"kernel: {guest.kernel} (from {guest.source})\ninitrd: {guest.initrd}")
    return 0


def _print(check: Check) -> None:
    print(check.line(), flush=True)


def _test(args: argparse.Namespace) -> int:
    home = home_from_environment()
    remotes = (args.remotes or home / "remotes").expanduser().resolve()
    template: Template | None = None
    if args.template is not None:
        try:
            template = parse_any(args.template.read_text(encoding="utf-8"))
        except OSError as exc:
            print(f"cloudburst: cannot read {args.template}: {exc.strerror}", file=sys.stderr)
            return 2
        except TemplateError as exc:
            print(f"cloudburst: {args.template}: {exc}", file=sys.stderr)
            return 2
    if not (remotes / "vmm" / args.provider).is_dir():
        print(f"cloudburst: no provider {args.provider!r}: {remotes / 'vmm' / args.provider} "
              "is not a directory", file=sys.stderr)
        return 2
    settings = ContractSettings(
        provider=args.provider, remotes_dir=remotes, home=home, probe_set=args.probes,
        timeout=args.timeout, host=args.host, host_id=args.host_id, vm_id=args.vm_id,
        template=template)
    print(f"Testing provider {args.provider} in {remotes} (CLOUDBURST_HOME={home}, "
          f"{args.timeout:g} s per action)", flush=True)
    test = ContractTest(settings, report=_print)
    checks = asyncio.run(test.run())
    print(summary(args.provider, checks))
    return 1 if test.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
