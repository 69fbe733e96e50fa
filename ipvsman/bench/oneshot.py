"""Benchmark: `ipvsman --once --json` as a whole process on the large director, against `ipvsadm -Ln --stats --exact`.

What a script or a monitoring check pays for one look. Python's start-up and imports are the
same whatever the director holds, so they are taken off: the figure compared with ipvsadm is the
rest (opening the netlink socket, the first poll, the table's first read, the JSON of every
service and real server, the exit). Measured two ways, with an ipvsadm run in each round:
- past the imports: each run marks the end of its imports (MARK_IMPORTS); the director's run
  past its mark less the empty director's past its mark, in the same round: the start-up's own
  variation (seconds in the emulated guest, mostly imports) does not enter; the target's figure;
- as two processes: each run on the director less a run on an empty director just before it
  (that run's poll and JSON of nothing taken off too), as the issue first put it.
CPU is user + system of the process, from its rusage.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

from ipvsman.bench import Figure, Report, at_most
from ipvsman.bench.director import Director, Netns, terminal_env

TARGET = 1.5  # the rest of a one-shot against ipvsadm
MARK = "ipvsman-bench imports done"

# `python -m ipvsman` with a mark on stderr once what --once imports is imported: the clock
# (CLOCK_MONOTONIC, the same in every process of the machine) and the process's CPU so far.
# It leaves ipvsman.cli.main as __main__.main, so --once ends as the command does.
MARK_IMPORTS = f"""
import resource, sys, time
import ipvsman.cli, ipvsman.collector, ipvsman.output, ipvsman.poller, ipvsman.kernel.backend
usage = resource.getrusage(resource.RUSAGE_SELF)
sys.stderr.write("{MARK} %r %r\\n" % (time.perf_counter(), usage.ru_utime + usage.ru_stime))
sys.stderr.flush()
main = ipvsman.cli.main
sys.exit(main(sys.argv[1:]))
"""


class Run(NamedTuple):
    wall: float  # seconds, the whole process
    cpu: float  # CPU seconds (user + system), the whole process
    rest_wall: float | None = None  # past the mark of its imports, where it printed one
    rest_cpu: float | None = None
    system: float = 0.0  # of `cpu`, the kernel's work for the process (its dumps among it)


def _timed(argv: list[str]) -> Run:
    """One run of argv, its output thrown away; raises when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=terminal_env())
    ended = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {stderr[-500:]}")
    system = after.ru_stime - before.ru_stime
    cpu = after.ru_utime - before.ru_utime + system
    for line in stderr.splitlines():
        if line.startswith(MARK):
            marked_at, cpu_at_mark = (float(word) for word in line.split()[-2:])
            return Run(ended - started, cpu, ended - marked_at, cpu - cpu_at_mark, system)
    return Run(ended - started, cpu, system=system)


def once_argv(netns: str, mark_imports: bool = False) -> list[str]:
    start = ["-c", MARK_IMPORTS] if mark_imports else ["-m", "ipvsman"]
    return [sys.executable, *start, "--netns", netns, "--once", "--json"]


