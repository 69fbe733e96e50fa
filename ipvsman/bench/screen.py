"""Benchmark 4, screen: frame times of the real dashboard widgets at 10,000 services and 100,000 connections.

Runs anywhere (no kernel): snapshots come from the demo director (DemoBackend.scaled) through
the real Poller, and a headless Dashboard (ipvsman.ui.app) renders urwid canvases at 200x60,
as MainLoop would after each event. Measured per view: the frame after switching to it, after a
new snapshot, and after navigation keys. Then minutes of use with keys at random moments and a
snapshot every second, garbage collection included (ipvsman.bench.keys); then the same keys while
the polling thread is busy in a slow, CPU-bound backend (what a large kernel poll is), to show
that no key waits for a poll.
"""

from __future__ import annotations

import collections
import queue
import statistics
import threading
import time

from ipvsman.backend import Backend
from ipvsman.bench import Figure, Growth, Report, at_most
from ipvsman.bench.memory import headless_options
from ipvsman.demo import DemoBackend
from ipvsman.model import RawState
from ipvsman.poller import Poller
from ipvsman.ui.app import Dashboard
from ipvsman.ui.audit import AuditLog
from ipvsman.ui.keymap import KEYMAP

SIZE = (200, 60)
FRAME_TARGET_MS = 30.0
NAVIGATION = ("down", "down", "page down", "down", "up", "page up", "end", "home")


class Scene:
    """A demo director of a given size, two snapshots of it a second apart, and a dashboard showing them."""

    def __init__(self, services: int, dests: int, connections: int):
        self.backend = DemoBackend.scaled(services, dests, connections, tick=1.0)
        self.backend.open()
        poller = Poller(self.backend, on_snapshot=lambda snapshot: None)
        self.snapshots = [poller.poll_once(), poller.poll_once()]
        self.services = len(self.snapshots[0].services)
        self.dests = sum(len(service.dests) for service in self.snapshots[0].services)
        self.connections = len(self.snapshots[0].connections)
        self.dashboard = Dashboard(headless_options(), backend=self.backend, audit=AuditLog(None))
        self.dashboard.collector.start()  # as ipvsman.ui.app.run does: no automatic collection
        self.dashboard.apply_snapshot(self.snapshots[0])
        self.frame()
        self._next = 1

    def close(self) -> None:
        self.dashboard.collector.stop()

    def full_collection(self) -> float:
        """Milliseconds of a full garbage collection with this scene alive, everything thawed first
        (ipvsman.collector runs one only when the memory in use has grown)."""
        milliseconds = self.dashboard.collector.collect_all() * 1000
        self.dashboard.collector.collect_young()  # frozen again, as the next poll would leave it
        return milliseconds

    def young_collection(self) -> float:
        """Milliseconds of the collection a poll starts with: what the last snapshot's frame made."""
        self.new_snapshot()
        return self.dashboard.collector.collect_young() * 1000

    def frame(self) -> float:
        """Milliseconds to render the whole screen."""
        started = time.perf_counter()
        self.dashboard.top.render(SIZE, focus=True)
        return (time.perf_counter() - started) * 1000

    def press(self, key: str) -> float:
        """Milliseconds from a key to its redrawn frame."""
        started = time.perf_counter()
        self.dashboard.top.keypress(SIZE, key)
        self.dashboard.top.render(SIZE, focus=True)
        return (time.perf_counter() - started) * 1000

    def new_snapshot(self) -> float:
        """Milliseconds from a poll's snapshot arriving to its frame."""
        snapshot = self.snapshots[self._next]
        self._next = 1 - self._next
        started = time.perf_counter()
        self.dashboard.apply_snapshot(snapshot)
        self.dashboard.top.render(SIZE, focus=True)
        return (time.perf_counter() - started) * 1000

    def measure_view(self, name: str, snapshots: int = 3) -> dict:
        key = KEYMAP.keys_for(f"view.{name}")[0]
        switch = self.press(key)
        applied = [self.new_snapshot() for _ in range(snapshots)]
        keys = [self.press(key) for key in NAVIGATION]
        self.press("home")
        return {"switch": switch, "snapshot": max(applied), "key_median": statistics.median(keys), "key_max": max(keys)}


