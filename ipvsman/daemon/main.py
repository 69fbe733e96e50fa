"""`ipvsmand --topology FILE`: check real servers and hold IPVS to the topology, in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from ipvsman import __version__
from ipvsman.daemon import history, statefile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipvsmand",
        description="Health-check the real servers of a topology file and hold IPVS to it "
        "(SIGHUP reloads the file, SIGTERM stops and leaves IPVS as it is).",
    )
    parser.add_argument("--version", action="version", version=f"ipvsmand {__version__}")
    parser.add_argument("--topology", required=True, metavar="FILE", help="the topology file (ipvsman syntax)")
    parser.add_argument(
        "--state-file", default=statefile.DEFAULT_PATH, metavar="PATH", help="where the state goes (default %(default)s)"
    )
    parser.add_argument(
        "--history-dir", default=history.DEFAULT_DIRECTORY, metavar="DIR",
        help="where applied topologies are kept (default %(default)s; 'none': not kept)",
    )  # fmt: skip
    parser.add_argument("--history-max", type=int, default=history.DEFAULT_MAX_COUNT, metavar="N",
                        help="versions kept at most (default %(default)s)")  # fmt: skip
    parser.add_argument("--heartbeat", type=float, default=5.0, metavar="SECONDS",
                        help="the state file is rewritten at least this often (default %(default)s)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=512, metavar="N",
                        help="checks running at once at most (default %(default)s)")  # fmt: skip
    parser.add_argument("--reconcile", type=float, default=10.0, metavar="SECONDS",
                        help="IPVS is compared with the plan at least this often (default %(default)s)")  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="log every check result")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    for name, value in (("--heartbeat", options.heartbeat), ("--reconcile", options.reconcile)):
        if not value > 0:
            print(f"ipvsmand: {name} must be more than 0, got {value:g}", file=sys.stderr)
            return 2
    if options.concurrency < 1 or options.history_max < 1:
        print("ipvsmand: --concurrency and --history-max must be at least 1", file=sys.stderr)
        return 2
    # One line per event; journald adds the time and the unit.
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if options.debug else logging.INFO, format="%(levelname)s %(message)s"
    )
    return asyncio.run(serve(options))


async def serve(options: argparse.Namespace) -> int:
    from ipvsman.daemon.engine import Daemon, ThreadedKernel

    kept = None if options.history_dir == "none" else history.History(options.history_dir, options.history_max)
    kernel = ThreadedKernel()
    daemon = Daemon(
        options.topology, kernel, state_path=options.state_file, history=kept, heartbeat=options.heartbeat,
        concurrency=options.concurrency, reconcile_every=options.reconcile,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    log = logging.getLogger("ipvsmand")

    def on_signal(number: int) -> None:
        if number == signal.SIGHUP:
            log.info("SIGHUP: reloading %s", daemon.topology_path)
            daemon.request_reload()
        else:
            log.info("%s: stopping; IPVS is left as it is", signal.Signals(number).name)
            daemon.stop()

    for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, on_signal, number)
    log.info("ipvsmand %s starting with %s", __version__, daemon.topology_path)
    try:
        return await daemon.run()
    finally:
        kernel.close()


if __name__ == "__main__":
    sys.exit(main())
