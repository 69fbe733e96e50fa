"""Command line: parse options, pick a backend and start the dashboard, --once or a subcommand."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ipvsman import __version__

# each subcommand is a module of its own with main(argv) -> exit status
SUBCOMMANDS = {
    "resync": "ipvsman.sync.cli",
    "agent": "ipvsman.cluster.agent",
    "vips": "ipvsman.realserver_cli",
    "history": "ipvsman.daemon.history",
}


def build_parser() -> argparse.ArgumentParser:
    from ipvsman.output import EXIT_CODES_HELP

    parser = argparse.ArgumentParser(
        prog="ipvsman",
        description="Terminal dashboard for a Linux IPVS (LVS) director.",
        epilog=EXIT_CODES_HELP
        + "\n\nSubcommands: 'ipvsman resync --help' sends the connection table to backup directors;"
        + "\n'ipvsman vips --help', on a real server, holds the VIPs it serves on a dummy interface;"
        + "\n'ipvsman history --help' lists, compares and restores the topologies ipvsmand applied.",
        # the exit codes are a table: keep its lines
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ipvsman {__version__}")
    source = parser.add_argument_group("what to watch")
    source.add_argument("--demo", action="store_true", help="watch a simulated director (no kernel needed)")
    # default None, not 1: --seed without --demo is refused, not silently ignored
    source.add_argument("--seed", type=int, default=None, help="random seed of the demo director (default 1)")
    source.add_argument("--netns", metavar="NAME", help="watch the IPVS of a named network namespace")
    add_cluster_options(parser)
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
    source.add_argument(
        "--conn-budget",
        type=number_type("connection budget", 0, 100),
        default=5.0,
        metavar="PERCENT",
        help="share of one CPU that reads of the connection table may take on average; larger tables are "
        "sampled and their counts by state estimated (default 5; 0: only when asked, with C)",
    )
    once = parser.add_argument_group("for scripts")
    once.add_argument(
        "--once",
        action="store_true",
        help="print one snapshot as text and exit; with --keepalived or --topology, the drift against it too",
    )
    once.add_argument("--json", action="store_true", help="with --once: print JSON")
    once.add_argument(
        "--connections",
        dest="list_connections",
        action="store_true",
        help="with --once: include the connection table",
    )
    once.add_argument(
        "--check-drift",
        action="store_true",
        help="with --once and --keepalived or --topology: exit 1 when the kernel differs from the file",
    )
    ui = parser.add_argument_group("dashboard")
    ui.add_argument("--read-only", action="store_true", help="never change the kernel's state")
    ui.add_argument(
        "--weight-step", type=weight_step, default=1, metavar="N", help="weight change of + and - (default 1)"
    )
    ui.add_argument(
        "--audit-log",
        metavar="PATH",
        default=None,
        help=(
            "where changes (weights, real servers added or removed) are logged, '-' for stderr; a change "
            f"that cannot be logged is refused (default {default_audit_log()}; with --demo "
            f"{default_audit_log(demo=True)}: the demo never writes to the system log)"
        ),
    )
    ui.add_argument("--colors", choices=("16", "256", "mono"), default=None, help="colour depth (default: detect)")
    ui.add_argument("--no-resolve", action="store_true", help="start with numeric addresses and ports")
    ui.add_argument("--topology", metavar="FILE", help="ipvsman topology file naming services and real servers")
    ui.add_argument(
        "--keepalived",
        metavar="FILE",
        default=None,
        help="keepalived.conf for names and drift (default /etc/keepalived/keepalived.conf when present;"
        " --once reads only a file named here)",
    )
    ui.add_argument(
        "--ipvsmand-state",
        metavar="PATH",
        default=None,
        help="ipvsmand's state file: its health verdicts shown beside the kernel's weights "
        "(default /run/ipvsman/ipvsmand.json when present)",
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



def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    from ipvsman.cluster.syncprobe import MAX_PERIOD, MIN_PERIOD

    cluster = parser.add_argument_group("several directors (each runs `ipvsman agent`, reached over ssh by ClusterShell)")
    cluster.add_argument("--nodes", metavar="NODESET", help="watch these directors: a ClusterShell nodeset, "
                         "e.g. 'lvs-[1-2]' or '@lvs' (with --demo: a simulated cluster)")  # fmt: skip
    cluster.add_argument("--via", metavar="'PREFIX %h'", help="run the agent through this local command instead of "
                         "ssh, %%h being the node's name: 'ip netns exec %%h', 'kubectl exec %%h --'")  # fmt: skip
    cluster.add_argument("--fanout", type=number_type("fanout", 1, whole=True), default=None, metavar="N",
                         help="most sessions at once (default ClusterShell's, 64); must cover every node")  # fmt: skip
    cluster.add_argument("--connect-timeout", type=number_type("connect timeout", 0, above=True), default=None,
                         metavar="SECONDS", help="ssh connect timeout (default ClusterShell's, 10)")  # fmt: skip
    cluster.add_argument("--agent-command", default=None, metavar="COMMAND",
                         help="how to start the agent on a node (default 'ipvsman agent')")  # fmt: skip
    cluster.add_argument("--sync-probe", type=number_type("sync probe period", MIN_PERIOD, MAX_PERIOD), default=None,
                         metavar="SECONDS", help="every SECONDS the node holding the VIP sends a marked probe "
                         "connection through the sync protocol and every backup reports when it arrived: view 6 "
                         f"shows each backup's delay and loss ({MIN_PERIOD:g}-{MAX_PERIOD:g}; default off)")  # fmt: skip


def make_cluster(options: argparse.Namespace):
    """The ClusterSource of --nodes: the demo cluster, or agents over ClusterShell; raises ValueError (one line)."""
    from ipvsman.cluster.transport import DEFAULT_AGENT, AgentCluster, expand_nodes

    names = expand_nodes(options.nodes)
    if options.demo:
        from ipvsman.cluster.demo import DemoCluster

        return DemoCluster(names, seed=1 if options.seed is None else options.seed, interval=options.interval)
    agent_args = ["--interval", f"{options.interval:g}", "--conn-budget", f"{options.conn_budget:g}"]
    if not options.connections:
        agent_args.append("--no-connections")
    if options.read_only:
        agent_args.append("--read-only")
    return AgentCluster(names, agent_command=options.agent_command or DEFAULT_AGENT, agent_args=agent_args,
                        via=options.via, fanout=options.fanout, connect_timeout=options.connect_timeout,
                        stall_after=max(15.0, 5 * options.interval))  # fmt: skip


def cluster_contradiction(options: argparse.Namespace) -> str | None:
    """Why the several-directors options cannot all be obeyed, in one line; None when they can."""
    if not options.nodes:
        for flag, given in (("--via", options.via), ("--fanout", options.fanout),
                            ("--connect-timeout", options.connect_timeout), ("--agent-command", options.agent_command),
                            ("--sync-probe", options.sync_probe)):  # fmt: skip
            if given is not None:
                return f"{flag} goes with --nodes"
        return None
    if options.netns:
        return "--nodes watches several directors, --netns one namespace: for namespaces as nodes use --via 'ip netns exec %h'"
    if options.demo and (options.via or options.agent_command):
        return "--demo --nodes simulates the directors: --via and --agent-command reach real ones"
    if options.via is not None and "%h" not in options.via:
        return f"--via must name the node with %h, e.g. 'ip netns exec %h', got {options.via!r}"
    if options.once and not options.json:
        return "--nodes with --once prints JSON: add --json"
    if options.list_connections or options.check_drift:
        return "--connections and --check-drift read one director: leave out --nodes"
    if options.sync_probe is not None and options.once:
        return "--sync-probe measures the dashboard's last minute: not with --once"
    if options.sync_probe is not None and options.read_only:
        return "--sync-probe sends probe connections to the backups: not with --read-only"
    return None


def weight_step(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 65535")
    return int(text)


def default_audit_log(demo: bool = False) -> str:
    """The audit log without --audit-log: /var/log/ipvsman-audit.log as root, else a per-user file;
    for the demo always a per-user demo log (the dashboard picks it once it knows the backend)."""
    from ipvsman.ui.audit import default_path

    return default_path(demo)


def contradictory_options(options: argparse.Namespace) -> str | None:
    """Why the options cannot all be obeyed, in one line; None when they can."""
    if options.list_connections and not options.connections:
        return "--connections lists the connection table, --no-connections does not read it: pick one"
    for flag, given in (("--json", options.json), ("--connections", options.list_connections),
                        ("--check-drift", options.check_drift)):  # fmt: skip
        if given and not options.once:
            return f"{flag} goes with --once"
    if options.check_drift and not (options.keepalived or options.topology):
        return "--check-drift needs a file to compare with: --keepalived FILE or --topology FILE"
    if options.demo and options.netns:
        return "--demo watches a simulated director, --netns a real one: pick one"
    if options.seed is not None and not options.demo:
        return "--seed goes with --demo"
    if getattr(options, "ipvsmand_state", None) and (options.demo or options.once):
        return f"--ipvsmand-state goes with the dashboard of a real director, not {'--demo' if options.demo else '--once'}"
    return cluster_contradiction(options)


def run_once(options: argparse.Namespace) -> int:
    """--once: read the named configuration files (errors on stderr), then print one snapshot.

    Python's cyclic garbage collector is kept off throughout: a one-shot process builds its
    snapshot once, makes no garbage cycles worth collecting and then exits, yet with 10,000 real
    servers the collector walked their objects again and again (9-31 ms of CPU on the host, of the
    145-190 ms that --once --json of 1,000 x 10 costs there past its start-up). Run as the `ipvsman`
    command, the process then ends as soon as its output is flushed (exit_now).
    """
    from ipvsman import collector

    with collector.paused():
        code = _print_once(options)
    if _is_the_command():
        exit_now(code)
    return code


def _print_once(options: argparse.Namespace) -> int:
    from ipvsman.output import EXIT_BAD_INPUT, drift_source, print_once, read_configurations

    topology, keepalived, readable = read_configurations(options.topology, options.keepalived)
    if not readable:
        return EXIT_BAD_INPUT
    against = drift_source(topology, keepalived)
    if options.check_drift and against is None:
        named = " or ".join(config.path for config in (topology, keepalived) if config is not None)
        print(f"ipvsman: --check-drift: {named} configures no virtual service to compare with", file=sys.stderr)
        return EXIT_BAD_INPUT
    return print_once(
        make_backend(options),
        as_json=options.json,
        connections=options.list_connections,
        read_connections=options.connections,
        drift_against=against,
        check_drift=options.check_drift,
        conn_budget=options.conn_budget,
    )


def _is_the_command() -> bool:
    """Whether this process is the `ipvsman` command (python -m ipvsman, or the installed script),
    whose __main__ calls main() and exits with what it returns; not a caller of main() in-process
    (tests), which must get the exit code back."""
    return getattr(sys.modules.get("__main__"), "main", None) is main


def exit_now(code: int) -> None:
    """End the process with `code` once stdout and stderr are flushed, skipping the interpreter's
    teardown: freeing every object and module one by one, and a last collection over what is
    left (the decoder's caches of 10,000 real servers), is all the normal exit would add after
    --once: no other file is open for writing, no thread runs, and nothing is registered to run
    at exit that writes anything. When a flush fails (stdout closed) the normal exit runs
    instead, so that it reports the failure as it always has; returns then."""
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def make_backend(options: argparse.Namespace):
    """The demo director, or the kernel (optionally inside a named network namespace)."""
    if options.demo:
        from ipvsman.demo import DemoBackend

        return DemoBackend(seed=1 if options.seed is None else options.seed)
    from ipvsman.kernel.backend import KernelBackend

    return KernelBackend(netns=options.netns, read_only=options.read_only)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]])  # each subcommand's imports only when used
        return module.main(argv[1:])
    parser = build_parser()
    options = parser.parse_args(argv)
    contradiction = contradictory_options(options)
    if contradiction:
        parser.error(contradiction)  # one line and exit 2, as for any other bad option
    if options.nodes:
        try:
            cluster = make_cluster(options)
        except ValueError as exc:
            parser.error(str(exc))
        if options.once:
            from ipvsman.cluster.transport import print_cluster_once

            return print_cluster_once(cluster)
        from ipvsman.ui.cluster import run_cluster

        return run_cluster(options, cluster)
    if options.once:
        return run_once(options)
    from ipvsman.ui.app import run

    return run(options, make_backend(options))
