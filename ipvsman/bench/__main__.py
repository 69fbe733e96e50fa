"""`python -m ipvsman.bench [--json] [--quick] [poll conns watch screen]`: run the benchmarks, print one table.

The kernel benchmarks (poll, conns, watch) run in one QEMU guest booted the way the kernel tests
boot it (ipvsman.guest), or directly on a host that has IPVS (as root). The screen benchmark
runs here, after the guest has finished, so the two never compete for the CPUs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ipvsman import guest
from ipvsman.bench import BENCHMARKS, KERNEL_BENCHMARKS, Report, render

GUEST_TIMEOUT = 90 * 60  # a full run takes about 45 minutes in the emulated guest


@dataclass
class Plan:
    """Sizes and repetitions of one run; --quick trades precision and growth points for time."""

    director_services: int = 1000
    director_dests: int = 10
    poll_sizes: list[int] = field(default_factory=lambda: [10, 100, 1000])
    poll_runs: int = 5
    pyroute2_runs: int = 2  # at 1,000 services each takes over a minute in the guest
    pyroute2_max_services: int | None = None  # pyroute2-decoded polls only up to this size
    watch_seconds: float = 60.0
    oneshot_runs: int = 5
    watch_table_entries: int = 500_000  # watching again with this many synced connections (0: not)
    watch_table_seconds: float = 300.0
    # Reading /proc/net/ip_vs_conn costs the kernel O(n^2) (it walks its hash table from the
    # start for every 4 KB read): 200,000 entries take minutes in the guest, for ipvsadm too.
    conn_sizes: list[int] = field(default_factory=lambda: [1000, 10_000, 50_000, 200_000])
    conn_runs: dict = field(default_factory=lambda: {1000: 5, 10_000: 3, 50_000: 2, 200_000: 1})
    memory_sizes: tuple = (10_000, 200_000)
    screen_headline: tuple = (10_000, 10, 100_000)
    screen_services: list[int] = field(default_factory=lambda: [10, 1000, 10_000])
    screen_connections: list[int] = field(default_factory=lambda: [1000, 10_000, 100_000, 200_000])
    busy_seconds: float = 1.0
    presses: int = 60
    keys_seconds: float = 300.0  # of use with keys at random (screen): the 5 minutes
    checks_seconds: float = 10.0  # of checks as fast as one core goes (checks)
    checks_daemon_seconds: float = 30.0  # of ipvsmand at 1,000 real servers a second (checks)


def quick_plan() -> Plan:
    return Plan(
        poll_sizes=[10, 1000],
        poll_runs=3,
        pyroute2_runs=1,
        pyroute2_max_services=10,
        watch_seconds=30.0,
        oneshot_runs=1,
        watch_table_entries=50_000,
        watch_table_seconds=30.0,
        conn_sizes=[1000, 50_000],
        conn_runs={1000: 3, 50_000: 2},
        memory_sizes=(50_000,),
        screen_services=[10, 1000],
        screen_connections=[1000, 10_000],
        presses=30,
        keys_seconds=30.0,
        checks_seconds=5.0,
        checks_daemon_seconds=10.0,
    )


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ipvsman.bench", description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help=f"some of: {' '.join(BENCHMARKS)} (default all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer runs and sizes (about 15 minutes)")
    parser.add_argument("--output", metavar="FILE", help="also write the results (as printed) to FILE")
    parser.add_argument("--no-table-stage", action="store_true",
                        help="watch: leave out the stage with a table of 500,000 connections (5 minutes)")  # fmt: skip
    # Used by the run itself, to hand the kernel part to the guest.
    parser.add_argument("--kernel-part", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--messages", metavar="FILE", help=argparse.SUPPRESS)
    return parser


def command_line(options: argparse.Namespace) -> str:
    words = ["python", "-m", "ipvsman.bench"]
    if options.quick:
        words.append("--quick")
    if options.json:
        words.append("--json")
    if options.no_table_stage:
        words.append("--no-table-stage")
    return " ".join(words + options.benchmarks)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    unknown = [name for name in options.benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}")
    selected = [name for name in BENCHMARKS if name in options.benchmarks] or list(BENCHMARKS)
    plan = quick_plan() if options.quick else Plan()
    if options.no_table_stage:
        plan.watch_table_entries = 0
    if options.kernel_part:
        report = kernel_part(selected, plan, Path(options.messages) if options.messages else None)
        Path(options.kernel_part).write_text(report.dumps())
        return 0

    started = time.monotonic()
    report = Report(environment={"command": command_line(options)})
    kernel = [name for name in selected if name in KERNEL_BENCHMARKS]
    if kernel:
        try:
            report.extend(run_kernel(kernel, plan, options.quick, options.no_table_stage))
        except (guest.GuestUnavailable, RuntimeError) as exc:
            print(f"ipvsman.bench: {exc}", file=sys.stderr)
            return 1
    if "checks" in selected:  # on this host, like screen: checks run on loopback, no IPVS needed
        report.extend(guarded("checks", lambda: checks_part(plan)))
    if "screen" in selected:
        report.extend(guarded("screen", lambda: screen_part(plan)))
    report.environment["wall time of the run"] = f"{(time.monotonic() - started) / 60:.1f} min"
    text = report.dumps() if options.json else render(report)
    print(text)
    if options.output:
        Path(options.output).write_text(text + "\n")
    return 0


def guarded(name: str, function) -> Report:
    """A benchmark that fails becomes a note: the other figures of a long run are not lost."""
    try:
        return function()
    except Exception as exc:
        log(f"{name} failed:\n{traceback.format_exc()}")
        return Report(notes=[f"{name}: FAILED: {type(exc).__name__}: {exc}"])


def checks_part(plan: Plan) -> Report:
    from ipvsman.bench import checks

    return checks.run(plan.checks_seconds, plan.checks_daemon_seconds, log=log)


def screen_part(plan: Plan) -> Report:
    from ipvsman.bench import screen

    report = screen.run(plan.screen_headline, plan.screen_services, plan.screen_connections, plan.busy_seconds,
                        plan.presses, log, plan.keys_seconds)  # fmt: skip
    import platform

    import urwid

    from ipvsman.bench.director import cpu_model

    report.environment["screen benchmark"] = (
        f"this host, {cpu_model()}, {os.cpu_count()} CPUs; urwid {urwid.__version__}; Python {platform.python_version()}"
    )
    return report


# -- the kernel part ----------------------------------------------------------------------------


def run_kernel(kernel: list[str], plan: Plan, quick: bool, no_table_stage: bool = False) -> Report:
    """Here when this host has IPVS (or this is the guest), else in one guest boot."""
    if guest.in_guest() or guest.host_has_ipvs():
        return kernel_part(kernel, plan, None)
    guest.check_guest_tools()
    rwdir = Path(tempfile.mkdtemp(prefix="ipvsman-bench-"))
    messages = None
    if "conns" in kernel or "watch" in kernel and plan.watch_table_entries:
        from ipvsman.bench import conns

        count = message_entries(kernel, plan)
        log(f"encoding {count:,} sync entries for the guest (encoding them in it would be slow)")
        messages = rwdir / "sync-messages.bin"
        conns.save_messages(messages, conns.encode_messages(count, plan.director_services, plan.director_dests))
    results = rwdir / "kernel.json"
    command = (
        f"{shlex.quote(sys.executable)} -m ipvsman.bench --kernel-part {shlex.quote(str(results))}"
        + (f" --messages {shlex.quote(str(messages))}" if messages else "")
        + (" --quick" if quick else "")
        + (" --no-table-stage" if no_table_stage else "")
        + " " + " ".join(kernel)
    )
    log_path = rwdir / "guest.log"
    log(f"booting the IPVS guest for {', '.join(kernel)}; its log: {log_path}")
    stop = threading.Event()
    follower = threading.Thread(target=follow, args=(log_path, stop), daemon=True)
    follower.start()
    package_root = str(Path(__file__).resolve().parents[2])
    try:
        run = guest.run_in_guest(command, rwdir, timeout=GUEST_TIMEOUT, log_path=log_path, cwd=package_root)
    finally:
        stop.set()
        follower.join(timeout=5)
    if not results.exists():
        tail = "\n".join(run.output.splitlines()[-40:])
        raise RuntimeError(f"the guest run gave no results (exit {run.returncode}); last lines of {log_path}:\n{tail}")
    return Report.from_json(__import__("json").loads(results.read_text()))


def follow(path: Path, stop: threading.Event) -> None:
    """Echo the benchmark's progress lines from the guest's log as they come."""
    position = 0
    while not stop.wait(2.0):
        try:
            with open(path, errors="replace") as handle:
                handle.seek(position)
                text = handle.read()
                position = handle.tell()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if line.startswith("bench: "):
                print(line, file=sys.stderr, flush=True)


def kernel_part(selected: list[str], plan: Plan, messages_path: Path | None) -> Report:
    from ipvsman.bench import director as director_module

    where = "QEMU guest (software emulation, ~30x slower than the host)" if guest.in_guest() else "this host"
    report = Report(environment=director_module.environment(where))
    if guest.in_guest():
        guest.load_modules()
    director = director_module.Director(plan.director_dests)
    try:
        if "poll" in selected:
            from ipvsman.bench import poll

            report.extend(guarded("poll", lambda: poll.run(director, plan.poll_sizes, plan.poll_runs,
                                                           plan.pyroute2_runs, log, plan.pyroute2_max_services)))  # fmt: skip
        seconds = director.grow(plan.director_services)
        if seconds:
            log(f"director of {plan.director_services} services made in {seconds:.1f} s")
        if "oneshot" in selected:
            from ipvsman.bench import oneshot

            report.extend(guarded("oneshot", lambda: oneshot.run(director, plan.oneshot_runs, log)))
        from ipvsman.bench import watch

        if "watch" in selected:
            report.extend(guarded("watch", lambda: watch.run(director, plan.watch_seconds, log)))
        if "conns" in selected:
            report.extend(guarded("conns", lambda: conns_part(director, plan, messages_path, selected)))
        if "watch" in selected and plan.watch_table_entries:
            # After conns: its table grows from 1,000 entries; this one is filled at once.
            messages = load_or_encode(plan, messages_path, selected)
            report.extend(guarded("watch", lambda: watch.run_with_table(
                director, messages, plan.watch_table_entries, plan.watch_table_seconds, log)))  # fmt: skip
    finally:
        director.close()
    return report


def message_entries(selected: list[str], plan: Plan) -> int:
    """How many synthetic connections the kernel part sends: the most any of its benchmarks needs."""
    sizes = list(plan.conn_sizes) if "conns" in selected else []
    if "watch" in selected and plan.watch_table_entries:
        sizes.append(plan.watch_table_entries)
    return max(sizes)


def load_or_encode(plan: Plan, messages_path: Path | None, selected: list[str]) -> list:
    from ipvsman.bench import conns

    if messages_path is not None:
        return conns.load_messages(messages_path)
    return conns.encode_messages(message_entries(selected, plan), plan.director_services, plan.director_dests)


def conns_part(director, plan: Plan, messages_path: Path | None, selected: list[str]) -> Report:
    from ipvsman.bench import conns

    messages = load_or_encode(plan, messages_path, selected)
    return conns.run(director, messages, plan.conn_sizes, plan.conn_runs, set(plan.memory_sizes), log)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
