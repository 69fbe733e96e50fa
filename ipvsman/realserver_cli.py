"""`ipvsman vips`: on a real server, hold exactly the VIPs keepalived.conf has it serve, on a dummy interface."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from typing import NoReturn, Protocol, TextIO

from ipvsman.cli import number_type
from ipvsman.realserver import (
    InterfaceState,
    PlanInputError,
    Step,
    VipPlan,
    build_plan,
    check_interface_name,
    host_real_ips,
    normal_address,
    plan_to_dict,
    plan_to_lines,
)
from ipvsman.topology import ConfigError, Configuration

PROG = "ipvsman vips"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_INTERFACE = "dummy0"
DEFAULT_WATCH_INTERVAL = 2.0

EXIT_CODES_HELP = f"""\
exit status:
  {EXIT_OK}  done, or nothing to change (and always with --dry-run when the input is good)
  {EXIT_FAILED}  a change failed; the changes made before it are listed
  {EXIT_BAD_INPUT}  bad input: options, keepalived.conf errors (file:line), a non-dummy --interface"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on the command's stderr, not usage text."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _address(text: str) -> str:
    try:
        return normal_address(text)
    except PlanInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _interface(text: str) -> str:
    try:
        return check_interface_name(text)
    except PlanInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from ipvsman.keepalived import DEFAULT_PATH

    parser = _Parser(
        prog=PROG,
        description=textwrap.fill(
            "For a real server behind IPVS direct routing or tunnelling: read the directors' "
            "keepalived.conf, find the virtual_servers that list this host as a real_server, and hold "
            "exactly their VIPs (/32, /128) on a dummy interface, with the ARP sysctls that keep the "
            "host from answering ARP for them (arp_ignore=1, arp_announce=2 on the interface and 'all'). "
            "VIPs it no longer serves are removed from that interface, and only from it.",
            width=90,
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("what to serve")
    source.add_argument(
        "--keepalived", metavar="FILE", default=DEFAULT_PATH, help=f"the directors' keepalived.conf (default {DEFAULT_PATH})"
    )
    source.add_argument(
        "--config-id",
        metavar="ID",
        help="read '@ID' lines as keepalived -i ID would on a director (default: this host's name)",
    )
    source.add_argument(
        "--real-ip",
        metavar="ADDR",
        nargs="+",
        action="extend",
        type=_address,
        default=[],
        help="this host's real server addresses (default: every local address a real_server entry names)",
    )
    source.add_argument(
        "--vip",
        metavar="ADDR",
        nargs="+",
        action="extend",
        type=_address,
        default=[],
        help="hold this VIP too: the VIPs of firewall-mark services, which keepalived.conf does not name",
    )
    where = parser.add_argument_group("where")
    where.add_argument(
        "--interface",
        metavar="IF",
        type=_interface,
        default=DEFAULT_INTERFACE,
        help=f"the dummy interface holding the VIPs, created when missing (default {DEFAULT_INTERFACE}); "
        "any other kind of interface is refused",
    )
    where.add_argument("--netns", metavar="NAME", help="act inside the named network namespace")
    how = parser.add_argument_group("how")
    how.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    how.add_argument("--json", action="store_true", help="print the plan and its outcome as JSON (one line per run)")
    how.add_argument(
        "--watch",
        action="store_true",
        help="keep running and apply again whenever keepalived.conf or a file it includes changes",
    )
    how.add_argument(
        "--interval",
        type=number_type("interval", 0, above=True),
        default=None,
        metavar="SECONDS",
        help=f"with --watch: how often to look at the files (default {DEFAULT_WATCH_INTERVAL:g})",
    )
    return parser


class Host(Protocol):
    """What `ipvsman vips` reads and changes: ipvsman.kernel.dummyvips.DummyVipHost, or a test's."""

    def host_addresses(self) -> list[tuple[str, str]]: ...

    def read_interface(self, name: str) -> InterfaceState: ...

    def apply(self, interface: str, steps: Iterable[Step]): ...


def kernel_host(netns: str | None) -> Host:
    from ipvsman.kernel.dummyvips import DummyVipHost

    return DummyVipHost(netns)


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    make_host: Callable[[str | None], Host] = kernel_host,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        options = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(exc, file=stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if options.interval is not None and not options.watch:
        print(f"{PROG}: --interval goes with --watch", file=stderr)
        return EXIT_BAD_INPUT
    host = make_host(options.netns)
    if not options.watch:
        return run_once(options, host, stdout, stderr)[0]
    try:
        return watch(options, host, stdout, stderr, sleep)
    except KeyboardInterrupt:
        return EXIT_OK


def run_once(options: argparse.Namespace, host: Host, stdout: TextIO, stderr: TextIO) -> tuple[int, tuple[str, ...]]:
    """Read keepalived.conf and the host, print the plan, apply it unless --dry-run.

    Returns the exit status and the files keepalived.conf was read from (for --watch).
    """
    config = read_config(options.keepalived, options.config_id)
    if config.errors:
        # A file understood only in part could drop VIPs still served: act on none of it.
        for error in config.errors:
            print(f"{PROG}: {config_error_line(error)}", file=stderr)
        return EXIT_BAD_INPUT, config.files
    from ipvsman.kernel.dummyvips import DummyVipError

    try:
        interface = host.read_interface(options.interface)
        addresses = host.host_addresses()
        real_ips = options.real_ip or host_real_ips(config, addresses, options.interface)
        plan = build_plan(config, interface, real_ips, options.vip, addresses)
    except DummyVipError as exc:
        print(f"{PROG}: {exc}", file=stderr)
        return (EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED), config.files
    except PlanInputError as exc:
        print(f"{PROG}: {exc}", file=stderr)
        return EXIT_BAD_INPUT, config.files
    result = None
    if plan.changes and not options.dry_run:
        result = host.apply(plan.interface, plan.steps)
    if options.json:
        print(json.dumps(outcome_dict(options, plan, result), separators=(",", ":")), file=stdout)
    else:
        for line in outcome_lines(options, plan, result):
            print(line, file=stdout)
    if result is not None and result.failed is not None:
        print(f"{PROG}: {failure_line(plan, result)}", file=stderr)
        return EXIT_FAILED, config.files
    return EXIT_OK, config.files


def read_config(path: str, config_id: str | None) -> Configuration:
    from ipvsman.keepalived import read_keepalived
    from ipvsman.output import describe_exception

    try:
        return read_keepalived(path, config_id)
    except Exception as exc:  # the parser reports bad input as errors; this is for the unexpected
        return Configuration("keepalived", path, errors=(ConfigError(path, 0, f"cannot read: {describe_exception(exc)}"),))


def config_error_line(error: ConfigError) -> str:
    from ipvsman.output import config_error_line as dashboard_line

    return dashboard_line(error)


def where(options: argparse.Namespace) -> str:
    return f"{options.interface}" + (f" in netns {options.netns}" if options.netns else "")


def outcome_lines(options: argparse.Namespace, plan: VipPlan, result) -> list[str]:
    lines = [f"{PROG}: {where(options)}, from {options.keepalived}"]
    lines.extend(plan_to_lines(plan))
    steps = plan.steps
    if not steps:
        lines.append(f"nothing to change: {plan.interface} already holds exactly the VIPs this host serves")
    elif result is None:
        lines.append(f"dry run: nothing changed; {len(steps)} change{'s' * (len(steps) != 1)} planned:")
        lines.extend(f"  would {step}" for step in steps)
    else:
        lines.extend(f"  done    {step}" for step in result.done)
        if result.failed is None:
            lines.append(f"done: {len(result.done)} change{'s' * (len(result.done) != 1)}")
        else:
            lines.append(f"failed after {len(result.done)} of {len(steps)} changes (see stderr)")
    return lines


def failure_line(plan: VipPlan, result) -> str:
    line = f"{result.failed}: {result.reason}"
    if result.brought_down:
        line += f"; {plan.interface} brought down so that no VIP is answered for by ARP without the sysctls"
    return line


def outcome_dict(options: argparse.Namespace, plan: VipPlan, result) -> dict:
    document = {"keepalived": options.keepalived, "netns": options.netns, "dry_run": options.dry_run}
    document.update(plan_to_dict(plan))
    document["done"] = [str(step) for step in result.done] if result is not None else []
    document["failed"] = None if result is None or result.failed is None else failure_line(plan, result)
    document["changed"] = bool(document["done"])
    return document


# -- --watch ----------------------------------------------------------------------------------


def fingerprint(paths: Iterable[str]) -> tuple:
    """What changes when a file is rewritten, replaced (rsync renames over it) or appears."""
    marks = []
    for path in paths:
        try:
            status = os.stat(path)
            marks.append((path, status.st_ino, status.st_size, status.st_mtime_ns))
        except OSError:
            marks.append((path, None))
    return tuple(marks)


def watched_paths(main_path: str, files: Iterable[str]) -> tuple[str, ...]:
    """The files read and their directories: a new file matching an include glob changes its directory."""
    paths = dict.fromkeys([main_path, *files])
    for path in list(paths):
        paths.setdefault(os.path.dirname(os.path.abspath(path)), None)
    return tuple(paths)


def watch(
    options: argparse.Namespace,
    host: Host,
    stdout: TextIO,
    stderr: TextIO,
    sleep: Callable[[float], None] = time.sleep,
    runs: int | None = None,
) -> int:
    """Apply now and again after every change of the files; `runs` ends it after that many (tests)."""
    interval = options.interval or DEFAULT_WATCH_INTERVAL
    paths = watched_paths(options.keepalived, ())
    seen = None
    status = EXIT_OK
    count = 0
    while runs is None or count < runs:
        current = fingerprint(paths)
        if current != seen:
            if seen is not None and not options.json:
                print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {options.keepalived} changed: applying again", file=stdout)
            status, files = run_once(options, host, stdout, stderr)
            stdout.flush()
            new_paths = watched_paths(options.keepalived, files)
            seen = current if new_paths == paths else fingerprint(new_paths)
            paths = new_paths
            count += 1
        sleep(interval)
    return status
