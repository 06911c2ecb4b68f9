"""Every ```python block of docs/extending.md runs as written (each in its own process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "extending.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(encoding="utf-8"), re.M | re.S)
TITLES = ["a new margin head", "a hook", "a dataset"]


def test_the_page_has_one_example_per_kind_of_extension():
    assert len(BLOCKS) == len(TITLES)


@pytest.mark.parametrize("code", BLOCKS, ids=TITLES[: len(BLOCKS)])
def test_a_documented_example_runs(code, tmp_path):
    # a process of its own: the examples register names and set torch's threads and seeds
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