def view_names(dashboard: Dashboard) -> list[str]:
    return [view.name for view in dashboard.views]


# -- keys while a poll is in flight --------------------------------------------------------------


class BusyBackend(Backend):
    """Hands out prepared states, after `busy` seconds of Python work that holds the GIL as a poll does.

    The work is decoding IPVS real-server messages with the fast decoder, the bulk of a kernel
    poll; the poller then aggregates the connection table, also in its own thread.
    """

    name = "kernel"

    def __init__(self, states: list[RawState], busy: float):
        self.states = states
        self.busy = busy
        self.in_flight = threading.Event()
        self.polls = 0
        self._messages = _sample_messages()

    def open(self) -> None:
        pass

    def poll(self, connections: bool = True) -> RawState:
        from ipvsman.kernel.fastdecode import FastDecoder

        self.in_flight.set()
        try:
            deadline = time.perf_counter() + self.busy
            skipped = collections.Counter()
            while time.perf_counter() < deadline:
                for message in self._messages:
                    FastDecoder.dest(message, "inet", skipped)
            state = self.states[self.polls % len(self.states)]
            self.polls += 1
            return state
        finally:
            self.in_flight.clear()

    def set_weight(self, dest, weight) -> None:
        pass


def _sample_messages():
    """Ten real-server messages as the kernel sends them (encoded by pyroute2), parsed as RawMessages."""
    import socket

    from ipvsman.kernel import netlink as nl
    from ipvsman.kernel.fastdecode import RawMessage

    messages = []
    for number in range(10):
        msg = nl.ipvs_message()
        msg["cmd"] = nl.CMD_NEW_DEST
        msg["version"] = nl.GENL_VERSION
        stats = {"attrs": [(f"IPVS_STATS_ATTR_{name}", number) for name in
                           ("CONNS", "INPKTS", "OUTPKTS", "INBYTES", "OUTBYTES", "CPS", "INPPS", "OUTPPS", "INBPS",
                            "OUTBPS")]}  # fmt: skip
        msg["attrs"] = [("IPVS_CMD_ATTR_DEST", {"attrs": [
            ("IPVS_DEST_ATTR_ADDR", socket.inet_aton(f"10.0.0.{number + 1}") + bytes(12)),
            ("IPVS_DEST_ATTR_PORT", 80), ("IPVS_DEST_ATTR_FWD_METHOD", 0), ("IPVS_DEST_ATTR_WEIGHT", 1),
            ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET), ("IPVS_DEST_ATTR_STATS64", stats)]})]  # fmt: skip
        msg.encode()
        raw = RawMessage(bytes(msg.data))
        raw.decode()
        messages.append(raw)
    return messages


