"""What the dashboard knows of each director of a cluster: immutable values, no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ipvsman.model import Snapshot

AGENT_PROTOCOL = 1  # bumped when the agent's lines change incompatibly: a mismatch is one line for that node


@dataclass(frozen=True)
class TableKeys:
    """A node's connection table reduced to what a comparison between nodes needs.

    keys: one integer per connection entry that is not a persistence template, from
    `connection_key` of (protocol, client, client port, virtual, virtual port, real server,
    real server port), so the same connection has the same key on every node.
    """

    keys: frozenset[int]
    complete: bool  # the whole table; else a prefix of it
    fraction: float  # of the table's entries that `keys` covers (1.0 when complete)
    read_at: float  # time.time() of the read
    by_service: Mapping[str, frozenset[int]] = field(default_factory=dict)  # "TCP 10.0.0.1:80" -> keys


@dataclass(frozen=True)
class NodeState:
    """One director as the dashboard last heard from it."""

    name: str  # the node's name in the nodeset
    snapshot: Snapshot | None = None  # the newest snapshot received; None before the first
    reachable: bool = False
    since: float | None = None  # time.time() when `reachable` last changed
    error: str | None = None  # why it is unreachable, or the last refusal: one line
    received_at: float | None = None  # time.time() when the newest snapshot arrived
    agent_version: str | None = None  # the agent's ipvsman version
    kernel: str | None = None  # the node's kernel release (uname -r)
    read_only: bool = False  # the agent refuses every command
    table: TableKeys | None = None  # the newest table keys received, for the table comparison
    addresses: tuple[tuple[str, str], ...] | None = None  # (address, interface) configured on the node; None: unknown


@dataclass(frozen=True)
class ClusterSnapshot:
    """Every node, in the nodeset's order; handed to the UI loop as one value."""

    nodes: tuple[NodeState, ...]
    taken_at: float

    def node(self, name: str) -> NodeState | None:
        return next((node for node in self.nodes if node.name == name), None)


@dataclass(frozen=True)
class Command:
    """A change or an action asked of one node's agent.

    kind: "set-weight" (service, address, port, weight), "add-dest" (service, address, port,
    forward, weight), "remove-dest" (service, address, port), "resync" (service or none),
    "sync-test" (service), "read-table" (no arguments), "sync-probe" (series, seq, timeout: the
    sync master sends probe seq), "probe-watch" (series, seq, wait: a backup looks for it in its
    table). `service` is str(ServiceKey).
    """

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandReply:
    node: str
    command: Command
    ok: bool
    message: str  # one line: what was done, or why it was refused
    data: Mapping[str, Any] = field(default_factory=dict)  # what the command found: the sync test's connection key


class ClusterSource(Protocol):
    """Where a cluster's snapshots come from: agents over ClusterShell, or the demo cluster."""

    def start(self, on_update: Callable[[ClusterSnapshot], None]) -> None:
        """Begin watching; `on_update` is called from a worker thread with each new ClusterSnapshot."""

    def stop(self) -> None:
        """Stop watching and end every node's session; returns within a few seconds."""

    def command(self, node: str, command: Command, on_reply: Callable[[CommandReply], None]) -> None:
        """Send `command` to `node`; `on_reply` is called once from a worker thread, with a refusal
        when the node is unreachable or does not answer in time."""


def connection_key(protocol: str, client: str, client_port: int, virtual: str, virtual_port: int,
                   dest: str, dest_port: int) -> int:
    """A 64-bit key naming one connection the same way on every node (Python's hash() is salted
    per process, so it cannot be compared between an agent and the dashboard)."""
    text = f"{protocol} {client} {client_port} {virtual} {virtual_port} {dest} {dest_port}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")
