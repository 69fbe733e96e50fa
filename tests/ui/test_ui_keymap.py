"""The one key table: every command registered, every registered command bound, README in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ipvsman.ui.help import help_lines
from ipvsman.ui.keymap import BINDINGS, CONTEXTS, KEYMAP, Binding, Keymap, key_label, rst_key_list

README = Path(__file__).resolve().parents[2] / "README.rst"


def test_every_bound_command_is_registered_and_every_registered_command_is_bound(dashboard):
    assert KEYMAP.commands() == set(dashboard.commands)


def test_contexts_and_help_texts():
    for binding in BINDINGS:
        assert binding.context in CONTEXTS
        assert binding.help and binding.help[0].isupper(), binding


def test_a_key_bound_twice_in_one_context_is_refused():
    with pytest.raises(ValueError, match="bound twice"):
        Keymap([Binding("x", "a.one", "global", "One"), Binding("x", "a.two", "global", "Two")])
    with pytest.raises(ValueError, match="unknown keymap context"):
        Keymap([Binding("x", "a.one", "nowhere", "One")])


def test_lookup_prefers_the_inner_context():
    assert KEYMAP.lookup("q", ["help", "global"]) == "help.close"
    assert KEYMAP.lookup("q", ["servers", "global"]) == "app.quit"
    assert KEYMAP.lookup("+", ["connections", "global"]) is None


def test_help_overlay_lists_every_binding():
    text = "\n".join(widget.render((100,)).text[0].decode() for widget in help_lines())
    for binding in BINDINGS:
        assert key_label(binding.key) in text
        assert binding.help in text


def test_rst_key_list_is_a_simple_table_per_context():
    rst = rst_key_list()
    for title in CONTEXTS.values():
        assert f"**{title}**" in rst
    for binding in BINDINGS:
        assert f"``{key_label(binding.key)}``" in rst
    # Simple tables: the rules of each table are equally long and frame every row.
    for table in re.findall(r"(=+  =+)\n.*?\n\1\n(.*?)\n\1", rst, flags=re.S):
        rule, rows = table
        width = len(rule.split("  ")[0])
        for row in rows.splitlines():
            assert row[width : width + 2] == "  ", row


def test_readme_key_list_matches_the_table():
    if not README.exists() or ".. keys-start" not in README.read_text(encoding="utf-8"):
        pytest.skip("README.rst has no '.. keys-start' / '.. keys-end' block yet: paste rst_key_list() there")
    text = README.read_text(encoding="utf-8")
    block = text.split(".. keys-start", 1)[1].split(".. keys-end", 1)[0]
    assert block.strip() == rst_key_list().strip(), (
        "README.rst's key list differs from ipvsman/ui/keymap.py: regenerate it with "
        "python -c 'from ipvsman.ui.keymap import rst_key_list; print(rst_key_list())'"
    )