def run(director: Director, runs: int = 3, log=print) -> Report:
    report = Report()
    empty = Netns("empty")
    listing = director.netns.exec_argv(["ipvsadm", "-Ln", "--stats", "--exact"])
    try:
        # Interleaved, so that the guest's slow drifts fall on all three alike: each round is a
        # start-up run, a run on the director and an ipvsadm run, one after the other.
        rounds = [(_timed(once_argv(empty.name, mark_imports=True)),
                   _timed(once_argv(director.netns.name, mark_imports=True)), _timed(listing))
                  for _ in range(runs)]  # fmt: skip
    finally:
        empty.close()
    startup, startup_cpu = (statistics.median(r[0][i] for r in rounds) for i in (0, 1))
    whole, whole_cpu = (statistics.median(r[1][i] for r in rounds) for i in (0, 1))
    theirs, theirs_cpu = (statistics.median(r[2][i] for r in rounds) for i in (0, 1))
    # Each run less the start-up run just before it: in the emulated guest the start-up alone
    # varies by seconds from one minute to the next (13 to 21 s seen in one boot), more than the
    # rest measured, and a round shares the machine's state of that minute.
    rests = [director_run[0] - empty_run[0] for empty_run, director_run, _ in rounds]
    rest = statistics.median(rests)
    rests_cpu = [director_run[1] - empty_run[1] for empty_run, director_run, _ in rounds]
    rest_cpu = statistics.median(rests_cpu)
    ratios = [(director_run[0] - empty_run[0]) / listed[0] for empty_run, director_run, listed in rounds if listed[0]]
    if any(run.rest_wall is None for round_ in rounds for run in round_[:2]):
        raise RuntimeError("a run of ipvsman printed no mark of its imports")
    # Past the imports, the director's run less the empty director's of the same round: what is
    # left is what the director's size costs, each side measured within one process.
    past = [director_run.rest_wall - empty_run.rest_wall for empty_run, director_run, _ in rounds]
    past_cpu = [director_run.rest_cpu - empty_run.rest_cpu for empty_run, director_run, _ in rounds]
    fixed = statistics.median(empty_run.rest_wall for empty_run, _, _ in rounds)
    log(f"oneshot: ipvsman --once --json {whole:.2f} s (start-up on an empty director {startup:.2f} s, "
        f"of which past its imports {fixed:.2f} s), ipvsadm {theirs:.2f} s")  # fmt: skip
    scale = f"{director.services:,} x {director.dests}"
    rest_past, rest_past_cpu = statistics.median(past), statistics.median(past_cpu)
    report.figures.append(
        Figure("oneshot", f"ipvsman --once --json, {scale}, less the same on an empty director, both past their imports",
               rest_past, "s", theirs, "ipvsadm -Ln --stats --exact", f"<= {TARGET:g}x ipvsadm",
               at_most(rest_past, TARGET * theirs),
               note=f"median of {runs}: {', '.join(f'{value:.2f}' for value in past)} s")  # fmt: skip
    )
    report.figures.append(
        Figure("oneshot", "the same in CPU (user + system)", rest_past_cpu, "CPU s", theirs_cpu,
               "ipvsadm -Ln --stats --exact",
               note=f"median of {runs}: {', '.join(f'{value:.2f}' for value in past_cpu)} CPU s")  # fmt: skip
    )
    # The kernel's part (system time): the same dumps for both, so what differs is user space.
    ours_system = statistics.median(director_run.system - empty_run.system for empty_run, director_run, _ in rounds)
    theirs_system = statistics.median(listed.system for _, _, listed in rounds)
    report.notes.append(
        f"oneshot: system CPU (the kernel's work), median of {runs}: ipvsman's run on the director less the empty "
        f"director's {ours_system:.2f} s, ipvsadm {theirs_system:.2f} s; user CPU: ipvsman "
        f"{rest_past_cpu - ours_system:.2f} s (past its imports), ipvsadm {theirs_cpu - theirs_system:.2f} s"
    )
    report.figures.append(
        Figure("oneshot", "past its imports on an empty director (socket, family, a poll of nothing, exit)", fixed,
               "s", note=f"median of {runs}: "
               f"{', '.join(f'{empty_run.rest_wall:.2f}' for empty_run, _, _ in rounds)} s")  # fmt: skip
    )
    report.figures.append(
        Figure("oneshot", f"ipvsman --once --json, {scale}, less its start-up on an empty director (two processes)",
               rest, "s", theirs, "ipvsadm -Ln --stats --exact",
               note=f"median of {runs}, each run less the start-up run before it: "
               f"{', '.join(f'{value:.2f}' for value in rests)} s; ratio within each round "
               f"{', '.join(f'{value:.2f}x' for value in ratios)}")  # fmt: skip
    )
    report.figures.append(
        Figure("oneshot", "the same in CPU (user + system), less the start-up run's (two processes)", rest_cpu, "CPU s", theirs_cpu,
               "ipvsadm -Ln --stats --exact",
               note=f"median of {runs}: {', '.join(f'{value:.2f}' for value in rests_cpu)} CPU s")  # fmt: skip
    )
    report.figures.append(
        Figure("oneshot", f"the whole process, start-up included ({startup:.2f} s of it)", whole, "s", theirs,
               "ipvsadm -Ln --stats --exact", note=f"CPU {whole_cpu:.2f} s, of which start-up {startup_cpu:.2f} s")
    )  # fmt: skip
    return report
