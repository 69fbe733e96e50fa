"""screenshots/ holds what `python -m ipvsman.screenshots` renders now, and the SVG is well formed."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_screenshots_are_up_to_date():
    run = subprocess.run(
        [sys.executable, "-m", "ipvsman.screenshots", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, f"stale screenshots (run python -m ipvsman.screenshots):\n{run.stdout}{run.stderr}"


def test_check_reports_a_stale_file(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "ipvsman.screenshots", "--check", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 1
    assert f"stale: {tmp_path / 'virtual.txt'}" in run.stdout


def test_svg_files_parse_and_match_their_text():
    for svg in sorted((ROOT / "screenshots").glob("*.svg")):
        root = ElementTree.parse(svg).getroot()
        assert root.tag.endswith("svg")
        texts = "".join(element.text or "" for element in root.iter() if element.tag.endswith("text"))
        first_line = svg.with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0]
        assert first_line.split()[0] in texts
