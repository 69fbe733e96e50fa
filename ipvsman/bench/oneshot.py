"""Benchmark: `ipvsman --once --json` as a whole process on the large director, against `ipvsadm -Ln --stats --exact`.

What a script or a monitoring check pays for one look. Python's start-up and imports are the
same whatever the director holds, so they are measured apart, on an empty namespace, and taken
off: the figure compared with ipvsadm is the rest (the first poll, the table's first read and the
JSON of every service and real server), run by run, with an ipvsadm run in each round. CPU is user +
system of the process, from its rusage.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

from ipvsman.bench import Figure, Report, at_most
from ipvsman.bench.director import Director, Netns, terminal_env

TARGET = 1.5  # the rest of a one-shot against ipvsadm


def _timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of argv, its output thrown away; raises when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=terminal_env())
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def once_argv(netns: str) -> list[str]:
    return [sys.executable, "-m", "ipvsman", "--netns", netns, "--once", "--json"]


def run(director: Director, runs: int = 3, log=print) -> Report:
    report = Report()
    empty = Netns("empty")
    listing = director.netns.exec_argv(["ipvsadm", "-Ln", "--stats", "--exact"])
    try:
        # Interleaved, so that the guest's slow drifts fall on all three alike: each round is a
        # start-up run, a run on the director and an ipvsadm run, one after the other.
        rounds = [(_timed(once_argv(empty.name)), _timed(once_argv(director.netns.name)), _timed(listing))
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
    log(f"oneshot: ipvsman --once --json {whole:.2f} s (start-up on an empty director {startup:.2f} s), "
        f"ipvsadm {theirs:.2f} s")  # fmt: skip
    scale = f"{director.services:,} x {director.dests}"
    report.figures.append(
        Figure("oneshot", f"ipvsman --once --json, {scale}, less its start-up on an empty director", rest, "s", theirs,
               "ipvsadm -Ln --stats --exact", f"<= {TARGET:g}x ipvsadm", at_most(rest, TARGET * theirs),
               note=f"median of {runs}, each run less the start-up run before it: "
               f"{', '.join(f'{value:.2f}' for value in rests)} s; ratio within each round "
               f"{', '.join(f'{value:.2f}x' for value in ratios)}")  # fmt: skip
    )
    report.figures.append(
        Figure("oneshot", "the same in CPU (user + system), less the start-up run's", rest_cpu, "CPU s", theirs_cpu,
               "ipvsadm -Ln --stats --exact",
               note=f"median of {runs}: {', '.join(f'{value:.2f}' for value in rests_cpu)} CPU s")  # fmt: skip
    )
    report.figures.append(
        Figure("oneshot", f"the whole process, start-up included ({startup:.2f} s of it)", whole, "s", theirs,
               "ipvsadm -Ln --stats --exact", note=f"CPU {whole_cpu:.2f} s, of which start-up {startup_cpu:.2f} s")
    )  # fmt: skip
    return report
