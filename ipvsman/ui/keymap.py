"""The one key table of the dashboard: key handling, the help overlay and README's key list come from it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple


class Binding(NamedTuple):
    """One key bound to a named command in a context, with the help text shown for it."""

    key: str  # as urwid names it ("page up", "shift tab"), or a mouse pseudo-key ("wheel up")
    command: str
    context: str
    help: str


# Where a binding applies, in the order the help lists them, with their titles.
CONTEXTS = {
    "global": "Everywhere",
    "servers": "Virtual servers, Bindings, Real servers (views 1-3)",
    "connections": "Connections (view 4)",
    "filter": "Typing a connection filter",
    "choose": "Choosing a real server to add (a)",
    "confirm": "Answering y/n (x, R, H)",
    "details": "Reading details (i)",
    "cluster": "Cluster (view 6)",
    "help": "This help",
}

# fmt: off
BINDINGS: tuple[Binding, ...] = (
    Binding("1", "view.virtual", "global", "Virtual servers: each VIP and its services"),
    Binding("2", "view.bindings", "global", "Bindings: virtual to real servers, weights"),
    Binding("3", "view.realservers", "global", "Real servers and the services they serve"),
    Binding("4", "view.connections", "global", "Connections: the connection table"),
    Binding("5", "view.sync", "global", "Sync and kernel: daemons, timeouts, poll timing"),
    Binding("6", "view.cluster", "global", "Cluster (--nodes): every director, drift and sync between them"),
    Binding("N", "node.next", "global", "Cluster: show the next node in views 1-5"),
    Binding("A", "node.all", "global", "Cluster: changes go to every node (asks y/n) or the shown one"),
    Binding("tab", "view.next", "global", "Next view"),
    Binding("shift tab", "view.previous", "global", "Previous view"),
    Binding("up", "nav.up", "global", "Move up"),
    Binding("k", "nav.up", "global", "Move up"),
    Binding("wheel up", "nav.up", "global", "Move up"),
    Binding("down", "nav.down", "global", "Move down"),
    Binding("j", "nav.down", "global", "Move down"),
    Binding("wheel down", "nav.down", "global", "Move down"),
    Binding("page up", "nav.page_up", "global", "One page up"),
    Binding("page down", "nav.page_down", "global", "One page down"),
    Binding("home", "nav.top", "global", "First line"),
    Binding("end", "nav.bottom", "global", "Last line"),
    Binding("p", "poll.pause", "global", "Pause or resume polling"),
    Binding("n", "names.toggle", "global", "Show names or numeric addresses"),
    Binding("C", "table.read", "global", "Read the whole connection table now (asks y/n when costly)"),
    Binding("R", "sync.resync", "global", "Resync: send connections to the backups (asks y/n)"),
    Binding("T", "sync.test", "global", "Sync test: check that the backups receive a connection"),
    Binding("H", "ipvsmand.reload", "global", "Reload ipvsmand: SIGHUP to it (asks y/n)"),
    Binding("?", "help.toggle", "global", "Show or hide this help"),
    Binding("esc", "app.cancel", "global", "Close an overlay, cancel a resync, clear the filter"),
    Binding("q", "app.quit", "global", "Quit"),
    Binding("+", "weight.up", "servers", "Raise the selected real server's weight by --weight-step"),
    Binding("-", "weight.down", "servers", "Lower the selected real server's weight by --weight-step"),
    Binding("0", "weight.drain", "servers", "Drain the selected real server (weight 0); again restores it"),
    Binding("enter", "connections.of_selection", "servers", "Connections of the selected VIP, service or server"),
    Binding("i", "details.show", "servers", "Details of the selected row: drift, configuration, VIP owner"),
    Binding("D", "drift.toggle", "servers", "Drift only: what differs from keepalived.conf (or the topology)"),
    Binding("a", "servers.add", "servers", "Add a real server the topology lists to the selected service"),
    Binding("x", "servers.remove", "servers", "Remove the selected real server (asks y/n first)"),
    Binding("/", "connections.filter", "connections", "Filter: addresses, ports, states (c= v= r= state=)"),
    Binding("s", "connections.sort_next", "connections", "Sort by the next column"),
    Binding("S", "connections.sort_previous", "connections", "Sort by the previous column"),
    Binding("r", "connections.sort_reverse", "connections", "Reverse the sort order"),
    Binding("enter", "node.select", "cluster", "Show the selected node in views 1-5"),
    Binding("enter", "filter.apply", "filter", "Apply the filter"),
    Binding("esc", "filter.cancel", "filter", "Leave the filter as it was"),
    Binding("enter", "choose.apply", "choose", "Add the chosen real server"),
    Binding("esc", "choose.cancel", "choose", "Add nothing"),
    Binding("q", "choose.cancel", "choose", "Add nothing"),
    Binding("y", "confirm.yes", "confirm", "Yes: do it"),
    Binding("n", "confirm.no", "confirm", "No: leave things as they are"),
    Binding("esc", "confirm.no", "confirm", "No: leave things as they are"),
    Binding("q", "confirm.no", "confirm", "No: leave things as they are"),
    Binding("i", "details.close", "details", "Close the details"),
    Binding("esc", "details.close", "details", "Close the details"),
    Binding("q", "details.close", "details", "Close the details"),
    Binding("esc", "help.close", "help", "Close the help"),
    Binding("q", "help.close", "help", "Close the help"),
    Binding("?", "help.close", "help", "Close the help"),
)
# fmt: on

# How keys are written for people (help overlay, README); other keys are written as they are.
KEY_LABELS = {
    "up": "Up",
    "down": "Down",
    "page up": "PgUp",
    "page down": "PgDn",
    "home": "Home",
    "end": "End",
    "tab": "Tab",
    "shift tab": "Shift-Tab",
    "enter": "Enter",
    "esc": "Esc",
    "wheel up": "wheel up",
    "wheel down": "wheel down",
}


def key_label(key: str) -> str:
    return KEY_LABELS.get(key, key)


class Keymap:
    """Resolves a key to a command: the innermost context first, then the ones around it."""

    def __init__(self, bindings: Iterable[Binding] = BINDINGS):
        self.bindings = tuple(bindings)
        self._table: dict[tuple[str, str], str] = {}
        for binding in self.bindings:
            if binding.context not in CONTEXTS:
                raise ValueError(f"unknown keymap context {binding.context!r} for {binding.key!r}")
            slot = (binding.context, binding.key)
            if self._table.get(slot, binding.command) != binding.command:
                raise ValueError(f"key {binding.key!r} bound twice in context {binding.context!r}")
            self._table[slot] = binding.command

    def lookup(self, key: str, contexts: Iterable[str]) -> str | None:
        for context in contexts:
            command = self._table.get((context, key))
            if command is not None:
                return command
        return None

    def commands(self) -> set[str]:
        return {binding.command for binding in self.bindings}

    def keys_for(self, command: str) -> list[str]:
        return [binding.key for binding in self.bindings if binding.command == command]

    def grouped(self) -> Iterator[tuple[str, list[tuple[list[str], str]]]]:
        """Per context (in CONTEXTS order): the keys of each command with its help, in table order."""
        for context, title in CONTEXTS.items():
            entries: dict[str, tuple[list[str], str]] = {}
            for binding in self.bindings:
                if binding.context != context:
                    continue
                keys, _ = entries.setdefault(binding.command, ([], binding.help))
                keys.append(binding.key)
            if entries:
                yield title, list(entries.values())


KEYMAP = Keymap()


def rst_key_list(keymap: Keymap = KEYMAP) -> str:
    """The key list as reStructuredText: one simple table per context."""
    blocks = []
    for title, entries in keymap.grouped():
        rows = [(" ".join(f"``{key_label(key)}``" for key in keys), text) for keys, text in entries]
        left = max(len("Keys"), *(len(keys) for keys, _ in rows))
        right = max(len("Does"), *(len(text) for _, text in rows))
        rule = f"{'=' * left}  {'=' * right}"
        lines = [f"**{title}**", "", rule, f"{'Keys'.ljust(left)}  Does", rule]
        lines += [f"{keys.ljust(left)}  {text}".rstrip() for keys, text in rows]
        lines.append(rule)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
