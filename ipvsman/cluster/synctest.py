"""The cluster's sync test (T) and sync probe (--sync-probe): the VIP holder sends, every other node is asked."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from ipvsman.backend import BackendError
from ipvsman.cluster import syncprobe
from ipvsman.cluster.state import ClusterSource, Command, CommandReply

log = logging.getLogger(__name__)

SYNC_TEST_WAIT = 3.0  # seconds after the send within which a backup must show the connection
RETRY_SECONDS = 0.5
ANSWER_TIMEOUT = 15.0  # a read-table is answered after the node's next table read


def node_outcome(source: ClusterSource, node: str, key: int, sent_at: float, wait: float = SYNC_TEST_WAIT,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> str:  # fmt: skip
    """"lvs-2: Success" once `node`'s table holds connection `key`; "lvs-2: not received after 3 s"
    when it still does not `wait` seconds after `sent_at`; or why the node could not be asked."""
    while True:
        found = _found(source, node, key, ANSWER_TIMEOUT)
        if isinstance(found, str):
            return f"{node}: {found}"
        if found:
            return f"{node}: Success"
        if clock() - sent_at >= wait:
            return f"{node}: not received after {wait:g} s"
        sleep(RETRY_SECONDS)


def _found(source: ClusterSource, node: str, key: int, timeout: float) -> bool | str:
    """Whether the node's next table read holds `key`, or the one-line reason it could not be read."""
    replies = []
    done = threading.Event()
    source.command(node, Command("read-table", {"keys": [key]}), lambda reply: (replies.append(reply), done.set()))
    if not done.wait(timeout):
        return f"no answer in {timeout:g} s"
    reply = replies[0]
    if not reply.ok:
        return reply.message
    return key in reply.data.get("found", ())


def check_nodes(source: ClusterSource, nodes: Sequence[str], key: int, sent_at: float,
                on_done: Callable[[list[str]], None], wait: float = SYNC_TEST_WAIT) -> list[threading.Thread]:  # fmt: skip
    """Ask every node at once, in threads of its own; `on_done` gets one line per node, in order."""
    lines: dict[str, str] = {}
    lock = threading.Lock()

    def ask(node: str) -> None:
        try:
            line = node_outcome(source, node, key, sent_at, wait)
        except BackendError as exc:
            line = f"{node}: {exc}"
        with lock:
            lines[node] = line
            finished = len(lines) == len(nodes)
        if finished:
            on_done([lines[name] for name in nodes])

    threads = [threading.Thread(target=ask, args=(node,), name=f"ipvsman-sync-test-{node}", daemon=True)
               for node in nodes]  # fmt: skip
    for thread in threads:
        thread.start()
    return threads


# -- the sync probe ------------------------------------------------------------------------------------

# (sync master or None, the nodes to look for its probes, why there is no master): from the newest comparison
Roles = Callable[[], tuple[str | None, Sequence[str], str | None]]


class SyncProbe:
    """Every `period` seconds, probe seq from the sync master, looked for by every other reachable node.

    Each round asks the backups to look (probe-watch) and the master to send (sync-probe) at once:
    a backup that already looks when the probe arrives reports it without waiting for a round trip.
    The answers, from the source's threads, go to a ProbeTracker under a lock; summary() is what
    view 6 and the header read.
    """

    def __init__(self, source: ClusterSource, period: float, roles: Roles, clock: Callable[[], float] = time.time,
                 look_for: float = syncprobe.LOOK_FOR, series: int | None = None):  # fmt: skip
        self.source = source
        self.period = period
        self.roles = roles
        self.clock = clock
        self.look_for = look_for  # how long a backup looks once asked
        # One series a dashboard: two dashboards probing the same nodes never count each other's probes.
        self.series = random.getrandbits(32) if series is None else series
        self.timeout = syncprobe.probe_timeout(period, look_for)
        self.tracker = syncprobe.ProbeTracker(period, timeout=self.timeout)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ipvsman-sync-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _run(self) -> None:
        # The first round waits a period: by then the nodes have answered and a master is known.
        while not self._stopped.wait(self.period):
            try:
                self.round()
            except Exception:  # one bad round must not end the probe
                log.exception("sync probe round failed")

    def round(self) -> int | None:
        """Send one probe and ask for it; its seq, or None when there was nobody to send or ask."""
        master, backups, why = self.roles()
        with self._lock:
            if master is None or not backups:
                self.tracker.no_round(why or f"no other reachable node to look for {master}'s probes")
                return None
            seq = self.tracker.start_round(self.clock(), master, backups)
        probe = {"series": self.series, "seq": seq}
        for backup in backups:
            self.source.command(backup, Command("probe-watch", {**probe, "wait": self.look_for}),
                                lambda reply, seq=seq: self._on_watch(seq, reply))  # fmt: skip
        self.source.command(master, Command("sync-probe", {**probe, "timeout": self.timeout}),
                            lambda reply: self._on_sent(seq, reply))  # fmt: skip
        return seq

    def _on_watch(self, seq: int, reply: CommandReply) -> None:
        with self._lock:
            if not reply.ok:
                self.tracker.unknown(seq, reply.node, reply.message)
            elif reply.data.get("found"):
                found_at = reply.data.get("found_at")
                if isinstance(found_at, (int, float)):
                    self.tracker.arrived(seq, reply.node, float(found_at))
                else:
                    self.tracker.unknown(seq, reply.node, f"probe-watch: no time in the answer: {found_at!r}")
            else:
                looked = reply.data.get("looked")
                valid = isinstance(looked, list) and len(looked) == 2 and all(isinstance(t, (int, float)) for t in looked)
                self.tracker.lost(seq, reply.node, tuple(looked) if valid else None)

    def _on_sent(self, seq: int, reply: CommandReply) -> None:
        with self._lock:
            sent_at = reply.data.get("sent_at")
            if reply.ok and isinstance(sent_at, (int, float)):
                self.tracker.sent(seq, float(sent_at))
            else:
                self.tracker.send_failed(seq, reply.message)

    def summary(self) -> syncprobe.ProbeSummary:
        with self._lock:
            return self.tracker.summary(self.clock())
