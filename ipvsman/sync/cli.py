"""`ipvsman resync`: send the local connection table (or a sync test connection) to the backup directors."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import NoReturn, TextIO

from ipvsman.cli import number_type
from ipvsman.model import RawState
from ipvsman.sync.resync import VERIFY_SECONDS, ResyncPlan, build_plan, resolve_settings, run_sync_test
from ipvsman.sync.sender import (
    DEFAULT_RATE,
    SendProgress,
    SendReport,
    SyncConfigError,
    enter_netns,
    read_conn_table,
    read_sync_version,
)

PROG = "ipvsman resync"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr, not usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Send the local IPVS connection table to the backup directors in the kernel's own sync "
            "protocol, so that their sync daemons install what they are missing. Settings come "
            "from the running master sync daemon unless given here."
        ),
    )
    where = parser.add_argument_group("where to send (default: the master sync daemon's settings)")
    where.add_argument("--interface", metavar="IF", help="interface to send on (the master daemon's mcast interface)")
    where.add_argument(
        "--syncid", type=number_type("syncid", 0, 255, whole=True), metavar="N", help="sync id 0-255 (backups drop other ids)"
    )
    where.add_argument("--group", metavar="ADDR", help="multicast group (default 224.0.0.81)")
    where.add_argument(
        "--port", type=number_type("port", 1, 65535, whole=True), metavar="N", help="UDP port (default 8848)"
    )
    where.add_argument(
        "--ttl", type=number_type("ttl", 1, 255, whole=True), metavar="N", help="multicast TTL (default 1)"
    )
    where.add_argument(
        "--maxlen",
        type=number_type("maxlen", 1, 65535, whole=True),
        metavar="BYTES",
        help="largest message (default 1472 on IPv4)",
    )
    where.add_argument(
        "--sync-version",
        type=number_type("sync version", 0, 1, whole=True),
        metavar="0|1",
        help="protocol version (default: the net.ipv4.vs.sync_version sysctl)",
    )
    where.add_argument("--netns", metavar="NAME", help="act inside the named network namespace")
    what = parser.add_argument_group("what to send")
    what.add_argument(
        "--service", metavar="ADDR:PORT", help="only the connections of this virtual service ([IPv6]:PORT)"
    )
    what.add_argument(
        "--real-server", metavar="ADDR:PORT", help="only the connections to this real server ([IPv6]:PORT)"
    )
    what.add_argument(
        "--rate",
        type=number_type("rate", 0, above=True),
        default=DEFAULT_RATE,
        metavar="N",
        help=f"at most N connections per second (default {DEFAULT_RATE:g})",
    )
    how = parser.add_argument_group("how")
    how.add_argument("--dry-run", action="store_true", help="print what would be sent, decoded, and send nothing")
    how.add_argument("--test", action="store_true", help="send one marked test connection instead (10 s timeout)")
    how.add_argument(
        "--backup-netns",
        metavar="NAME",
        help="with --test: verify receipt by the backup daemon in this network namespace",
    )
    how.add_argument(
        "--wait",
        type=number_type("wait", 0, 3600),
        default=VERIFY_SECONDS,
        metavar="SECONDS",
        help=f"with --test: how long to wait for the backup (default {VERIFY_SECONDS:g})",
    )
    how.add_argument("-y", "--yes", action="store_true", help="send without asking")
    return parser


def read_state(stderr: TextIO) -> tuple[RawState, bool]:
    """One poll of this namespace's IPVS, and whether the sync daemons could be read.

    Uses the kernel backend; when it cannot run (not built, or no CAP_NET_ADMIN for netlink),
    the connection table and the sysctl still come from /proc, world-readable.
    """
    try:
        from ipvsman.backend import BackendError
        from ipvsman.kernel.backend import KernelBackend
    except ImportError:
        return _state_from_proc(), False
    backend = KernelBackend(netns=None)  # the CLI has entered --netns itself
    try:
        backend.open()
        try:
            # without CAP_NET_ADMIN the poll has the connections but no daemons: say so, not "none"
            return backend.poll(connections=True), backend.read_only_reason is None
        finally:
            backend.close()
    except BackendError as exc:
        print(f"{PROG}: note: {exc}; reading /proc only", file=stderr)
        return _state_from_proc(), False


def _state_from_proc() -> RawState:
    return RawState(connections=tuple(read_conn_table(origin=False)), sync_version=read_sync_version())


def _confirm(question: str, stdin: TextIO, stdout: TextIO) -> bool:
    stdout.write(f"{question}\nSend? [y/N] ")
    stdout.flush()
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def main(
    argv: list[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    read: Callable[[TextIO], tuple[RawState, bool]] = read_state,
) -> int:
    """Run `ipvsman resync`; `read` gives the state to work from (the kernel's, unless a test's)."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        options = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a bad option already reported in one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(options, stdin, stdout, stderr, read)
    except SyncConfigError as exc:
        print(f"{PROG}: {exc}", file=stderr)
        return EXIT_USAGE


