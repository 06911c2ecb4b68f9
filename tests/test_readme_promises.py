"""What the README tells a new user holds: every loss is in its table, and the table step says
where Market-1501 comes from and where it goes."""

from __future__ import annotations

import re
from pathlib import Path

from reid_ir.losses import LOSSES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_registered_loss_is_in_the_readme_table():
    table = [
        line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("|")
    ]
    shown = set(re.findall(r"`([a-z_]+)`", "\n".join(table[:12])))
    missing = [n for n in LOSSES.names() if n not in shown and not n.startswith("unpg_")]
    assert missing == [], f"losses missing from the README's table: {missing}"


def test_the_table_step_says_where_market1501_comes_from_and_goes():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Reproducing the Market-1501 table") :]
    section = section[: section.index("\n## ", 4)]
    assert "../shared" not in section, "a folder only this repository's CI machine has"
    assert "Market-1501-v15.09.15.zip" in section and "datasets/market1501/" in section
    run_sh = (README.parent / "docs/results/market1501_cpu/run.sh").read_text(encoding="utf-8")
    assert "datasets/market1501/Market-1501-v15.09.15" in run_sh  # where the README unpacks it
