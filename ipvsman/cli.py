"""Command line: parse options, pick a backend and start the dashboard, --once or a subcommand."""

from __future__ import annotations

import argparse
import os
import sys

from ipvsman import __version__

SUBCOMMANDS = ("resync",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipvsman",
        description="Terminal dashboard for a Linux IPVS (LVS) director.",
        epilog="Subcommands: 'ipvsman resync --help' sends the connection table to backup directors.",
    )
    parser.add_argument("--version", action="version", version=f"ipvsman {__version__}")
    source = parser.add_argument_group("what to watch")
    source.add_argument("--demo", action="store_true", help="watch a simulated director (no kernel needed)")
    source.add_argument("--seed", type=int, default=1, help="random seed of the demo director (default 1)")
    source.add_argument("--netns", metavar="NAME", help="watch the IPVS of a named network namespace")
    source.add_argument(
        "--interval",
        type=number_type("interval", 0, above=True),
        default=1.0,
        metavar="SECONDS",
        help="poll interval (default 1)",
    )
    source.add_argument(
        "--no-connections",
        dest="connections",
        action="store_false",
        help="do not read the connection table (cheaper on very large tables)",
    )
    once = parser.add_argument_group("for scripts")
    once.add_argument("--once", action="store_true", help="print one snapshot as text and exit")
    once.add_argument("--json", action="store_true", help="with --once: print JSON")
    once.add_argument(
        "--connections",
        dest="list_connections",
        action="store_true",
        help="with --once: include the connection table",
    )
    ui = parser.add_argument_group("dashboard")
    ui.add_argument("--read-only", action="store_true", help="never change the kernel's state")
    ui.add_argument(
        "--weight-step", type=weight_step, default=1, metavar="N", help="weight change of + and - (default 1)"
    )
    ui.add_argument(
        "--audit-log",
        metavar="PATH",
        default=default_audit_log(),
        help="where changes (weights, real servers added or removed) are logged (default %(default)s)",
    )
    ui.add_argument("--colors", choices=("16", "256", "mono"), default=None, help="colour depth (default: detect)")
    ui.add_argument("--no-resolve", action="store_true", help="start with numeric addresses and ports")
    ui.add_argument("--topology", metavar="FILE", help="ipvsman topology file naming services and real servers")
    ui.add_argument(
        "--keepalived",
        metavar="FILE",
        default=None,
        help="keepalived.conf for names and drift (default /etc/keepalived/keepalived.conf when present)",
    )
    return parser


def number_type(what: str, low: float, high: float | None = None, *, whole: bool = False, above: bool = False):
    """An argparse type for a number from `low` to `high` (more than `low` when `above`), whose
    errors are one line naming `what`: "rate must be more than 0, got 0"."""

    def parse(text: str):
        try:
            value = int(text, 0) if whole else float(text)
        except ValueError:
            kind = "a whole number" if whole else "a number"
            raise argparse.ArgumentTypeError(f"{what} must be {kind}, got {text!r}") from None
        if (value <= low if above else value < low) or (high is not None and value > high):
            bounds = f"more than {low:g}" if above else f"at least {low:g}" if high is None else f"{low:g}-{high:g}"
            raise argparse.ArgumentTypeError(f"{what} must be {bounds}, got {text}")
        return value

    return parse



def weight_step(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 65535")
    return int(text)


def default_audit_log() -> str:
    if os.geteuid() == 0:
        return "/var/log/ipvsman-audit.log"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "ipvsman", "audit.log")


def make_backend(options: argparse.Namespace):
    """The demo director, or the kernel (optionally inside a named network namespace)."""
    if options.demo:
        from ipvsman.demo import DemoBackend

        return DemoBackend(seed=options.seed)
    from ipvsman.kernel.backend import KernelBackend

    return KernelBackend(netns=options.netns, read_only=options.read_only)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "resync":
        from ipvsman.sync.cli import main as resync_main

        return resync_main(argv[1:])
    options = build_parser().parse_args(argv)
    if options.json and not options.once:
        build_parser().error("--json goes with --once")
    if options.once:
        from ipvsman.output import print_once

        return print_once(
            make_backend(options),
            as_json=options.json,
            connections=options.list_connections,
            read_connections=options.connections,
        )
    from ipvsman.ui.app import run

    return run(options, make_backend(options))
