"""The cluster's sync test: after the VIP holder sent its marked test connection, ask every other node for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ipvsman.backend import BackendError
from ipvsman.cluster.state import ClusterSource, Command

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
