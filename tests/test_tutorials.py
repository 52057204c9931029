"""Every tutorial script runs to the end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "tutorials").glob("*.py"))


def test_there_are_tutorials():
    assert TUTORIALS


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(script, tmp_path):
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    if script.stem.startswith("02"):  # the schedule the end-to-end check kept is named as such where it is timed
        kept = re.search(r"^kept the (sequential|greedy|ios) schedule", p.stdout, re.M)
        assert kept and f", {kept.group(1)} schedule " in p.stdout.splitlines()[-1], p.stdout[-2000:]