def keys_during_polls(scene: Scene, busy: float, presses: int) -> dict:
    """Key-to-frame times with the poller idle, then while its polls are in flight."""
    idle = [scene.press(key) for key in NAVIGATION * max(1, presses // len(NAVIGATION))]
    backend = BusyBackend([snapshot.state for snapshot in scene.snapshots], busy)
    arrived: queue.Queue = queue.Queue()
    poller = Poller(backend, on_snapshot=arrived.put, interval=0.05)
    poller.start()
    in_flight, between = [], []
    applied = 0
    deadline = time.monotonic() + max(60.0, 20 * busy)
    try:
        index = 0
        while len(in_flight) < presses and time.monotonic() < deadline:
            # The loop draws snapshots as they come (MainLoop.call_from_thread), between keys.
            while not arrived.empty():
                scene.dashboard.apply_snapshot(arrived.get())
                applied += 1
            was_busy = backend.in_flight.is_set()
            latency = scene.press(NAVIGATION[index % len(NAVIGATION)])
            index += 1
            (in_flight if was_busy and backend.in_flight.is_set() else between).append(latency)
            time.sleep(0.02)  # a fast typist: 50 keys a second
    finally:
        poller.stop(timeout=30)
    return {
        "idle_median": statistics.median(idle),
        "idle_max": max(idle),
        "busy_median": statistics.median(in_flight) if in_flight else None,
        "busy_max": max(in_flight) if in_flight else None,
        "busy_presses": len(in_flight),
        "polls": backend.polls,
        "applied": applied,
        "busy_seconds": busy,
    }


# -- the benchmark -----------------------------------------------------------------------------


def run(headline: tuple[int, int, int], service_sizes: list[int], connection_sizes: list[int], busy: float,
        presses: int, log=print, keys_seconds: float = 0.0) -> Report:  # fmt: skip
    report = Report()
    services, dests, connections = headline
    started = time.perf_counter()
    scene = Scene(services, dests, connections)
    log(f"screen: demo director of {scene.services} services, {scene.dests} real servers, {scene.connections} "
        f"connections built in {time.perf_counter() - started:.1f} s")  # fmt: skip
    scale = f"{scene.services:,} services, {scene.connections:,} connections"
    for name in view_names(scene.dashboard):
        figures = scene.measure_view(name)
        log(f"screen: {name}: {figures}")
        report.figures.append(Figure("screen", f"{name} view: frame after a key (median of {len(NAVIGATION)})",
                                     figures["key_median"], "ms", target=f"< {FRAME_TARGET_MS:g} ms",
                                     met=figures["key_median"] < FRAME_TARGET_MS, note=f"max {figures['key_max']:.1f} ms"))  # fmt: skip
        report.figures.append(Figure("screen", f"{name} view: frame after switching to it", figures["switch"], "ms",
                                     target=f"< {FRAME_TARGET_MS:g} ms", met=figures["switch"] < FRAME_TARGET_MS))  # fmt: skip
        report.figures.append(Figure("screen", f"{name} view: frame after a new snapshot", figures["snapshot"], "ms",
                                     target=f"< {FRAME_TARGET_MS:g} ms", met=figures["snapshot"] < FRAME_TARGET_MS))  # fmt: skip
    if keys_seconds > 0:
        report.figures += keys_in_use(scene, keys_seconds, log)
    young = statistics.median(scene.young_collection() for _ in range(3))
    report.figures.append(
        Figure("screen", f"the young garbage collection before each poll (ipvsman.collector), {scale} (median of 3)",
               young, "ms", note="in the polling thread; the snapshots are frozen, not walked")  # fmt: skip
    )
    keys = keys_during_polls(scene, busy, presses)
    log(f"screen: keys during polls: {keys}")
    report.figures.append(
        Figure("screen", f"key to frame while a poll is in flight ({keys['busy_presses']} keys, "
               f"{keys['busy_seconds']:g} s CPU-bound polls)", keys["busy_max"], "ms",
               target=f"< {FRAME_TARGET_MS:g} ms, no wait for the poll",
               met=at_most(keys["busy_max"], FRAME_TARGET_MS) if keys["busy_max"] is not None else None,
               note=f"max; median {_ms(keys['busy_median'])}, idle median {_ms(keys['idle_median'])}")  # fmt: skip
    )
    collection = scene.full_collection()
    growth_share = scene.dashboard.collector.growth
    log(f"screen: garbage collections: young {young:.1f} ms, full {collection:.0f} ms")
    report.figures.append(
        Figure("screen", f"a scheduled full garbage collection (ipvsman.collector), {scale}", collection, "ms",
               note=f"only once the memory blocks in use grew by {growth_share:.0%}; between frames, "
                    "not within 1 s of a key")  # fmt: skip
    )
    report.notes.append(f"screen: views measured at {scale}, {SIZE[0]}x{SIZE[1]}, urwid canvases rendered "
                        "headless (no terminal output); frame = event handling + render")  # fmt: skip
    scene.close()
    del scene
    report.growth += growth(dests, service_sizes, connection_sizes, log)
    return report


def keys_in_use(scene: Scene, seconds: float, log=print) -> list[Figure]:
    """Figures of `seconds` of use (ipvsman.bench.keys): key waits with garbage collection, memory, CPU."""
    from ipvsman.bench import keys as keys_module

    use = keys_module.run(scene, seconds, log=log)
    span = f"{use['seconds'] / 60:.1f} min" if use["seconds"] >= 60 else f"{use['seconds']:.0f} s"
    target = keys_module.TARGET_MS
    return [
        Figure("screen", f"key to frame over {span} of use, garbage collection included ({use['keys']} keys at "
               f"random, {use['polls']} snapshots)", use["max"], "ms", target=f"< {target:g} ms",
               met=at_most(use["max"], target), note=f"max; p99 {_ms(use['p99'])}, median {_ms(use['median'])}, "
               f"{use['over_target']} over {target:g} ms; load average {use['load']:.1f} at the end"),
        Figure("screen", "keys: the longest part of a key's wait spent in garbage collection "
               f"({use['keys_behind_gc']} keys waited for one)", use["gc_in_wait_max"], "ms",
               target=f"< {target:g} ms", met=at_most(use["gc_in_wait_max"], target)),
        Figure("screen", f"keys: garbage collections over that use, the longest ({use['collections']} of them)",
               use["longest_collection"], "ms", note=f"{use['longest_collection_cpu']:.1f} ms of CPU; "
               f"{use['collection_ms']:.0f} ms in all; counting memory blocks: {use['longest_check']:.1f} ms; "
               f"{use['leaked']:,} frozen objects were cyclic garbage at the end"),
        Figure("screen", "keys: CPU of the process over that use (polling thread + loop), share of one CPU",
               use["cpu_share"] * 100, "%", note=f"of which freeing {use['released']} old snapshots outside the "
               f"loop {use['release_cpu']:.1f} s, a slice of it {use['release_slice_max']:.1f} ms at most"),
        Figure("screen", "keys: memory (RSS) growth over the second half of that use", use["rss_growth"], "MB",
               note=f"RSS {use['rss_first']:.0f} MB before, {use['rss_last']:.0f} MB at the end, "
               f"{use['frozen_last']:,} objects frozen; Python's memory blocks in use {_millions(use['blocks_first'])} "
               f"before, {_millions(use['blocks_half'])} at half time, {_millions(use['blocks_last'])} at the end"),
    ]  # fmt: skip


def _millions(count: int | None) -> str:
    return "-" if count is None else f"{count / 1e6:.2f} M"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def growth_row(scene: Scene, views: tuple[str, ...]) -> dict[str, float]:
    """The frame after a new snapshot in each of `views`, and the slowest key of them all."""
    row = {}
    for name in views:
        figures = scene.measure_view(name)
        row[name] = figures["snapshot"]
        row["slowest key"] = max(row.get("slowest key", 0.0), figures["key_max"])
    return row


def growth(dests: int, service_sizes: list[int], connection_sizes: list[int], log=print) -> list[Growth]:
    by_services = Growth("screen", f"frame after a new snapshot, by services ({dests} real servers each, "
                         f"{connection_sizes[0]:,} connections)", "services", "ms",
                         ["virtual", "bindings", "realservers", "slowest key"])  # fmt: skip
    for size in service_sizes:
        scene = Scene(size, dests, connection_sizes[0])
        row = growth_row(scene, ("virtual", "bindings", "realservers"))
        log(f"screen growth: {scene.services} services: {row}")
        by_services.add(scene.services, **row)
        scene.close()
        del scene  # freed before the next, larger scene is built
    by_connections = Growth("screen", f"frame after a new snapshot, by connections ({service_sizes[0]} services)",
                            "connections", "ms", ["connections", "virtual", "slowest key"])  # fmt: skip
    for size in connection_sizes:
        scene = Scene(service_sizes[0], dests, size)
        row = growth_row(scene, ("connections", "virtual"))
        log(f"screen growth: {scene.connections} connections: {row}")
        by_connections.add(scene.connections, **row)
        scene.close()
        del scene  # freed before the next, larger scene is built
    return [by_services, by_connections]