def refuse_unbracketed_ipv6(text: str | None, option: str) -> None:
    """`fd00::1:80` is fd00::1 port 80 or the address fd00::1:80: refused, naming the option and the
    bracketed form (model.split_host_port refuses it too, without the option's name)."""
    if text is None:
        return
    text = text.strip()
    if text.startswith("[") or text.count(":") < 2:
        return
    host, _, port = text.rpartition(":")
    raise SyncConfigError(
        f"{option} {text} is ambiguous: an IPv6 address with a port needs brackets, write [{host}]:{port}"
    )


def _run(options: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO, read) -> int:
    refuse_unbracketed_ipv6(options.service, "--service")
    refuse_unbracketed_ipv6(options.real_server, "--real-server")
    if options.backup_netns and not options.test:
        raise SyncConfigError("--backup-netns goes with --test")
    if options.test and (options.service or options.real_server or options.dry_run):
        raise SyncConfigError("--test sends one test connection: it takes no --service, --real-server or --dry-run")
    if options.netns:
        enter_netns(options.netns)  # before any thread or socket exists, so all of them live there
    state, daemons_known = read(stderr)
    settings = resolve_settings(
        state.daemons,
        state.sync_version,
        interface=options.interface,
        syncid=options.syncid,
        group=options.group,
        port=options.port,
        ttl=options.ttl,
        maxlen=options.maxlen,
        version=options.sync_version,
        rate=options.rate,
        daemons_known=daemons_known,
    )
    if options.test:
        result = run_sync_test(
            settings, state.services, daemons=state.daemons, backup_netns=options.backup_netns, wait=options.wait
        )
        print(result.summary(), file=stdout)
        return EXIT_OK if result.ok else EXIT_FAILED

    plan = build_plan(
        state.connections or (), state.services, settings, service=options.service, real_server=options.real_server
    )
    if options.dry_run:
        print(f"dry run: {plan.describe()}", file=stdout)
        for line in plan.dry_run_lines():
            print(line, file=stdout)
        return EXIT_OK
    if plan.connections == 0:
        if plan.skipped:
            print(f"{PROG}: sent nothing: {plan.skipped_text()}", file=stderr)
            return EXIT_FAILED
        print(f"nothing to send: no connections ({plan.selection}) to {settings.describe()}", file=stdout)
        return EXIT_OK
    if not options.yes:
        if not stdin.isatty():
            print(f"{PROG}: not sending: standard input is not a terminal to confirm on; pass --yes", file=stderr)
            return EXIT_USAGE
        if not _confirm(plan.describe(), stdin, stdout):
            print("nothing sent", file=stdout)
            return EXIT_FAILED
    elif plan.skipped:
        print(f"{PROG}: note: {plan.skipped_text()}", file=stderr)
    report = _send_interruptibly(plan, stderr)
    print(plan.summary(report), file=stdout)
    return EXIT_OK if report.complete else EXIT_FAILED


def _send_interruptibly(plan: ResyncPlan, stderr: TextIO) -> SendReport:
    """Send in a thread so that Ctrl-C cancels cleanly; progress on a terminal's stderr."""
    cancel = threading.Event()
    show = stderr.isatty()

    def progress(p: SendProgress) -> None:
        if show:
            stderr.write(f"\r{p.describe()}  ")
            stderr.flush()

    result = {}

    def work() -> None:
        try:
            result["report"] = plan.run(progress=progress, cancel=cancel)
        except SyncConfigError as exc:
            result["error"] = exc

    sender = threading.Thread(target=work, name="ipvsman-resync", daemon=True)
    sender.start()
    while sender.is_alive():
        try:
            sender.join(0.2)
        except KeyboardInterrupt:
            cancel.set()
    if show:
        stderr.write("\n")
    if "error" in result:
        raise result["error"]
    return result["report"]
