"""Benchmarks of ipvsman against ipvsadm at director scale: figures, growth tables, and how they print.

`python -m ipvsman.bench` runs them (see __main__.py). The kernel benchmarks (poll, conns,
watch) need a real IPVS kernel and run in one QEMU guest unless the host has IPVS; the screen
benchmark runs anywhere. Each benchmark returns a Report; reports merge into one table (or JSON).
Times measured in the guest are only meaningful as ratios against ipvsadm in the same guest.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

BENCHMARKS = ("poll", "oneshot", "conns", "watch", "screen", "checks")
KERNEL_BENCHMARKS = ("poll", "oneshot", "conns", "watch")


@dataclass
class Figure:
    """One measured figure, with ipvsadm's in the same unit when there is one to compare with."""

    benchmark: str
    label: str
    value: float | None
    unit: str  # "s", "ms", "MB", "CPU s"
    reference: float | None = None  # ipvsadm's figure
    reference_label: str = ""  # what ipvsadm ran
    target: str = ""  # in words: "<= 2x ipvsadm", "< 30 ms"
    met: bool | None = None  # None: no target, or not measured
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.reference:
            return None
        return self.value / self.reference


@dataclass
class Growth:
    """How figures grow with size: one row per size, one column per series (ipvsman, ipvsadm, ...)."""

    benchmark: str
    title: str
    size_label: str  # "services", "connections"
    unit: str  # of the values
    series: list[str]
    rows: list[tuple[int, dict[str, float | None]]] = field(default_factory=list)
    note: str = ""

    def add(self, size: int, **values: float | None) -> None:
        self.rows.append((size, values))

    def per_item(self, series: str) -> list[float | None]:
        return [None if values.get(series) is None else values[series] / size for size, values in self.rows]

    def linearity(self, series: str) -> float | None:
        """Per-item cost at the largest size over that at the previous size: <= ~1 means linear or better."""
        costs = [cost for cost in self.per_item(series) if cost]
        if len(costs) < 2:
            return None
        return costs[-1] / costs[-2]


@dataclass
class Report:
    """What one run produced: where it ran, its figures and growth tables, and notes."""

    environment: dict = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    growth: list[Growth] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Report) -> None:
        for key, value in other.environment.items():
            self.environment.setdefault(key, value)
        self.figures += other.figures
        self.growth += other.growth
        self.notes += other.notes

    def to_json(self) -> dict:
        return {
            "environment": self.environment,
            "figures": [asdict(figure) | {"ratio": figure.ratio} for figure in self.figures],
            "growth": [
                {
                    "benchmark": growth.benchmark,
                    "title": growth.title,
                    "size_label": growth.size_label,
                    "unit": growth.unit,
                    "series": growth.series,
                    "rows": [{"size": size, **values} for size, values in growth.rows],
                    "note": growth.note,
                }
                for growth in self.growth
            ],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict) -> Report:
        report = cls(environment=dict(data.get("environment", {})), notes=list(data.get("notes", [])))
        for item in data.get("figures", []):
            item = {key: value for key, value in item.items() if key != "ratio"}
            report.figures.append(Figure(**item))
        for item in data.get("growth", []):
            growth = Growth(item["benchmark"], item["title"], item["size_label"], item["unit"], list(item["series"]),
                            note=item.get("note", ""))  # fmt: skip
            for row in item["rows"]:
                row = dict(row)
                size = row.pop("size")
                growth.rows.append((size, row))
            report.growth.append(growth)
        return report

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


# -- measuring ------------------------------------------------------------------------------


def timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def median_of(function: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    """The median wall time of `runs` calls, and every time."""
    times = [timed(function)[0] for _ in range(max(1, runs))]
    return statistics.median(times), times


def peak_rss_mb() -> float:
    """This process's peak resident set size so far.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec(), so a process started by a big
    one (the benchmark) would report its parent's peak as its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


# -- printing -------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{fmt_number(value, unit)} {unit}".strip()


def fmt_number(value: float | None, unit: str = "") -> str:
    """A figure in the precision its unit deserves, without the unit."""
    if value is None:
        return "-"
    if unit in ("s", "CPU s"):
        text = f"{value:.3f}" if value < 10 else f"{value:.1f}"
    elif unit == "ms":
        text = f"{value:.2f}" if value < 10 else f"{value:.1f}"
    elif unit == "MB":
        text = f"{value:.1f}"
    elif unit == "us":
        text = f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    elif float(value).is_integer():
        text = f"{int(value):,}"
    else:
        text = f"{value:.2f}"
    return text


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def fmt_met(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


def table(headers: list[str], rows: Iterable[list[str]], right: Iterable[int] = ()) -> list[str]:
    """Plain text columns; the indexes in `right` are right-aligned."""
    rows = [list(map(str, row)) for row in rows]
    right = set(right)
    widths = [max([len(headers[i])] + [len(row[i]) for row in rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()

    return [line(headers), line(["-" * width for width in widths])] + [line(row) for row in rows]


def growth_scale(unit: str) -> tuple[str, float]:
    """The unit and factor in which per-item costs read best."""
    if unit == "s":
        return "us", 1e6
    if unit == "ms":
        return "us", 1e3
    if unit == "MB":
        return "KB", 1024
    return unit, 1.0


def render(report: Report) -> str:
    lines = []
    env = report.environment
    for key in sorted(env):
        lines.append(f"{key}: {env[key]}")
    if env:
        lines.append("")
    headers = ["benchmark", "figure", "ipvsman", "ipvsadm", "ratio", "target", "met"]
    rows = [
        [
            f.benchmark,
            f.label + (f" ({f.note})" if f.note else ""),
            fmt_value(f.value, f.unit),
            fmt_value(f.reference, f.unit) if f.reference is not None else "-",
            fmt_ratio(f.ratio),
            f.target or "-",
            fmt_met(f.met),
        ]
        for f in report.figures
    ]
    lines += table(headers, rows, right=(2, 3, 4))
    for growth in report.growth:
        unit, factor = growth_scale(growth.unit)
        lines += ["", f"Growth: {growth.title}" + (f" ({growth.note})" if growth.note else "")]
        headers = [growth.size_label]
        for series in growth.series:
            headers += [f"{series} {growth.unit}", f"per item {unit}"]
        rows = []
        per_item = {series: growth.per_item(series) for series in growth.series}
        for index, (size, values) in enumerate(growth.rows):
            row = [f"{size:,}"]
            for series in growth.series:
                cost = per_item[series][index]
                row += [fmt_number(values.get(series), growth.unit),
                        fmt_number(None if cost is None else cost * factor, unit)]
            rows.append(row)
        lines += table(headers, rows, right=range(len(headers)))
        verdicts = []
        for series in growth.series:
            step = growth.linearity(series)
            if step is not None:
                verdicts.append(f"{series}: per-item cost x{step:.2f} over the last step")
        if verdicts:
            lines.append("  " + "; ".join(verdicts) + " (<= 1 is linear or better)")
    if report.notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in report.notes]
    return "\n".join(lines)
