"""Renders every dashboard view from the demo director at a fixed seed and tick into screenshots/
(text and SVG); `--check` lists the files that are stale instead of writing them.

    python -m ipvsman.screenshots [--check] [--out DIR]

The pictures show the demo with screenshots/demo.topology and screenshots/demo-keepalived.conf
(names, drift, VRRP owners), with a fixed table of port and host names so they do not depend
on this machine's /etc/services and /etc/hosts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from html import escape
from pathlib import Path

import urwid
import urwid.testing

from ipvsman.demo import DemoBackend
from ipvsman.keepalived import parse_keepalived
from ipvsman.model import DestKey, ServiceKey, Snapshot
from ipvsman.names import NameResolver, Names, PortNames
from ipvsman.poller import Command, Poller
from ipvsman.topology import parse_topology
from ipvsman.ui.app import DEMO_MONITOR_OFF, Dashboard
from ipvsman.ui.config import Configurations
from ipvsman.ui.health import DirectorSample, Health, InterfaceRates
from ipvsman.ui.palette import PALETTE
from ipvsman.ui.syncpanel import SyncPanel

SIZE = (100, 30)
SEED = 1
TICK = 1.0
POLLS = 40  # enough polls for a sparkline with some history
START = 1_700_000_000.0  # the demo's wall clock at its first poll (UTC)
POLL_SECONDS = 0.008
HOST = "lvs-1"
OUT = Path(__file__).resolve().parent.parent / "screenshots"
DEMO_TOPOLOGY = OUT / "demo.topology"
DEMO_KEEPALIVED = OUT / "demo-keepalived.conf"

# Names as this machine's services database and hosts file might give them, fixed for the pictures.
PORT_NAMES = {(389, "tcp"): "ldap", (636, "tcp"): "ldaps", (80, "tcp"): "http", (443, "tcp"): "https",
              (53, "udp"): "domain", (25, "tcp"): "smtp"}  # fmt: skip
HOSTS = {"10.10.10.100": "ldap", "10.10.10.80": "www", "10.10.10.53": "ns", "2001:db8:10::80": "www6"}

# A fixed look at the director's own health, so the pictures do not change from run to run.
HEALTH = DirectorSample(
    Health(6.0, 1.4, 38.0, (InterfaceRates("eth0", 2.4e6, 9.1e6, 0.0, 0),), vip_interfaces=True),
    held={"10.10.10.100": "eth0", "10.10.10.80": "eth0", "10.10.10.53": "eth0"},
)

# What the bindings picture shows being done: one server drained with `0`.
DRAINED = DestKey(ServiceKey("inet", "tcp", "10.10.10.80", 80), "10.10.20.13", 80)
# What the details picture shows: ldap4, drained by hand, which demo-keepalived.conf gives weight 100.
DRIFTING = DestKey(ServiceKey("inet", "tcp", "10.10.10.100", 389), "10.10.10.204", 389)

# SVG geometry and the colours of the terminal's own foreground and background (a dark terminal).
CELL_WIDTH = 8.43  # the advance of DejaVu Sans Mono at 14 px
CELL_HEIGHT = 17
FONT_SIZE = 14
DEFAULT_FOREGROUND = (208, 208, 208)
DEFAULT_BACKGROUND = (28, 28, 28)


def steady(snapshot: Snapshot) -> Snapshot:
    """The snapshot with a fixed poll duration, and its table read with it: the real ones vary
    from run to run."""
    table = snapshot.table
    if table.read is not None:
        read = dataclasses.replace(table.read, started_at=snapshot.taken_at - POLL_SECONDS, cpu_seconds=POLL_SECONDS,
                                   wall_seconds=POLL_SECONDS)  # fmt: skip
        table = dataclasses.replace(table, read=read)
    return dataclasses.replace(snapshot, poll_seconds=POLL_SECONDS, table=table)


class StepPoller:
    """Stands in for the polling thread: commands queue up and run when `step()` is called."""

    def __init__(self, poller: Poller):
        self.poller = poller
        self.queued: list[Command] = []
        self.paused = False

    def submit(self, command: Command) -> None:
        self.queued.append(command)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def step(self, dashboard: Dashboard) -> None:
        for command in self.queued:
            self.poller.run_command(command)
        self.queued.clear()
        dashboard.drain_results()
        dashboard.apply_snapshot(steady(self.poller.poll_once()))


def _port_name(port: int, protocol: str) -> str:
    try:
        return PORT_NAMES[(port, protocol)]
    except KeyError:
        raise OSError("port/proto not found") from None


def demo_configurations() -> Configurations:
    """screenshots/demo.topology and demo-keepalived.conf, known by their names alone (stable pictures)."""
    return Configurations(
        topology=parse_topology(DEMO_TOPOLOGY.read_text(encoding="utf-8"), DEMO_TOPOLOGY.name),
        keepalived=parse_keepalived(DEMO_KEEPALIVED.read_text(encoding="utf-8"), DEMO_KEEPALIVED.name, "lvs-1"),
    )


def demo_names(configs: Configurations) -> Names:
    names = Names(NameResolver(lookup=None, hosts_path=None, hosts=HOSTS), ports=PortNames(_port_name))
    for config in configs.loaded():
        names.add_configuration(config)
    return names


def demo_dashboard(seed: int = SEED, polls: int = POLLS) -> tuple[Dashboard, StepPoller]:
    """A dashboard fed `polls` snapshots of the demo director, with fixed clocks, health, names and
    configuration files."""
    backend = DemoBackend(seed=seed, tick=TICK)
    ticks = iter(range(10**9))
    poller = Poller(backend, on_snapshot=lambda snapshot: None, clock=lambda: START + next(ticks) * TICK)
    options = argparse.Namespace(
        read_only=False, weight_step=1, audit_log=None, colors=None, no_resolve=False,
        interval=TICK, connections=True, topology=None, keepalived=None,
    )  # fmt: skip
    configs = demo_configurations()
    dashboard = Dashboard(
        options,
        hostname=HOST,
        clock=lambda: START + (polls - 1) * TICK + 0.4,
        names=demo_names(configs),
        configs=configs,
        sync_panel=SyncPanel(None, off_reason=DEMO_MONITOR_OFF),
    )
    stepper = StepPoller(poller)
    dashboard.poller = stepper
    backend.open()
    poller.on_result = lambda result: dashboard.on_result(result)
    for _ in range(polls):
        snapshot = poller.poll_once()
    dashboard.apply_snapshot(steady(snapshot))
    dashboard.apply_director(HEALTH)
    return dashboard, stepper


def screens() -> dict[str, tuple[list[str], list]]:
    """Every view (and the help) rendered at SIZE, by file name: (text rows, attribute runs)."""
    os.environ["TZ"] = "UTC"
    time.tzset()
    dashboard, stepper = demo_dashboard()
    pictures: dict[str, tuple[list[str], list]] = {}
    size = SIZE

    def shot(name: str) -> None:
        pictures[name] = (
            urwid.testing.render_text(dashboard.top, size, focus=True, strip=True),
            urwid.testing.render_runs(dashboard.top, size, focus=True),
        )

    for key, name in (("1", "virtual"), ("2", "bindings"), ("3", "realservers"), ("4", "connections"), ("5", "sync")):
        dashboard.keypress(size, key)
        if name == "bindings":
            shot(name)  # lays the list out at the top, so moving down scrolls as it would on screen
            while dashboard.view.selection() != DRAINED:
                dashboard.keypress(size, "down")
            dashboard.keypress(size, "0")
            stepper.step(dashboard)
        if name == "connections":
            dashboard.keypress(size, "s")
            dashboard.keypress(size, "s")  # by expiry
        shot(name)
    dashboard.keypress(size, "2")
    dashboard.keypress(size, "D")  # drift only
    shot("drift")
    dashboard.keypress(size, "D")
    dashboard.keypress(size, "3")  # the details (`i`) of a drained real server that keepalived would restore
    while dashboard.view.selection() != DRIFTING:
        dashboard.keypress(size, "down")
    dashboard.keypress(size, "i")
    shot("details")
    dashboard.keypress(size, "esc")
    dashboard.keypress(size, "1")
    dashboard.keypress(size, "?")
    shot("help")
    pictures["cluster"] = cluster_picture()
    return pictures


def cluster_picture() -> tuple[list[str], list]:
    """View 6 of the demo cluster (`--demo --nodes 'lvs-[1-3]'`) after a few polls, at SIZE."""
    from ipvsman.cluster.compare import compare_cluster
    from ipvsman.cluster.demo import DemoCluster
    from ipvsman.cluster.state import ClusterSnapshot
    from ipvsman.ui.cluster import ClusterControl

    polls = 3
    ticks = [0]
    clock = lambda: START + ticks[0] * TICK  # noqa: E731
    source = DemoCluster(["lvs-1", "lvs-2", "lvs-3"], seed=SEED, tick=TICK, clock=clock)
    control = ClusterControl(source, source.names)
    options = argparse.Namespace(
        read_only=False, weight_step=1, audit_log=None, colors=None, no_resolve=False,
        interval=TICK, connections=True, topology=None, keepalived=None,
    )  # fmt: skip
    configs = demo_configurations()
    dashboard = Dashboard(options, backend=source, poller=control, hostname=HOST, clock=lambda: clock() + 0.4,
                          names=demo_names(configs), configs=configs, cluster=control,
                          sync_panel=SyncPanel(None, off_reason=DEMO_MONITOR_OFF))  # fmt: skip
    dashboard.apply_director(HEALTH)
    for _ in range(polls):
        ticks[0] += 1
        cluster = source.poll_all()
    # Fixed poll durations, as for the other pictures: the real ones vary from run to run.
    cluster = ClusterSnapshot(tuple(dataclasses.replace(node, snapshot=steady(node.snapshot)) for node in cluster.nodes),
                              cluster.taken_at)  # fmt: skip
    control.apply(cluster, compare_cluster(cluster, control.configuration))
    dashboard.keypress(SIZE, "6")
    return (urwid.testing.render_text(dashboard.top, SIZE, focus=True, strip=True),
            urwid.testing.render_runs(dashboard.top, SIZE, focus=True))  # fmt: skip


def screen_text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _rgb(values: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*values)


def screen_svg(runs: list) -> str:
    """Rendered runs as an SVG picture in the 256-colour palette, one text element per run."""
    resolved = urwid.testing.resolve_runs(runs, PALETTE, colors=256)
    cols, rows = SIZE
    width, height = cols * CELL_WIDTH, rows * CELL_HEIGHT
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.1f} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" '
        f'font-size="{FONT_SIZE}">',
        f'<rect width="100%" height="100%" fill="{_rgb(DEFAULT_BACKGROUND)}"/>',
    ]
    for row_index, row in enumerate(resolved):
        column = 0
        y = row_index * CELL_HEIGHT
        for spec, text in row:
            length = urwid.calc_width(text, 0, len(text))
            values = spec.get_rgb_values()
            foreground = values[:3] if values[0] is not None else DEFAULT_FOREGROUND
            background = values[3:] if values[3] is not None else None
            if spec.standout:
                foreground, background = background or DEFAULT_BACKGROUND, foreground
            x = column * CELL_WIDTH
            if background is not None:
                out.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{length * CELL_WIDTH:.1f}" height="{CELL_HEIGHT}" '
                    f'fill="{_rgb(background)}"/>'
                )
            shown = text.rstrip() if not spec.underline else text
            if shown.strip():
                style = ' font-weight="bold"' if spec.bold else ""
                style += ' text-decoration="underline"' if spec.underline else ""
                shown_width = urwid.calc_width(shown, 0, len(shown)) * CELL_WIDTH
                out.append(
                    f'<text x="{x:.1f}" y="{y + CELL_HEIGHT - 4}" fill="{_rgb(foreground)}"{style} '
                    f'textLength="{shown_width:.1f}" lengthAdjust="spacingAndGlyphs" '
                    f'xml:space="preserve">{escape(shown, quote=False)}</text>'
                )
            column += length
    out.append("</svg>")
    return "\n".join(out) + "\n"


def expected_files() -> dict[str, str]:
    files = {}
    for name, (lines, runs) in screens().items():
        files[f"{name}.txt"] = screen_text(lines)
        files[f"{name}.svg"] = screen_svg(runs)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipvsman.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale screenshots and exit 1 if any")
    parser.add_argument("--out", type=Path, default=OUT, help=f"directory of the screenshots (default {OUT})")
    options = parser.parse_args(argv)
    files = expected_files()
    if options.check:
        stale = [
            name for name, text in files.items()
            if not (options.out / name).is_file() or (options.out / name).read_text(encoding="utf-8") != text
        ]  # fmt: skip
        for name in stale:
            print(f"stale: {options.out / name}")
        if stale:
            print("regenerate with: python -m ipvsman.screenshots", file=sys.stderr)
            return 1
        print(f"{len(files)} screenshots up to date in {options.out}")
        return 0
    options.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (options.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {options.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
