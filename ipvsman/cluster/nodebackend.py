"""A Backend whose changes go to one node of a cluster: weights and real servers through its agent."""

from __future__ import annotations

import threading

from ipvsman.backend import Backend, BackendError
from ipvsman.cluster.state import ClusterSource, Command, CommandReply
from ipvsman.model import DestKey, RawState, ServiceKey

REPLY_TIMEOUT = 15.0  # seconds a node has to answer a change before it is reported as unanswered


class NodeBackend(Backend):
    """Writes go to `node` through `source.command` and wait for its reply, so that the dashboard's
    change flow (ipvsman.ui.changes, the audit log) works per node unchanged. Reads come from the
    cluster's own snapshots, never from here. Call the writes from a worker thread: they block."""

    name = "node"

    def __init__(self, source: ClusterSource, node: str, timeout: float = REPLY_TIMEOUT):
        self.source = source
        self.node = node
        self.timeout = timeout

    def open(self) -> None:
        pass

    def poll(self, connections: bool = True) -> RawState:
        raise BackendError(f"{self.node} is polled by its agent, not through this backend")

    def run(self, command: Command) -> str:
        """Send `command` and wait for the reply: its message when done; BackendError with the refusal."""
        answered = threading.Event()
        replies: list[CommandReply] = []

        def on_reply(reply: CommandReply) -> None:
            replies.append(reply)
            answered.set()

        self.source.command(self.node, command, on_reply)
        if not answered.wait(self.timeout):
            raise BackendError(f"{self.node}: no answer in {self.timeout:g} s")
        reply = replies[0]
        if not reply.ok:
            message = reply.message
            raise BackendError(message if message.startswith(f"{self.node}:") else f"{self.node}: {message}")
        return reply.message

    def set_weight(self, dest: DestKey, weight: int) -> None:
        self.run(Command("set-weight", {"service": str(dest.service), "address": dest.address, "port": dest.port,
                                        "weight": weight}))  # fmt: skip

    def add_dest(self, service: ServiceKey, address: str, port: int, forward: str, weight: int) -> None:
        self.run(Command("add-dest", {"service": str(service), "address": address, "port": port, "forward": forward,
                                      "weight": weight}))  # fmt: skip

    def remove_dest(self, dest: DestKey) -> None:
        self.run(Command("remove-dest", {"service": str(dest.service), "address": dest.address, "port": dest.port}))
